"""Reference sequence log-probabilities computed once, cached on disk, reused by later runs.

Objectives that see the reference only through log π_ref(y|x) of whole sequences
(DPO and its links and reducers, KLDPO, WDPO) can train without the reference
model: one pass over the tokenized train and eval splits computes those numbers,
and batches carry them from then on. The cache is keyed by a hash of everything
that changes them: the reference model (its source, a fingerprint of its files,
dtype and attention kernel) and the exact token ids of every split (so the
dataset, the tokenizer, max_length and max_prompt_length all count). The file is
written atomically and its SHA-256 is recorded in the marker; a file that does
not match (truncated, overwritten) is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from datasets import DatasetDict

from riskalign.runs.artifacts import artifact_problem, build_atomically

log = logging.getLogger(__name__)

LOGPS_FILE = "logps.pt"
MARKER = "reference_logps.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".gguf")


def model_identity(source: str, dtype: str, attn_implementation: str) -> dict[str, Any]:
    """What determines the reference's outputs: for a local directory, its files' content."""
    from riskalign.models.gguf import fingerprint

    identity: dict[str, Any] = {"source": source, "dtype": dtype,
                                "attn_implementation": attn_implementation}
    path = Path(source).expanduser()
    if path.is_dir():
        identity["files"] = {
            file.name: fingerprint(file)
            for file in sorted(path.iterdir())
            if file.is_file() and file.name.endswith(_WEIGHT_SUFFIXES)
        }
    return identity


def data_digest(tokenized: DatasetDict) -> str:
    """SHA-256 of the token ids of every split and column, as stored (Arrow buffers)."""
    digest = hashlib.sha256()
    for split in sorted(tokenized):
        table = tokenized[split].data.table
        digest.update(f"{split}:{table.num_rows}".encode())
        for name in sorted(table.column_names):
            column = table.column(name).combine_chunks()
            offsets = column.offsets.to_numpy()
            digest.update(name.encode())
            digest.update((offsets - offsets[0]).tobytes())
            digest.update(column.flatten().to_numpy().tobytes())
    return digest.hexdigest()


def cache_key(identity: dict[str, Any], tokenized: DatasetDict) -> str:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    digest.update(data_digest(tokenized).encode())
    return digest.hexdigest()[:16]


def read_cache(directory: Path) -> dict[str, torch.Tensor] | None:
    """The cached log-probabilities, or None when the cache is absent, partial or corrupt."""
    problem = artifact_problem(directory, MARKER)
    if problem is not None:
        if directory.exists():
            log.warning("Reference cache %s cannot be used (%s): rebuilding it", directory,
                        problem)
        return None
    return torch.load(directory / LOGPS_FILE, map_location="cpu", weights_only=True)


def ensure_reference_logps(
    directory: Path,
    compute: Callable[[], dict[str, torch.Tensor]],
    info: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], bool]:
    """(log-probabilities per split, whether the cache was hit).

    `compute` runs only on a miss; it returns {split: [pairs, 2] (chosen, rejected)}.
    """
    cached = read_cache(directory)
    if cached is not None:
        log.info("Reference log-probabilities: cache hit at %s", directory)
        return cached, True

    def build(staging: Path) -> dict[str, Any]:
        logps = compute()
        torch.save(logps, staging / LOGPS_FILE)
        return {**info, "rows": {split: len(value) for split, value in logps.items()}}

    build_atomically(directory, MARKER, build)
    logps = read_cache(directory)
    if logps is None:
        raise RuntimeError(f"reference cache {directory} was written but does not verify")
    return logps, False


@torch.no_grad()
def compute_sequence_logps(
    reference: Callable[..., Any],
    batches: Iterable[dict[str, torch.Tensor]],
    device: torch.device,
    total: int | None = None,
    description: str = "reference log-probs",
) -> torch.Tensor:
    """[pairs, 2] log π_ref(chosen), log π_ref(rejected) of chosen-first pair batches, in order."""
    from tqdm.auto import tqdm

    from riskalign.models.response_logits import response_layout, response_projection
    from riskalign.objectives.functional import sequence_logps

    rows = []
    for batch in tqdm(batches, total=total, desc=description, leave=False):
        batch = {key: value.to(device) for key, value in batch.items()}
        positions, labels = response_layout(batch["labels"])
        # hidden states and the head (logits where the head is more than a linear map):
        # the log-probabilities project a chunk of positions at a time
        logps = sequence_logps(response_projection(reference, batch, positions), labels)
        chosen, rejected = logps.chunk(2)
        rows.append(torch.stack([chosen, rejected], dim=1).cpu())
    return torch.cat(rows) if rows else torch.empty(0, 2)


def attach_reference_logps(
    datamodule: Any,
    source: str,
    model_cfg: Any,
    cache_root: Path,
    load_reference: Callable[[], Any],
    device: torch.device,
) -> dict[str, Any]:
    """Give the data module's pairs their reference log-probabilities, from the cache or
    from one pass of the reference (built only then). Returns what the run's summary
    records: the cache directory, whether it was hit, and the seconds it took."""
    started = time.perf_counter()
    identity = model_identity(source, model_cfg.dtype, model_cfg.attn_implementation)
    # the token ids capture truncation already; the settings also count, so that a changed
    # setting never reuses a cache even where it happens to leave every sequence alone
    identity["tokenization"] = {"max_length": datamodule.max_length,
                                "max_prompt_length": datamodule.max_prompt_length}
    key = cache_key(identity, datamodule.tokenized)

    def compute() -> dict[str, torch.Tensor]:
        reference = load_reference().to(device)
        logps = {}
        for split in datamodule.tokenized:
            loader = datamodule.ordered_loader(split)
            logps[split] = compute_sequence_logps(reference, loader, device, total=len(loader),
                                                  description=f"reference log-probs ({split})")
        log.info("Reference log-probabilities of %s pairs computed",
                 {split: len(value) for split, value in logps.items()})
        return logps

    logps, hit = ensure_reference_logps(cache_root / key, compute,
                                        {"key": key, "identity": identity})
    datamodule.attach_reference_logps(logps)
    return {"directory": str(cache_root / key), "hit": hit,
            "seconds": round(time.perf_counter() - started, 2)}
