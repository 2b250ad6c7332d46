"""Checks of the command line that run before Hydra composes the config.

Hydra refuses an unknown option of a config group (`objective=nonexistent`) over
several lines and with exit code 1; the entry points refuse it first, in one
line naming the group, the option and the valid ones, with exit code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence

from riskalign.config import CONF


class _BadCommandLine(Exception):
    """The command line does not parse: Hydra reports it itself."""


def unknown_choice(argv: Sequence[str]) -> str | None:
    """The refusal of the first override choosing an option its config group lacks, or None.

    `argv` is the command line after the program name. Sweeps (`objective=dpo,radpo`)
    check each option; globs, deletions without a value and plain keys are not choices.
    A command line Hydra cannot parse, or one that reads other config directories
    (--config-path, --config-dir, hydra.searchpath), is left to Hydra.
    """
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = parse_overrides(argv)
    if overrides is None:
        return None
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        for override in overrides:
            options = loader.get_group_options(override.key_or_group)
            if not options:  # not a config group: a value override
                continue
            for choice in _choices(override):
                if choice not in options:
                    return (f"{override.key_or_group}={choice} is not one of: "
                            f"{', '.join(options)}")
    return None


def refuse_unknown_choices(prog: str, argv: Sequence[str] | None = None) -> None:
    """Exit with code 2 and one line on stderr if the command line names an unknown option."""
    problem = unknown_choice(sys.argv[1:] if argv is None else argv)
    if problem:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        sys.exit(2)


def parse_overrides(argv: Sequence[str]) -> list | None:
    """The command line's overrides as Hydra parses them; None where Hydra should report
    the command line itself (it does not parse) or it reads other config directories."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if "--version" in argv:  # argparse would print the version and exit from here
        return None
    parser = get_args_parser()

    def error(message: str) -> None:
        raise _BadCommandLine(message)

    parser.error = error  # type: ignore[method-assign]  # no second copy of Hydra's own report
    try:
        args = parser.parse_args(list(argv))
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except (_BadCommandLine, HydraException):
        return None
    other_configs = args.config_path or args.config_dir or any(
        override.key_or_group == "hydra.searchpath" for override in overrides
    )
    return None if other_configs else overrides


def _choices(override) -> Iterator[str]:
    """The options an override of a config group chooses: one, a list, or a sweep's."""
    from hydra.core.override_parser.types import ValueType

    if override.value_type in (ValueType.GLOB_CHOICE_SWEEP, ValueType.INTERVAL_SWEEP):
        return
    if override.is_sweep_override():
        values = list(override.sweep_iterator())
    else:
        value = override.value()
        values = value if isinstance(value, list) else [value]
    for value in values:
        value = getattr(value, "text", value)  # a quoted option in a sweep
        if isinstance(value, str):
            yield value
