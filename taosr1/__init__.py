"""taosr1: query-product relevance labeling with a reasoning LLM (TaoSR1-style).

The package reads as the labeling path: labels -> prompts -> engines -> cumpt ->
labeling -> io; the Spark job and the training stages build on it.
Nothing here imports torch, pyspark or trl at module level, so the CLI starts fast.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`taosr1.read_grades` and friends (taosr1/nightly/reader.py), imported on first use."""
    if name in ("read_grades", "read_quarantine", "read_run"):
        from taosr1.nightly import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'taosr1' has no attribute {name!r}")
