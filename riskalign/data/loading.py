"""Load raw train/eval splits from a hub ID, a local mirror of one, a data file or a
`save_to_disk` directory; `load_data` then converts and checks them."""

from __future__ import annotations

import glob
import gzip
import lzma
import math
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from datasets.data_files import EmptyDatasetError
from datasets.exceptions import (
    DataFilesNotFoundError,
    DatasetGenerationError,
    DatasetNotFoundError,
)
from transformers import PreTrainedTokenizerBase

from riskalign.data.file_checks import first_problem
from riskalign.data.formats import convert, format_kind
from riskalign.data.records import check_on_bad_record, check_records
from riskalign.errors import ConfigError

# Builders of `datasets` by file extension; json and csv may also be compressed.
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv",
                 ".arrow": "arrow"}
COMPRESSIONS = (".gz", ".bz2", ".xz")
# A dataset directory's files are read by these builders (load_dataset's, by extension);
# other files (README.md, scripts, pickles) are not data. Text may be compressed too.
DIRECTORY_BUILDERS = {**FILE_BUILDERS, ".txt": "text", ".tsv": "csv"}
SHOWN_FILES = 5
# What load_dataset raises on a malformed file: DatasetGenerationError wraps the builder's
# own error, and some builders' errors come through bare.
READ_ERRORS = (DatasetGenerationError, pa.ArrowException, ValueError, EOFError, StopIteration,
               zlib.error, lzma.LZMAError, gzip.BadGzipFile)
# A local data file: its path, the builder that reads it, and its name in a refusal.
DataFile = tuple[Path, str, str]
# A hub ID: `name` or `owner/name`.
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
EVAL_FRACTION = 0.05


def load_raw_splits(
    path: str, *, subset: str | None, train_split: str, eval_split: str,
    eval_fraction: float = EVAL_FRACTION,
) -> DatasetDict:
    """The upstream records of `train_split` and `eval_split`, as keys "train" and "eval".

    `path` is a hub ID, a local directory (a mirror of a hub repo, or a
    `save_to_disk` directory), or a single data file (json/jsonl/parquet/csv/
    arrow; json, jsonl and csv may be .gz/.bz2/.xz compressed). A single file
    holds one split, named `train_split`. `subset` picks, in this order, a folder
    of the repo (hh-rlhf's `harmless-base`), a data file `<subset>.<ext>` beside
    it (alpaca_eval's `alpaca_eval.json`), or a config named in its README. A
    dataset without `eval_split` holds out `eval_fraction` of its rows (seed 0).
    """
    splits = _load(path, subset, train_split)
    if train_split not in splits:
        raise ConfigError(
            f"data.train_split={train_split!r} is not a split of data.path={path!r} "
            f"(splits: {', '.join(splits)})"
        )
    if eval_split not in splits:
        return hold_out(splits[train_split], eval_fraction)
    return DatasetDict(train=splits[train_split], eval=splits[eval_split])


def hold_out(dataset: Dataset, fraction: float = EVAL_FRACTION, seed: int = 0) -> DatasetDict:
    """Train and eval rows as `train_test_split(test_size=fraction, seed=seed)` picks them.

    Kept in memory: `train_test_split` would write indices files beside the
    dataset (inside a shared `save_to_disk` directory), whatever keep_in_memory says.
    """
    permutation = np.random.default_rng(seed).permutation(len(dataset))
    n_eval = math.ceil(fraction * len(dataset))
    return DatasetDict(
        train=dataset.select(permutation[n_eval:], keep_in_memory=True),
        eval=dataset.select(permutation[:n_eval], keep_in_memory=True),
    )


def load_data(
    data_cfg: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase | None,
    *,
    path: str | None = None,
) -> tuple[DatasetDict, str]:
    """The checked standard-column splits of a `data` config, and their kind.

    `path` replaces `data_cfg["path"]` (the embedded world passes its dataset
    directory). Kinds and their columns: see `riskalign.data.formats.KIND_COLUMNS`.
    """
    format_name = data_cfg.get("format")
    kind = format_kind(format_name)  # refuse a bad format or policy before loading anything
    on_bad_record = data_cfg.get("on_bad_record", "error")
    check_on_bad_record(on_bad_record)
    source = path or data_cfg.get("path")
    if not source:
        raise ConfigError(f"data.path={source!r} is not set: give a hub ID, directory or file")
    raw = load_raw_splits(
        str(source),
        subset=data_cfg.get("subset"),
        train_split=data_cfg["train_split"],
        eval_split=data_cfg["eval_split"],
        eval_fraction=data_cfg.get("eval_fraction") or EVAL_FRACTION,
    )
    try:
        splits = convert(raw, format_name, tokenizer, prompt_tokens=data_cfg.get("prompt_tokens"))
        splits, _ = check_records(
            splits,
            kind,
            tokenizer,
            max_prompt_length=data_cfg["max_prompt_length"],
            on_bad_record=on_bad_record,
        )
    except ConfigError as error:  # name the dataset: a sweep may mix several
        raise ConfigError(f"{error} (data.path={str(source)!r})") from None
    return splits, kind


