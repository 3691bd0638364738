"""Does averaging SFT models trained from different seeds grade better than one of them?

Members are `taosr1 pipeline` output folders of one split that differ only in `sft.seed` (the
LoRA init and the batch order). Per split seed, two combinations of the members' STAGE models:

- `prob`: the mean of their P(label) per pair (costs one forward pass per member when served);
- `soup`: one model whose weights are the members' mean, weight by weight (costs nothing more
  when served, and exports to an adapter like any trained model).

Each member and each combination gets its CumPT beta on the split's calibration slice (never a
test query), as the pipeline fits it, and grades the split's test queries. The graded files go to
OUT/eval/<name>.parquet (+ _argmax), with the split copied beside them, so bench/quality.py scores
them against the baselines of the same split:

    python bench/seed_ensemble.py --member runs/lc_s{seed}_full --member runs/ens_s{seed}_k1 \
        --member runs/ens_s{seed}_k2 --out runs/ensemble_s{seed}
    python bench/quality.py --baselines cosine --pipeline e=runs/ensemble_s{seed} --paired cosine:e/soup
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from taosr1.core.cumpt import grade_rows  # noqa: E402
from taosr1.training.calibrate import slice_beta  # noqa: E402
from taosr1.training.common import serving_setup  # noqa: E402
from taosr1.training.evaluate import evaluate_scoring  # noqa: E402

KEYS = ["query_id", "product_id"]


def scored(model: Path, frame: pd.DataFrame, gold: str, cache: Path) -> pd.DataFrame:
    """P(label) of every pair of `frame` under `model`, sorted by the keys (cached in `cache`)."""
    if not cache.is_file():
        _, g = evaluate_scoring(str(model), frame, gold_col=gold, beta=0.5)
        if len(g) != len(frame):
            sys.exit(f"{model}: graded {len(g)} of {len(frame)} pairs of {cache.stem}; every pair must grade")
        g.to_parquet(cache, index=False)
    return pd.read_parquet(cache).sort_values(KEYS).reset_index(drop=True)


def mean_probs(frames: list[pd.DataFrame], cols: list[str]) -> pd.DataFrame:
    return frames[0].assign(**{c: np.mean([f[c].to_numpy() for f in frames], axis=0) for c in cols})


def soup(models: list[Path], out: Path) -> Path:
    """A model folder whose weights are the mean of `models`' (same architecture, same base)."""
    from safetensors.torch import load_file, save_file

    if (out / "model.safetensors").is_file():
        return out
    shutil.copytree(models[0], out, dirs_exist_ok=True)
    (out / "taosr1_calibration.json").unlink(missing_ok=True)
    ws = [load_file(str(m / "model.safetensors")) for m in models]
    if any(w.keys() != ws[0].keys() for w in ws):
        sys.exit(f"soup: {models} do not hold the same tensors")
    avg = {k: (sum(w[k].float() for w in ws) / len(ws)).to(ws[0][k].dtype).contiguous() for k in ws[0]}
    save_file(avg, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def write_graded(calib: pd.DataFrame, test: pd.DataFrame, scheme, gold: str, name: str, ev: Path) -> float:
    """Fit beta on `calib`, grade `test` by CumPT and by argmax into ev/<name>(_argmax).parquet."""
    beta, _ = slice_beta(calib, gold, scheme)
    probs = test[scheme.prob_columns].to_numpy(dtype=float)
    test.assign(**grade_rows(probs, scheme, beta), beta=beta).to_parquet(ev / f"{name}.parquet", index=False)
    test.assign(label=[scheme.labels[i].name for i in probs.argmax(1)]).to_parquet(ev / f"{name}_argmax.parquet",
                                                                                   index=False)
    return beta


def one_split(members: list[Path], stage: str, out: Path, gold: str, scheme) -> dict[str, float]:
    split = members[0] / "split"
    if not (split / "calib.parquet").is_file():
        sys.exit(f"{split}/calib.parquet is missing: beta is fitted on the calibration slice (a pipeline run "
                 "with calib_size > 0)")
    models = [m / stage for m in members]
    for m, model in zip(members, models):
        if not (model / "config.json").is_file():
            sys.exit(f"{model}: no trained model (run the pipeline's {stage} stage into {m})")
    calib, test = pd.read_parquet(split / "calib.parquet"), pd.read_parquet(split / "test.parquet")
    for m in members[1:]:
        theirs = m / "split" / "test.parquet"
        if not theirs.is_file() or not pd.read_parquet(theirs).equals(test):
            sys.exit(f"{m}: its split/test.parquet differs from {split}'s; members must share one split")
    (out / "eval").mkdir(parents=True, exist_ok=True)
    record, names = out / "members.json", [str(model.resolve()) for model in models]
    if record.is_file() and json.loads(record.read_text()) != names:  # its cached grades are another set's
        sys.exit(f"{out} holds the grades of other members ({record}); pick a new --out or delete it")
    record.write_text(json.dumps(names, indent=1))
    shutil.copytree(split, out / "split", dirs_exist_ok=True)
    cal = [scored(m, calib, gold, out / f"calib_m{i}.parquet") for i, m in enumerate(models)]
    tst = [scored(m, test, gold, out / f"test_m{i}.parquet") for i, m in enumerate(models)]
    betas = {f"m{i}": write_graded(c, t, scheme, gold, f"m{i}", out / "eval") for i, (c, t) in enumerate(zip(cal, tst))}
    cols = scheme.prob_columns
    betas["prob"] = write_graded(mean_probs(cal, cols), mean_probs(tst, cols), scheme, gold, "prob", out / "eval")
    s = soup(models, out / "soup")
    betas["soup"] = write_graded(scored(s, calib, gold, out / "calib_soup.parquet"),
                                 scored(s, test, gold, out / "test_soup.parquet"), scheme, gold, "soup", out / "eval")
    return betas


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--member", action="append", required=True, metavar="DIR_PATTERN",
                    help="A pipeline output folder per split, {seed} in the path (repeat, 2 or more).")
    ap.add_argument("--stage", default="sft", help="The stage whose models are combined.")
    ap.add_argument("--out", required=True, help="Output folder per split, {seed} in the path.")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--gold-col", default="esci_label")
    a = ap.parse_args(argv)
    if len(a.member) < 2 or any("{seed}" not in p for p in [*a.member, a.out]):
        sys.exit("--member (2 or more) and --out need {seed} in their paths, e.g. runs/ens_s{seed}_k1")
    scheme = serving_setup("", "").scheme
    for seed in [int(s) for s in a.seeds.split(",")]:
        members = [Path(p.format(seed=seed)) for p in a.member]
        betas = one_split(members, a.stage, Path(a.out.format(seed=seed)), a.gold_col, scheme)
        print(f"seed {seed}: beta per row {betas}", flush=True)


if __name__ == "__main__":
    main()
