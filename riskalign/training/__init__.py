"""The Lightning glue around the LightningModules (riskalign.modules): the trainer of a run
(`trainer`), its callbacks (the alignment-vs-drift `evaluation`, the numerical `guard`,
`checkpoints`, `random_state`, the `progress` bar, the `step_timer`), its metric `loggers`,
the distributed `strategies`, where a run `resume`s from, and the `reference_cache`."""
