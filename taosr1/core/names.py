"""Names the layers share, defined once below every module that uses them."""

PARTITION = "run_date"  # the grades, quarantine and runs tables: one partition per night graded
STAGE_FILE = "taosr1_stage.json"  # written last into a training stage's folder: the stage is complete
CALIBRATION_FILE = "taosr1_calibration.json"  # CumPT beta per label scheme, beside a model's files
