"""Ray Train + DeepSpeed pretraining loop, run configs, checkpoints, exports, Tune search."""
