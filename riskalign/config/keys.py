"""Unknown keys refused: a key added with `+` (`+optim.scheduler=cosine`) that nothing
reads would otherwise be accepted and silently ignored.

The keys a group may hold are those its own config files declare (every option of
`conf/<group>/`, so a key one model has and another lacks is known); `trainer` also
takes any argument of `lightning.Trainer` except those riskalign sets itself. The
refusal matches the objectives': `<path>=<value> is not a known key: allowed keys are ...`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from riskalign.config import CONF
from riskalign.config.fields import short_repr, unknown_key
from riskalign.errors import ConfigError

CHECKED_GROUPS = ("optim", "trainer", "eval", "data", "model")
# Blocks whose contents another checker owns: the world builder's (riskalign.worlds.settings,
# from check_config) and the strategy's (riskalign.training.strategies.check_strategy).
OPEN_BLOCKS = ("data.world", "trainer.strategy")
# lightning.Trainer arguments a run sets itself; the refusal says what to use instead.
TRAINER_OWNED = {
    "callbacks": "add callbacks with the callbacks group (+callbacks.NAME._target_=...)",
    "logger": "choose loggers with the logger group (logger.wandb.mode=...)",
    "default_root_dir": "runs write under paths.output_root",
    "plugins": "riskalign sets the checkpoint plugin itself",
}


def refuse_unknown_keys(cfg: DictConfig) -> None:
    """Each checked group's keys against those its configs declare."""
    for group in CHECKED_GROUPS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        allowed = known_keys(group)
        for path, value in _leaf_paths(node, group):
            if group == "trainer" and path.split(".")[1] in TRAINER_OWNED:
                key = path.split(".")[1]
                raise ConfigError(f"trainer.{key} cannot be set: {TRAINER_OWNED[key]}")
            if path not in allowed:
                parent = path.rsplit(".", 1)[0]
                siblings = sorted(k.rsplit(".", 1)[1] for k in allowed
                                  if k.rsplit(".", 1)[0] == parent)
                raise unknown_key(path, value, siblings)


@functools.cache
def known_keys(group: str) -> frozenset[str]:
    """Every dotted key (blocks and their keys) that some option of `conf/<group>/` has,
    or for a block of train.yaml itself (optim), that block's."""
    keys: set[str] = set()
    options = sorted((CONF / group).glob("*.yaml"))
    blocks = [_load(path) for path in options] or [_load(CONF / "train.yaml")[group]]
    for content in blocks:
        content.pop("defaults", None)
        keys.update(_all_paths(content, group))
    if group == "trainer":
        import lightning

        keys.update(f"trainer.{name}" for name in
                    inspect.signature(lightning.Trainer.__init__).parameters if name != "self")
    return frozenset(keys)


def _load(path: Path) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}


def _all_paths(content: Mapping[str, Any], prefix: str) -> Iterator[str]:
    for key, value in content.items():
        path = f"{prefix}.{key}"
        yield path
        if isinstance(value, Mapping) and path not in OPEN_BLOCKS:
            yield from _all_paths(value, path)


def _leaf_paths(node: DictConfig, prefix: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every key, descending into blocks but not open ones."""
    for key in node.keys():
        path = f"{prefix}.{key}"
        value = node._get_node(key)
        if isinstance(value, DictConfig) and path not in OPEN_BLOCKS:
            yield path, "{...}"
            yield from _leaf_paths(value, path)
        else:
            yield path, _raw(value)


def _raw(node: Any) -> Any:
    """A node's value without resolving interpolations (a refusal must not fail on one)."""
    if not hasattr(node, "_value"):  # a plain value, as DictConfig.items() gives them
        return node
    try:
        return OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) \
            else node._value()
    except Exception:  # an exotic node: the key is what matters
        return "..."


def check_callbacks(cfg: DictConfig) -> None:
    """Each `callbacks` entry is a block whose `_target_` is a Lightning Callback class."""
    from lightning import Callback

    for name, entry in (cfg.get("callbacks") or {}).items():
        key = f"callbacks.{name}"
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise ConfigError(f"{key}={short_repr(_raw(entry))} is not a callback: must be a block "
                              "with a _target_ (a Lightning Callback class) and its arguments")
        module, _, name = str(entry._target_).rpartition(".")
        try:
            target = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as error:
            raise ConfigError(f"{key}._target_={entry._target_!r} cannot be imported "
                              f"({type(error).__name__}: {error})") from None
        if not (inspect.isclass(target) and issubclass(target, Callback)):
            raise ConfigError(f"{key}._target_={entry._target_!r} is not a Lightning "
                              "Callback class")
