"""Atomic file writes that respect the user's umask.

Every file onebit leaves behind (records, index entries, pretrain-cache metadata, tables, figures) is written to a
temporary file in the same directory, flushed, and renamed over the target, so a reader sees either the previous
complete file or the new one, never a torn one. ``tempfile.mkstemp`` creates its file with mode 0600; the final
file gets ``0666 & ~umask`` instead (what ``open()`` would give), so records on a shared cluster filesystem are
readable by the group as the user intends.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a binary temporary file beside ``path``, then rename it to ``path`` (mode
    ``0666 & ~umask``). Nothing is left behind if ``write`` raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: Path | str, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
