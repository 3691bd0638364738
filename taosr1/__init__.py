"""taosr1: query-product relevance labeling with a reasoning LLM (TaoSR1-style).

The package reads as the labeling path: labels -> prompts -> engines -> cumpt ->
labeling -> io; the Spark job and the training stages build on it.
Nothing here imports torch, pyspark or trl at module level, so the CLI starts fast.
"""

__version__ = "0.1.0"
