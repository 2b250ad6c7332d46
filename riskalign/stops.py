"""Reasons a run stops on its own, importable without torch or Lightning (the entry points
catch them before anything heavy has loaded)."""


class NumericalGuardError(RuntimeError):
    """Training stopped after `guard.max_consecutive` non-finite steps in a row."""


class Preempted(RuntimeError):
    """Training stopped on SIGTERM, after checkpointing the step it had finished."""
