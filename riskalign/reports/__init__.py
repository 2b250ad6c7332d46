"""The sweep report behind `python -m riskalign.frontier`: run labels, loading a sweep's
jobs, seed/prompt bootstrap aggregates, plots, tables and the W&B upload, one module each."""
