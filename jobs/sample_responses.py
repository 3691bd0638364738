"""pass@N sampling of the SFT model on Spark, for spark-submit.

    spark-submit jobs/sample_responses.py --config conf/train/sample.yaml --output runs/sample \
        [--set n=8] [--set engine.engine=vllm] [--master local[4]] [--spark-profile gpu] [--partitions 16]

Options: --help. Writes what `taosr1 sample` writes; the work is in taosr1/training/sample_job.py.
"""

from taosr1.cli.sample_job import sample_job

if __name__ == "__main__":
    sample_job(prog_name="sample_responses.py")
