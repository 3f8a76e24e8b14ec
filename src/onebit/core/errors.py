"""The errors a user sees: one line that names the value and the valid choices, with the real cause kept.

- :class:`ConfigError`: an invalid option or value; its message is the line shown (exit 2).
- :func:`cause_line` / :func:`error_line`: the one line shown for any exception, with its real cause.
"""

from __future__ import annotations

import re


class ConfigError(ValueError):
    """An invalid option or value; its message is the one line shown to the user."""


def cause_line(e: BaseException, with_type: bool = True) -> str:
    """``Type: message`` (or the message alone) of the real cause of ``e`` in one line: Hydra's
    InstantiationException is unwrapped to the exception of the target, and a DataLoader worker's wrapped
    exception to its original last line."""
    from hydra.errors import InstantiationException

    while isinstance(e, InstantiationException) and e.__cause__ is not None:
        e = e.__cause__
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught ") and lines[1].startswith("Original Traceback"):
        return re.sub(r"^(?:\w+\.)+(?=\w+: )", "", lines[-1])  # torch's ExceptionWrapper: the worker's "Type: message"
    text = lines[0] if lines else ""
    if isinstance(e, ConfigError) or (not with_type and text):
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def error_line(e: BaseException) -> str:
    """The one line printed for a job's exception: ``onebit: error: ...`` for a refused config (exit 2),
    ``onebit: job failed: <real cause>`` otherwise."""
    if isinstance(e, ConfigError):
        return f"onebit: error: {cause_line(e)}"
    return f"onebit: job failed: {cause_line(e)}"


def config_error(e: BaseException) -> ConfigError:
    """One ConfigError line from a bad value found while building: the real cause's own words
    (:func:`cause_line`), which name the value."""
    return ConfigError(cause_line(e, with_type=False))
