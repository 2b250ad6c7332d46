"""Load a preference dataset from a `save_to_disk` directory, a data file or a hub ID."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from riskalign.config_checks import ConfigError

PAIR_COLUMNS = ("prompt", "chosen", "rejected")
FILE_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv",
                ".arrow": "arrow"}


def _load_any(path: str) -> DatasetDict:
    local = Path(path)
    if local.is_dir() and (
        (local / "dataset_dict.json").exists() or (local / "state.json").exists()
    ):
        loaded = load_from_disk(str(local))
        return loaded if isinstance(loaded, DatasetDict) else DatasetDict(train=loaded)
    if local.is_file():
        builder = FILE_FORMATS.get(local.suffix)
        if builder is None:
            raise ConfigError(
                f"data.path={path!r} has an unknown format: use one of "
                f"{', '.join(sorted(FILE_FORMATS))} or a save_to_disk directory"
            )
        return load_dataset(builder, data_files=str(local))
    if local.exists():
        raise ConfigError(f"data.path={path!r} is not a dataset file or save_to_disk directory")
    if path.startswith((".", "/", "~")):
        raise ConfigError(f"data.path={path!r} does not exist")
    return load_dataset(path)  # a hub ID (or a dataset script directory)


def load_preference_splits(path: str, train_split: str, eval_split: str) -> DatasetDict:
    """The train and eval splits, with their `prompt`/`chosen`/`rejected` columns checked.

    A dataset with only a train split is divided 95/5 with a fixed seed.
    """
    splits = _load_any(path)
    if train_split not in splits:
        raise ConfigError(
            f"data.train_split={train_split!r} is not in the dataset at {path!r} "
            f"(splits: {', '.join(splits)})"
        )
    if eval_split not in splits:
        divided = splits[train_split].train_test_split(test_size=0.05, seed=0)
        splits = DatasetDict({train_split: divided["train"], eval_split: divided["test"]})
    for split in (train_split, eval_split):
        _check_columns(splits[split], path, split)
    return DatasetDict({"train": splits[train_split], "eval": splits[eval_split]})


def _check_columns(dataset: Dataset, path: str, split: str) -> None:
    missing = [column for column in PAIR_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ConfigError(
            f"dataset {path!r} split {split!r} lacks column(s) {', '.join(missing)}: "
            f"needs {', '.join(PAIR_COLUMNS)} (has {', '.join(dataset.column_names)})"
        )
