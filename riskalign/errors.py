"""The errors a run refuses or stops with: importable without torch, Lightning or Hydra, so
that every layer can raise them and the entry points catch them before anything heavy loads.
"""


class ConfigError(ValueError):
    """A config value that cannot work; its message is one line."""


class NumericalGuardError(RuntimeError):
    """Training stopped after `guard.max_consecutive` non-finite steps in a row."""


class Preempted(RuntimeError):
    """Training stopped on SIGTERM, after checkpointing the step it had finished."""
