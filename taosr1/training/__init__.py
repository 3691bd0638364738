"""Training stages: CoT data, SFT, pass@N sampling + DPO, GRPO, and the pipeline that chains them."""
