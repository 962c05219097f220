"""LightningModules: training steps, logging and optimizers around a backbone."""
