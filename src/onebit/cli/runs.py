"""A finished run named on the command line (``src/eval.py``, ``src/export.py``): ``key=value`` arguments, the
run's record found from its directory or its Hydra job folder, and a finished stage of it."""

from __future__ import annotations

from pathlib import Path

from onebit.core.errors import ConfigError
from onebit.records.layout import POINTER, RECORD_NAME, read_pointer
from onebit.records.record import CorruptRecordError, read_record


def parse_args(argv: list[str], keys: dict[str, str], choices: dict[str, tuple] | None = None,
               required: tuple[str, ...] = ("run",)) -> dict:
    """``key=value`` arguments (``--out FILE`` and ``--out=FILE`` too) into a dict; ConfigError for the rest.
    ``keys`` maps each key to its help; ``choices`` gives a key's valid values, the first one its default."""
    args: dict[str, str] = {}
    it = iter(argv)
    for arg in it:
        if arg in ("--out", "-o") and "out" in keys:
            value = next(it, None)
            if value is None:
                raise ConfigError(f"{arg} needs a file name")
            arg = f"out={value}"
        key, eq, value = arg.removeprefix("--").partition("=")
        if not eq or key not in keys:
            raise ConfigError(f"unknown argument {arg!r}; valid: {', '.join(f'{k}=' for k in keys)} (see --help)")
        if not value:
            raise ConfigError(f"{key}= needs a value: {keys[key]}")
        args[key] = value
    for key in required:
        if key not in args:
            raise ConfigError(f"{key}= is required: {keys[key]}")
    for key, valid in (choices or {}).items():
        args.setdefault(key, valid[0])
        if args[key] not in valid:
            raise ConfigError(f"{key}={args[key]!r} is invalid; choose one of {', '.join(valid)}")
    if "out" in args and Path(args["out"]).is_dir():
        raise ConfigError(f"out={args['out']!r} is a directory; give a file name")
    return args


def find_record(path: str):
    """The record of ``run=``: a run directory, or a Hydra job folder whose ``job.json`` points at one. Its
    ``run_dir`` becomes where the record lies now (a moved or copied run finds its checkpoints)."""
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
