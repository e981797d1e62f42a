"""Runs: turning a composed Hydra config into a job and a job into records (checks, identity, records, W&B,
run dirs, summaries, sweep status, the K-pattern plan)."""
