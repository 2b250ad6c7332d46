"""LightningModules: preference alignment (and, later, online RL)."""
