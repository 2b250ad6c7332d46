"""GGUF checkpoints (llama.cpp's format) converted once into a cached HF model directory.

transformers can read a GGUF file, but dequantizing it and rebuilding the
tokenizer takes ~30 s and the loaded model refuses `save_pretrained`. So the
first load converts: the dequantized weights go into a plain model built from
the same config, saved with the tokenizer; later loads read that directory in
well under a second.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from riskalign.runs.artifacts import build_atomically, is_complete

log = logging.getLogger(__name__)

MARKER = "converted.json"
FINGERPRINT_BYTES = 1 << 20  # hashing the first and last MiB identifies a file in ms


def is_gguf(name_or_path: str) -> bool:
    return name_or_path.endswith(".gguf")


def fingerprint(path: Path) -> str:
    """A content hash of a (possibly multi-GB) file: its size and its first and last MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(FINGERPRINT_BYTES))
        handle.seek(max(0, size - FINGERPRINT_BYTES))
        digest.update(handle.read(FINGERPRINT_BYTES))
    return digest.hexdigest()[:12]


def converted_dir(gguf_path: Path, cache_dir: str | Path) -> Path:
    return Path(cache_dir) / "models" / f"{gguf_path.stem}-{fingerprint(gguf_path)}"


def ensure_converted(gguf_path: str | Path, cache_dir: str | Path) -> Path:
    """The cached HF directory for a GGUF file, converting it first if needed."""
    gguf_path = Path(gguf_path).expanduser().resolve()
    target = converted_dir(gguf_path, cache_dir)
    if is_complete(target, MARKER):
        return target
    log.info("Converting %s to an HF checkpoint in %s (once)", gguf_path.name, target)
    return build_atomically(target, MARKER, lambda staging: _convert(gguf_path, staging))


def _convert(gguf_path: Path, staging: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    source = {"pretrained_model_name_or_path": str(gguf_path.parent), "gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(**source)
    quantized = AutoModelForCausalLM.from_pretrained(**source, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized floats now
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = quantized.generation_config
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    return {
        "source": str(gguf_path),
        "fingerprint": fingerprint(gguf_path),
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.perf_counter() - started, 1),
    }
