"""Where things are: the repository's config groups (``conf/``), the sweeps (``sweeps/``), the output root
(``output_root``, default ``outputs``, or ``ONEBIT_OUTPUTS``) and the pretrain cache (``cache_dir``, default
``<output_root>/cache``, or ``ONEBIT_CACHE``), read the same way by every entry point; :func:`check_writable`: a
directory onebit will write into, checked before any job. A relative path means one under the directory the command
was started in (:func:`launch_dir`, :func:`absolute`), also where ``hydra.job.chdir=true`` moved the job elsewhere."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from onebit.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
CONF_DIR = ROOT / "conf"
SWEEPS_DIR = ROOT / "sweeps"
OUTPUTS_ENV = "ONEBIT_OUTPUTS"
CACHE_ENV = "ONEBIT_CACHE"
# a setting onebit writes into -> (its environment variable, its config key): what a refusal tells to change
WRITABLE = {"output_root": (OUTPUTS_ENV, "output_root"), OUTPUTS_ENV: (OUTPUTS_ENV, "output_root"),
            "cache_dir": (CACHE_ENV, "cache_dir"), CACHE_ENV: (CACHE_ENV, "cache_dir")}


_LAUNCH_DIRS: list[str] = []  # the directory the command was started in, while launched_from() holds it


@contextlib.contextmanager
def launched_from(directory: str | Path):
    """While held, :func:`launch_dir` is ``directory``: a job that Hydra moved (``hydra.job.chdir=true``) reads and
    writes relative paths where the command was started (``hydra.runtime.cwd``), not in its job directory."""
    _LAUNCH_DIRS.append(os.path.abspath(directory))
    try:
        yield
    finally:
        _LAUNCH_DIRS.pop()


def launch_dir() -> str:
    """The directory relative paths are read against: :func:`launched_from`'s, else the working directory."""
    return _LAUNCH_DIRS[-1] if _LAUNCH_DIRS else os.getcwd()


def absolute(path: str | Path) -> str:
    """``path`` (``~`` expanded) made absolute against :func:`launch_dir`."""
    path = os.path.expanduser(str(path))
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(launch_dir(), path))


def output_root() -> str:
    """The default output root of every entry point: ``$ONEBIT_OUTPUTS``, else ``outputs`` (relative to the
    working directory, as conf/train.yaml's ``output_root``)."""
    return os.environ.get(OUTPUTS_ENV) or "outputs"


def check_writable(path: str, name: str = "output_root") -> None:
    """``path`` must be a directory we can write into, or one we can create: its nearest existing ancestor must
    be a directory we can create a directory in. ``os.access`` first, then a real try (an empty directory created
    and removed at once): ``os.access`` says yes to root everywhere, also in /proc or /sys, where nothing can be
    created. Leaves nothing behind. ``name``: the setting as the user gave it (``output_root``, ``cache_dir`` or
    their environment variables); raises ConfigError naming it, the path and the cause."""
    target = Path(path).expanduser().absolute()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        reason = f"{existing} is not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"no permission to write in {existing}"
    else:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".onebit-write-check-", dir=existing))
            return
        except OSError as e:
            reason = f"cannot create a directory in {existing}: {type(e).__name__}: {e.strerror or e}"
    env, key = WRITABLE.get(name, (OUTPUTS_ENV, name))
    hint = f"set {env} to another directory, or pass {key}=" if name == env else \
        f"choose another directory (or set {env})"
    raise ConfigError(f"{name}={path!r} is not writable ({reason}); {hint}")
