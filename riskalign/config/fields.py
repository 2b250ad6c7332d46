"""Typed config fields with ranges: each check returns the value or refuses it in one line
naming the key, the value and what is allowed (`ConfigError`).

    Real(low=0.0)("optim.lr", 0)  ->  ConfigError: optim.lr=0 is out of range: must be > 0

A settings block is a frozen dataclass whose fields are declared with `setting(default,
check)`, its types and ranges beside its defaults; `read_settings` reads a config's block
into one. The objectives' parameters, the run's own keys (riskalign.config.checks) and every
settings block are declared with these.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from riskalign.errors import ConfigError

# Choices that more than one layer checks, named once here: the leaf every layer may import.
DTYPES = ("float32", "bfloat16", "float16")  # model.dtype, reward.dtype
ON_BAD_RECORD = ("error", "drop")  # data.on_bad_record

Check = Callable[[str, Any], Any]
Settings = TypeVar("Settings")


@dataclass(frozen=True)
class Real:
    """A float in an interval; None bounds are unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = True
    high_open: bool = False
    nullable: bool = False

    def __call__(self, path: str, value: Any) -> float | None:
        if value is None and self.nullable:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConfigError(
                f"{path}={value!r} is not a finite number: must be {self.describe()}"
            )
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (
            value >= self.high if self.high_open else value > self.high
        )
        if below or above:
            raise ConfigError(
                f"{path}={value!r} is out of range: must be {self.describe()}"
            )
        return float(value)

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"in {left}{self.low:g}, {self.high:g}{right}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {self.high:g}"
        else:
            text = "a finite number"
        return f"{text} or null" if self.nullable else text


@dataclass(frozen=True)
class Integer:
    """An int in [minimum, maximum], or one of `options`; or null when `nullable`."""

    minimum: int = 1
    options: tuple[int, ...] = ()
    nullable: bool = False
    maximum: int | None = None

    def __call__(self, path: str, value: Any) -> int | None:
        if value is None and self.nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                f"{path}={value!r} is not an integer: must be {self.describe()}"
            )
        if (self.options and value not in self.options) or value < self.minimum or (
                self.maximum is not None and value > self.maximum):
            raise ConfigError(
                f"{path}={value!r} is out of range: must be {self.describe()}"
            )
        return value

    def describe(self) -> str:
        if self.options:
            text = "one of " + ", ".join(map(str, self.options))
        elif self.maximum is not None:
            text = f"an integer in [{self.minimum}, {self.maximum}]"
        else:
            text = f">= {self.minimum}"
        return f"{text} or null" if self.nullable else text


@dataclass(frozen=True)
class Choice:
    """One of a few names; null too when `nullable` (it switches the block off)."""

    options: tuple[Any, ...]
    nullable: bool = False

    def __call__(self, path: str, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        if value not in self.options:
            allowed = ("null",) * self.nullable + self.options
            raise ConfigError(f"{path}={value!r} is not one of: {', '.join(map(str, allowed))}")
        return value


def boolean(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}={value!r} is not a boolean: must be true or false")
    return value


def text(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}={value!r} is not a name: must be a non-empty string")
    return value


@dataclass(frozen=True)
class Pair:
    """Two values, each checked by `item` (Adam's betas)."""

    item: Any

    def __call__(self, path: str, value: Any) -> tuple[Any, Any]:
        if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != 2:
            raise ConfigError(f"{path}={value!r} is not a pair: must be [a, b], each "
                              f"{self.item.describe()}")
        return tuple(self.item(f"{path}[{index}]", item) for index, item in enumerate(value))


def check_local_path(value: str, key: str) -> None:
    """Refuse a local path (starting with . / ~) that is not there: HF would otherwise take
    it for a hub ID and fail obscurely, after other things have loaded."""
    if value.startswith((".", "/", "~")) and not Path(value).expanduser().exists():
        raise ConfigError(f"{key}={value!r} does not exist: must be an existing path or a hub ID")


# ---- settings blocks -------------------------------------------------------------------------

REQUIRED = dataclasses.MISSING  # the default of a setting the block must give


def setting(default: Any, check: Check) -> Any:
    """A field of a settings dataclass: its default (or REQUIRED) and the check of its values."""
    return dataclasses.field(default=default, metadata={"check": check})


def read_settings(settings: type[Settings], path: str, given: Mapping[str, Any]) -> Settings:
    """The block `given` (found at `path`) as a `settings` dataclass: unknown keys refused,
    absent ones given their default, every value passed through its field's check."""
    declared = dataclasses.fields(settings)
    refuse_unknown(path, given, [field.name for field in declared])
    values = {}
    for field in declared:
        if field.name in given:
            value = given[field.name]
        elif field.default is not REQUIRED:
            value = field.default
        else:
            raise ConfigError(f"{path}.{field.name} is not set: {settings.__name__} has no default "
                              "for it")
        values[field.name] = field.metadata["check"](f"{path}.{field.name}", value)
    return settings(**values)


def check_settings(instance: Any, path: str) -> None:
    """The fields of a settings dataclass built in code rather than read, each checked."""
    for field in dataclasses.fields(instance):
        field.metadata["check"](f"{path}.{field.name}", getattr(instance, field.name))


def declared_settings(settings: type) -> dict[str, tuple[Any, Check]]:
    """{name: (default, check)} of a settings dataclass, for a schema that shares its fields."""
    return {field.name: (field.default, field.metadata["check"])
            for field in dataclasses.fields(settings)}


def refuse_unknown(path: str, given: Mapping[str, Any], allowed: list[str]) -> None:
    for key in given:
        if key not in allowed:
            raise unknown_key(f"{path}.{key}", given[key], allowed)


def unknown_key(path: str, value: Any, allowed: list[str]) -> ConfigError:
    """The refusal of a key nothing reads: `<path>=<value> is not a known key: allowed keys
    are <allowed>`."""
    return ConfigError(f"{path}={short_repr(value)} is not a known key: allowed keys are "
                       f"{', '.join(allowed)}")


def short_repr(value: Any) -> str:
    """repr(value), cut to 40 characters: a refusal stays one readable line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Block:
    """A settings block inside another (objective.risk): a mapping read as `settings`."""

    settings: type

    def __call__(self, path: str, value: Any) -> Any:
        if isinstance(value, self.settings):  # the default, already checked
            return value
        if not isinstance(value, Mapping):
            names = ", ".join(field.name for field in dataclasses.fields(self.settings))
            raise ConfigError(f"{path}={value!r} is not a block: must be a mapping of {names}")
        return read_settings(self.settings, path, value)
