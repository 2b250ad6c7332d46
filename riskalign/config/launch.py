"""Checks of the composed config that run before Hydra launches anything.

Composing the config here (Hydra's compose API, milliseconds) lets an entry point
refuse in one line, with exit code 2, what Hydra would report over several lines
or what a sweep would find only when the job holding it runs:

- a key the config does not have, set without `+` (`objective.bta=0.1`);
- a bad value in any job of a sweep (`-m objective.beta=0.1,-1`): every job is
  composed and checked before the first one starts;
- output and cache paths that cannot be written: under a file, read-only, or with
  a name longer than the file system allows.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from riskalign.config.command_line import CONF, parse_overrides
from riskalign.errors import ConfigError

# What a job check receives: the composed config of one job (with its `hydra` node).
JobCheck = Callable[[object], None]
PATH_KEYS = ("paths.output_root", "paths.cache_dir", "output")  # output: riskalign.pairs


def refuse_before_launch(prog: str, config_name: str, argv: Sequence[str] | None = None,
                         check_job: JobCheck | None = None) -> None:
    """Exit with code 2 and one line on stderr if the command line cannot run; `check_job`
    (the entry point's own checks) runs on every job of a sweep."""
    problem = launch_problem(config_name, sys.argv[1:] if argv is None else argv, check_job)
    if problem:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        sys.exit(2)


def launch_problem(config_name: str, argv: Sequence[str],
                   check_job: JobCheck | None = None) -> str | None:
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    overrides = parse_overrides(argv)
    if overrides is None or {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info",
                             "--shell-completion", "-sc"} & set(argv):
        return None
    multirun = bool({"-m", "--multirun"} & set(argv))
    jobs = _jobs(overrides) if multirun else [[override.input_line for override in overrides]]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for number, job in enumerate(jobs):
            try:
                cfg = compose(config_name, overrides=job, return_hydra_config=True)
            except ConfigCompositionException as error:
                return _unknown_key(error, job)  # anything else: Hydra reports it itself
            problem = path_problem(cfg, multirun)
            if problem is None and multirun and check_job is not None:
                try:
                    check_job(cfg)
                except ConfigError as error:
                    problem = str(error)
            if problem is not None:
                return f"job {number} of {len(jobs)} ({' '.join(job)}): {problem}" \
                    if multirun and len(jobs) > 1 else problem
    return None


def _jobs(overrides) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper will launch them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def _unknown_key(error: Exception, job: list[str]) -> str | None:
    """`objective.bta=0.1 is not a known key: ...` for Hydra's "not in struct" refusal."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    cause = error.__cause__
    if not isinstance(cause, (ConfigAttributeError, ConfigKeyError)) or "not in struct" not in \
            str(cause):
        return None
    key = getattr(cause, "full_key", None) or str(cause).split("full_key: ")[-1].split()[0]
    value = next((line.split("=", 1)[1] for line in job
                  if line.split("=", 1)[0].lstrip("~") == key and "=" in line), "")
    return (f"{key}={value} is not a known key: check its spelling (a new key is added "
            f"with +{key}={value})")


def path_problem(cfg, multirun: bool) -> str | None:
    """Why the run's output or cache directory cannot be written, or None."""
    from omegaconf import OmegaConf

    run_dir = cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir
    places = [(key, OmegaConf.select(cfg, key)) for key in PATH_KEYS]
    places.append(("hydra.sweep.dir" if multirun else "hydra.run.dir", run_dir))
    for key, value in places:
        if value is None:
            continue
        problem = unwritable(Path(str(value)))
        if problem:
            return f"{key}={str(value)!r} cannot be written: {problem}"
    return None


def unwritable(path: Path) -> str | None:
    """Why a directory could not be created and written at `path`, or None."""
    existing = _existing_ancestor(path)
    limit = _name_max(existing)
    for part in path.parts:
        if len(part.encode()) > limit:
            return (f"the name {part[:24]}... is {len(part.encode())} bytes, over the file "
                    f"system's limit of {limit}")
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = "the file system is read-only" if _read_only(existing) else "permission denied"
        return f"{existing} is not writable ({reason})"
    return None


def _existing_ancestor(path: Path) -> Path:
    """`path` or its nearest ancestor that exists (a name too long to look up counts as
    absent)."""
    while path.parent != path:
        try:
            if path.exists():
                return path
        except OSError:
            pass
        path = path.parent
    return path


def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory if directory.is_dir() else directory.parent,
                           "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


# ----- resource errors met while running: one line instead of a traceback ---------------

_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "a name is longer than the file system allows",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EEXIST: "a file is in the way of a directory",
    errno.EISDIR: "it is a directory, not a file",
}


def resource_problem(error: BaseException) -> str | None:
    """`<path>: <cause> (<strerror>)` for an OSError a user can act on (space, permissions,
    names, paths), or None for any other error. The error may be the cause of the one
    raised (a library that wrapped it)."""
    while error is not None and not (isinstance(error, OSError) and error.errno in _CAUSES):
        error = error.__cause__ or error.__context__
    if error is None:
        return None
    # a rename's destination is the file the user knows; its temporary source is not
    where = error.filename2 or error.filename or "writing a file"
    return f"{where}: {_CAUSES[error.errno]} ({os.strerror(error.errno)})"


def exit_on_resource_error(prog: str, error: Exception, reraise: bool = False) -> None:
    """Exit with code 1 and one line for a resource error; re-raise anything else (and,
    with `reraise`, a resource error too: a sweep's job, which Hydra records)."""
    problem = resource_problem(error)
    if problem is None or reraise:
        raise error
    print(f"{prog}: error: {problem}", file=sys.stderr)
    sys.exit(1)