def _load(path: str, subset: str | None, split_name: str) -> DatasetDict:
    local = Path(path).expanduser()
    if local.is_file():
        if subset is not None:
            raise ConfigError(
                f"data.subset={subset!r} cannot apply to data.path={path!r}: it is a single "
                "file (set data.subset=null)"
            )
        return _load_file(str(local), path, split_name)
    is_local = local.is_dir()
    if local.exists() and not is_local:
        raise ConfigError(f"data.path={path!r} is not a dataset file or directory")
    if not is_local and (not HUB_ID.match(path) or _builder(path) is not None):
        raise ConfigError(f"data.path={path!r} does not exist")
    # `source` goes to load_dataset; `root` is the same place for fsspec listings.
    source = str(local) if is_local else path
    root = source if is_local else f"hf://datasets/{path}"
    try:
        if subset is None:
            if is_local and _is_saved(local):
                return _from_disk(local, path, split_name)
            return _load_directory(source, path)
        return _load_subset(source, path, root, is_local, subset, split_name)
    except DatasetNotFoundError as error:
        raise ConfigError(f"data.path={path!r} is not a local path nor a hub dataset "
                          f"({_first_line(error)})") from error
    except ConnectionError as error:
        raise ConfigError(
            f"data.path={path!r} is not a local path and the hub cannot be reached "
            f"({_first_line(error)}): download it first or point data.path at a local copy"
        ) from error


def _load_directory(source: str, path: str) -> DatasetDict:
    files = _data_files(Path(source), path) if Path(source).is_dir() else []
    try:
        return _read(path, files, source)
    except (EmptyDatasetError, DataFilesNotFoundError) as error:
        raise ConfigError(f"data.path={path!r} holds no data files ({_first_line(error)})") \
            from error


def _load_subset(
    source: str, path: str, root: str, is_local: bool, subset: str, split_name: str
) -> DatasetDict:
    """A subset as a folder, then a `<subset>.<ext>` file, then a README config.

    The same listing serves a local mirror and the hub (through fsspec's hf://).
    Offline, the hub cannot be listed: the config name and then the folder are
    tried through `load_dataset`, which can answer from its cache.
    """
    fs, base = fsspec.core.url_to_fs(root)
    folder = f"{base}/{subset}"
    if fs.isdir(folder):
        if is_local and _is_saved(Path(folder)):
            return _from_disk(Path(folder), path, split_name)
        files = _data_files(Path(folder), path, root=Path(base)) if is_local else []
        return _read(path, files, source, data_dir=subset)
    files = [name for name in fs.glob(f"{base}/{glob.escape(subset)}.*") if _builder(name)]
    if len(files) == 1:
        location = files[0] if is_local else f"hf://{files[0]}"
        return _load_file(location, path, split_name)
    try:
        return load_dataset(source, subset)
    except ValueError as error:
        if "BuilderConfig" not in str(error):
            raise _read_error(path, [], error) from error
    except READ_ERRORS as error:
        raise _read_error(path, [], error) from error
    try:
        return _read(path, [], source, data_dir=subset)
    except (EmptyDatasetError, DataFilesNotFoundError, FileNotFoundError) as error:
        available = _subsets(fs, base)
        raise ConfigError(
            f"data.subset={subset!r} is not in data.path={path!r} "
            f"(subsets: {', '.join(available) or 'none found'})"
        ) from error


def _subsets(fs: fsspec.AbstractFileSystem, base: str) -> list[str]:
    """Folders and data files of a dataset root, as subset names."""
    try:
        entries = fs.ls(base, detail=True)
    except (OSError, ValueError):
        return []
    names = []
    for entry in entries:
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry["type"] == "directory" and not name.startswith("."):
            names.append(name)
        elif _builder(name):
            names.append(_stem(name))
    return sorted(names)


