"""What the command-line tools share (``onebit-eval``, ``onebit-export``, ``onebit-tables``, ``onebit-plots``,
``onebit-sync``): an argparse parser that never exits the process (every bad argument is one ``onebit: error:`` line
from one formatter, exit 2; ``--help`` returns 0), the older ``key=value`` spelling of eval and export translated to
their flags, and a finished run named on the command line: its record found from its directory or its Hydra job
folder, and a finished stage of it."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from onebit.core.errors import ConfigError
from onebit.core.files import atomic_write_json
from onebit.records.layout import POINTER, RECORD_NAME, read_pointer
from onebit.records.record import CorruptRecordError, read_record

RUN_HELP = "a run directory (with record.json), or the Hydra job folder of a run (with job.json)"


class Exit(Exception):
    """argparse finished the command itself (``--help``): the exit status, returned by :func:`run_main`."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class Parser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` callable in-process, the one formatter of every entry point's argument
    errors: a bad argument raises :class:`ConfigError` (one line naming the value and the valid choices, ``(see
    --help)``) instead of printing the usage and exiting; ``--help`` prints to the current ``sys.stdout`` and raises
    :class:`Exit`. A value outside an argument's choices is ``unknown --metric 'x'; valid: a, b``, an argument it
    does not know ``unknown argument '--x'; valid: <its arguments>`` (a subcommand's, after a subcommand)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str):
        raise ConfigError(f"{' '.join(message.split())} (see --help)")

    def exit(self, status: int = 0, message: str | None = None):
        if message:
            print(message, file=sys.stderr, end="")
        raise Exit(status)

    def _check_value(self, action, value):  # argparse's "invalid choice" check, for every argument and subcommand
        if action.choices is not None and value not in action.choices:
            name, valid = action.option_strings[-1] if action.option_strings else action.dest, action.choices
            raise argparse.ArgumentError(None, f"unknown {name} {value!r}; valid: {', '.join(map(str, valid))}")

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(f"unknown argument {unknown[0]!r}; valid: {', '.join(_arguments(self, parsed))}")
        return parsed


def _arguments(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> list[str]:
    """The arguments ``parser`` takes, as its help shows them; after a subcommand, the subcommand's."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(parsed, action.dest, None) in action.choices:
            return _arguments(action.choices[getattr(parsed, action.dest)], parsed)
    return [a.option_strings[-1] if a.option_strings else (a.metavar or a.dest.upper())
            for a in parser._actions if a.help != argparse.SUPPRESS and "--help" not in a.option_strings
            and not isinstance(a, argparse._SubParsersAction)]


def run_main(body: Callable[[], int], prefix: str = "onebit: error: ") -> int:
    """``body()``'s exit status; a :class:`ConfigError` is its one line on stderr (exit 2), ``--help`` exit 0."""
    try:
        return body()
    except Exit as e:
        return e.status
    except ConfigError as e:
        print(f"{prefix}{' '.join(str(e).split())}", file=sys.stderr)
        return 2


_KEY = re.compile(r"[A-Za-z_]\w*")


def legacy(argv: list[str], keys: dict[str, str], positional: str = "run") -> list[str]:
    """The older ``key=value`` spelling of eval and export (``run=DIR stage=binary weights=best out=F``, also
    ``--run=DIR``, ``--min_agreement=X``) as today's arguments (``DIR --stage binary --weights best --out F``);
    everything else unchanged. ``keys`` maps each older key to its help; ``positional`` is the key that became the
    positional argument. An unknown ``key=value`` (not an existing path) is one ConfigError line."""
    out: list[str] = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        name = key.removeprefix("--")
        if not eq or (key.startswith("-") and not key.startswith("--")):
            out.append(arg)
        elif key.startswith("--"):
            out.append(value if name == positional else f"--{name.replace('_', '-')}={value}")
        elif not _KEY.fullmatch(key) or (key not in keys and Path(arg).exists()):
            out.append(arg)  # a path with "=" in it: the positional argument
        elif key not in keys:
            raise ConfigError(f"unknown argument {arg!r}; valid: {', '.join(f'{k}=' for k in keys)} (see --help)")
        elif not value:
            raise ConfigError(f"{key}= needs a value: {keys[key]}")
        else:
            out.append(value if key == positional else f"--{key.replace('_', '-')}={value}")
    return out


def parse_known(parser: Parser, argv: list[str]) -> argparse.Namespace:
    """``parser``'s arguments; anything it does not know is one ConfigError line naming it and the valid ones."""
    return parser.parse_args(argv)


def out_file(out: str | None) -> str | None:
    """``--out FILE``, refused when it names a directory."""
    if out is not None and Path(out).is_dir():
        raise ConfigError(f"--out {out!r} is a directory; give a file name")
    return out


def run_on_record(argv: list[str], parser: Parser, keys: dict[str, str], act) -> int:
    """The shape of eval and export: the arguments (the older ``key=value`` spelling too, :func:`legacy`), the
    record of the run they name, ``act(record, args) -> (lines, result)``; prints the lines and writes the result
    as JSON to ``--out``. Returns the exit status (:func:`run_main`)."""

    def body() -> int:
        args = parse_known(parser, legacy(argv, keys))
        out = out_file(args.out)
        lines, result = act(find_record(args.run), args)
        print("\n".join(lines))
        if out is not None:
            atomic_write_json(out, result)
        return 0

    return run_main(body)


def find_record(path: str | None):
    """The record of the run named on the command line: a run directory, or a Hydra job folder whose ``job.json``
    points at one. Its ``run_dir`` becomes where the record lies now (a moved or copied run finds its
    checkpoints)."""
    if not path:
        raise ConfigError(f"RUN is required: {RUN_HELP}")
    run = Path(path)
    if not run.is_dir():
        raise ConfigError(f"run={path!r}: no such directory")
    if not (run / RECORD_NAME).exists():
        try:
            pointer = read_pointer(run) or {"record": str(run)}  # no job.json: no record either (below)
        except (OSError, ValueError) as e:
            raise ConfigError(f"run={path!r}: unreadable {POINTER} ({type(e).__name__})") from None
        if not pointer.get("record"):
            raise ConfigError(f"run={path!r}: this job was {pointer.get('action')} and has no run record "
                              f"({pointer.get('error')})")
        run = Path(pointer["record"])
    if not (run / RECORD_NAME).exists():
        raise ConfigError(f"run={path!r} has no {RECORD_NAME}: give a run directory (printed at the end of "
                          f"src/train.py) or a Hydra job folder with a {POINTER}")
    try:
        record = read_record(run / RECORD_NAME)
    except CorruptRecordError as e:
        raise ConfigError(str(e)) from None
    record.run_dir = str(run)
    return record


def check_stage(record, stage: str | None) -> str:
    """``stage`` (default: the run's final stage) if it is a finished stage of the run; else one ConfigError line
    naming the stages and which are finished."""
    finished = [n for n, s in record.stages.items() if s.finished]
    name = stage or record.final_stage.name
    if name not in record.stages:
        raise ConfigError(f"stage={name!r} is not a stage of this run; valid: {', '.join(record.stages)}")
    if not record.stages[name].finished:
        raise ConfigError(f"stage={name!r} is {record.stages[name].status}, not finished; finished stages: "
                          f"{', '.join(finished) or 'none yet'}")
    return name
