"""The pipeline's `eval_forward` grades with the training forward: the same P(label) as the transformers
engine (fp32 here, so only summation order differs), and a pipeline run with it writes every stage's grades."""

import numpy as np
import pandas as pd
import pytest

from taosr1.cli.main import main
from taosr1.core.resources import conf_dir
from taosr1.training.evaluate import evaluate_scoring

PROBS = ["p_Excellent", "p_Related", "p_Mismatch", "p_Irrelevant"]


@pytest.mark.parametrize("frozen", [0, 1])
def test_training_forward_scores_as_the_engine(tiny_model, sample_df, frozen):
    df = sample_df.head(24)
    _, engine = evaluate_scoring(tiny_model, df, gold_col="esci_label")
    _, forward = evaluate_scoring(tiny_model, df, gold_col="esci_label", forward=(frozen, False))
    assert len(engine) == len(forward) == 24
    key = ["query_id", "product_id"]
    a, b = engine.sort_values(key), forward.sort_values(key)
    assert np.abs(a[PROBS].to_numpy(float) - b[PROBS].to_numpy(float)).max() < 1e-4
    assert (a["label"].to_numpy() == b["label"].to_numpy()).all()


def test_pipeline_with_eval_forward_grades_every_stage(tiny_model, tmp_path, sample_df):
    from click.testing import CliRunner

    src = tmp_path / "pairs.csv"
    sample_df.head(80).to_csv(src, index=False)
    out = tmp_path / "run"
    sets = [f"model={tiny_model}", f"input={src}", "cot.attempts=0", "stages=[cot, sft]", "sft.label_epochs=1",
            "sft.lora_r=4", "sft.lora_layers=1", "eval_forward=true", "evaluate_base=false", "test_size=0.3",
            "sft.num_train_epochs=0"]
    args = ["pipeline", "--config", str(conf_dir() / "train" / "cpu.yaml"), "--output", str(out)]
    r = CliRunner().invoke(main, args + [x for s in sets for x in ("--set", s)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert not (out / "eval" / "zero_shot.parquet").exists()  # evaluate_base false: the start model is not graded
    graded = pd.read_parquet(out / "eval" / "sft.parquet")
    test = pd.read_parquet(out / "split" / "test.parquet")
    assert len(graded) == len(test) and graded[PROBS].sum(axis=1).round(4).eq(1).all()