def _load_file(location: str, path: str, split_name: str) -> DatasetDict:
    builder = _builder(location)
    if builder is None:
        raise ConfigError(
            f"data.path={path!r} has an unknown file format: use one of "
            f"{', '.join(sorted(FILE_BUILDERS))} (json, jsonl and csv may end in "
            f"{', '.join(COMPRESSIONS)}) or a directory"
        )
    files: list[DataFile] = []
    if "://" not in location:  # a local file (a hub subset's is hf://)
        local = Path(location)
        name = f"data.path={path!r}"
        files = [(local, builder, name if local == Path(path).expanduser() else
                  f"{name}: {local.name}")]
    # A file names no split of its own: it is the one the config trains on.
    return _read(path, files, builder, data_files={split_name: location})


def _data_files(directory: Path, path: str, root: Path | None = None) -> list[DataFile]:
    """The data files of a local dataset directory (hidden ones aside, as load_dataset
    leaves them), named relative to `root`. Without `root` (the directory is the dataset),
    one without data files is refused: load_dataset would read other text as data or say
    that it found none."""
    found = sorted(file.relative_to(directory) for file in directory.rglob("*") if file.is_file())
    found = [name for name in found if not any(part.startswith(".") for part in name.parts)]
    prefix = directory.relative_to(root) if root else Path()
    files = [(directory / name, builder, f"data.path={path!r}: {prefix / name}")
             for name in found if (builder := _builder(name.name, DIRECTORY_BUILDERS))]
    if not files and root is None:
        shown = ", ".join(str(name) for name in found[:SHOWN_FILES]) or "nothing"
        more = len(found) - SHOWN_FILES
        raise ConfigError(
            f"data.path={path!r} holds no data files (found: {shown}"
            f"{f' and {more} more' if more > 0 else ''}): give a .jsonl/.json/.csv/.parquet "
            "file, a directory of them, or a save_to_disk dataset"
        )
    return files


def _read(path: str, files: list[DataFile], *args: Any, **kwargs: Any) -> DatasetDict:
    """`load_dataset(*args, **kwargs)`, once the local `files` it reads show no problem; an
    error of `datasets` reading them is refused in one line too."""
    for file, builder, name in files:
        problem = first_problem(file, builder, name)
        if problem:
            raise ConfigError(problem)
    try:
        return load_dataset(*args, **kwargs)
    except READ_ERRORS as error:
        raise _read_error(path, files, error) from error


def _read_error(path: str, files: list[DataFile], error: BaseException) -> ConfigError:
    """The refusal of data `datasets` failed to read: the problem of a file that parsing it
    finds (a broken JSON line), else the first line of the error's cause."""
    for file, builder, name in files:
        problem = first_problem(file, builder, name, parse=True)
        if problem:
            return ConfigError(problem)
    while isinstance(error, DatasetGenerationError) and error.__cause__ is not None:
        error = error.__cause__  # "An error occurred while generating the dataset"
    return ConfigError(f"data.path={path!r} cannot be read ({_first_line(error)})")


def _builder(name: str, builders: Mapping[str, str] = FILE_BUILDERS) -> str | None:
    lowered = name.lower()
    compressed = lowered.endswith(COMPRESSIONS)
    if compressed:
        lowered = lowered.rsplit(".", 1)[0]
    builder = builders.get(Path(lowered).suffix)
    return None if compressed and builder not in ("json", "csv", "text") else builder


def _stem(name: str) -> str:
    if name.lower().endswith(COMPRESSIONS):
        name = name.rsplit(".", 1)[0]
    return name.rsplit(".", 1)[0]


def _is_saved(directory: Path) -> bool:
    return (directory / "dataset_dict.json").exists() or (directory / "state.json").exists()


def _from_disk(directory: Path, path: str, split_name: str) -> DatasetDict:
    try:
        loaded = load_from_disk(str(directory))
    except (*READ_ERRORS, FileNotFoundError) as error:  # a damaged save_to_disk directory
        raise _read_error(path, [], error) from error
    # Like a single file, a saved Dataset (not DatasetDict) is the split trained on.
    return loaded if isinstance(loaded, DatasetDict) else DatasetDict({split_name: loaded})


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
