"""The nightly relevance-labeling job, for spark-submit.

    spark-submit jobs/label_relevance.py --input taosr1/data/esci_us_sample.csv \
        --output out/grades --run-date 2025-06-01

Exit status: 0 committed; 2 bad input or config (nothing written); 3 committed but over an
alert threshold (--max-quarantine-share, --max-psi; one line on stderr says why); 137 killed.
Options: --help. The job is `taosr1 nightly` (taosr1/cli/nightly.py); the work is in
taosr1/nightly/job.py.
"""

from taosr1.cli.nightly import nightly

if __name__ == "__main__":
    nightly(prog_name="label_relevance.py")
