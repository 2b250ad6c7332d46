"""Merge a LoRA policy into a full HF checkpoint.

    python -m riskalign.merge <run dir>/policy <output dir> [--base <model>]

The adapter directory is what a LoRA run saves as its policy; the output is a plain
model directory (weights + tokenizer) that any HF loader, `riskalign.evaluate` or
`model.init_from` reads without peft.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from riskalign.config.launch import exit_on_resource_error
from riskalign.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m riskalign.merge",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("adapter", type=Path, help="a LoRA policy directory (adapter_config.json)")
    parser.add_argument("output", type=Path,
                        help="where to write the merged model (must not exist)")
    parser.add_argument("--base", help="base model (hub ID or path) instead of the one the "
                                       "adapter records")
    args = parser.parse_args(argv)
    from riskalign.models.lora import merge_adapter

    try:
        merge_adapter(args.adapter, args.output, base=args.base)
    except ConfigError as error:
        print(f"riskalign.merge: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        exit_on_resource_error("riskalign.merge", error)
    print(f"merged model written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
