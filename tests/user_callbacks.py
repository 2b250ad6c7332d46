"""A user callback that runs are given through the `callbacks` group in tests."""

from __future__ import annotations

import json
from pathlib import Path

from lightning import Callback


class CountTrainSteps(Callback):
    """Writes how many training batches it saw to `path` when training ends."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.batches = 0

    def on_train_batch_end(self, *args) -> None:
        self.batches += 1

    def on_train_end(self, *args) -> None:
        self.path.write_text(json.dumps({"train_batches": self.batches}))
