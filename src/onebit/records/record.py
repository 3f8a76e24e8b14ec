"""The run record: one typed, versioned JSON file per run (``<run dir>/record.json``), the only thing the
analysis reads.

:class:`RunRecord` holds the resolved config, the chosen options, whether it is a smoke run, one
:class:`StageRecord` per stage of its recipe (in order), the status (``running`` / ``finished`` / ``failed`` with
the error / ``interrupted`` by a signal: ``onebit.records.lifecycle``), every attempt at it (``attempt_log``: when,
where, its log and how it ended), timings, versions and the git commit. It is written only through its methods,
atomically (``onebit.core.files``), so a reader sees the previous complete record or the new one, never a torn file.

:func:`read_record` is the one validating reader: it migrates every older layout (:data:`MIGRATIONS`) and checks
every field's type, raising :class:`CorruptRecordError` that names the file and the field.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import time
import uuid
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from onebit.core.files import atomic_write_json
from onebit.records.identity import smoke_reasons
from onebit.records.layout import LOG, RECORD_NAME
from onebit.records.provenance import git_commit, versions
from onebit.records.lifecycle import RUN_STATUSES, STAGE_STATUSES, check_transition

SCHEMA = 3


class CorruptRecordError(ValueError):
    """A file that is not a complete, valid onebit record; the message names the file and the problem."""


# ----------------------------------------------------------------------------------------------------------
# Types
# ----------------------------------------------------------------------------------------------------------


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _metrics(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and _number(x) for k, x in v.items())


def _history(v) -> bool:
    return isinstance(v, list) and all(isinstance(h, dict) and _number(h.get("epoch"))
                                       and all(_number(x) for x in h.values()) for h in v)


def _timings(v) -> bool:
    """started / ended / seconds / first_step: numbers (seconds since the epoch, durations) or null."""
    return isinstance(v, dict) and all(x is None or _number(x) for x in v.values())


def _cache(v) -> bool:
    """A pretrain-cache reference: its key is text (it counts shared twins)."""
    return v is None or (isinstance(v, dict) and isinstance(v.get("key"), str))


_is_str, _is_int = (lambda v: isinstance(v, str)), (lambda v: isinstance(v, int) and not isinstance(v, bool))
_is_dict = lambda v: isinstance(v, dict)  # noqa: E731
# a field's annotation -> the check of its JSON value (the dataclass is the one list of a record's fields)
ANNOTATION_CHECKS = {"str": _is_str, "int": _is_int, "float": _number, "dict": _is_dict,
                     "list": lambda v: isinstance(v, list)}


def _types(cls) -> dict[str, Callable[[Any], bool]]:
    """Every field of a record dataclass -> the check of its value: ``cls.CHECKS`` where a field has one, else
    its annotation's (``X | None`` accepts null)."""
    out = {}
    for f in fields(cls):
        if f.name in cls.CHECKS:
            out[f.name] = cls.CHECKS[f.name]
            continue
        base, _, none = str(f.type).partition(" | ")
        check = ANNOTATION_CHECKS[base]
        out[f.name] = _opt(check) if none == "None" else check
    return out


@dataclass
class StageRecord:
    """One stage of a run: what it trained (``model``: twin / binary / real), what initialised it (``init``: a
    previous stage, ``cache`` or ``None`` = fresh initialisation), its status, per-epoch ``history`` and final
    ``metrics`` (``val/*`` and ``train/*`` of its last epoch, ``val/top1_best``, ``test/*``)."""

    name: str
    model: str
    init: str | None = None
    epochs: int = 0
    status: str = "pending"
    metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    seconds: float | None = None
    fit_seconds: float | None = None
    test_seconds: float | None = None
    resumed_from: str | None = None
    transfer: dict | None = None   # the audit of the strict state-dict transfer that initialised it
    cache: dict | None = None      # {"key", "hit", "trained_by", ...} for a stage served by the pretrain cache
    wandb: dict | None = None      # {"id", "mode", "project"}
    efficiency: dict | None = None  # the stage model's precision (activations / weights bits) and counts
    teacher: dict | None = None    # a distilled stage's teacher: {"source": twin|teacher, "key", ...} (conf/distill)

    # checks beyond the annotation's type (every other field is checked by its annotation: :func:`_types`)
    CHECKS = {"status": lambda v: v in STAGE_STATUSES, "metrics": _metrics, "history": _history, "cache": _cache}

    @property
    def finished(self) -> bool:
        return self.status == "finished"


@dataclass
class RunRecord:
    """The record of one run. Create with :meth:`start`, change through the methods below (each saves)."""

    job_key: str
    run_id: str
    study: str
    run_dir: str
    options: dict
    config: dict
    smoke: list = field(default_factory=list)
    status: str = "running"
    error: str | None = None
    traceback: str | None = None
    stages: dict = field(default_factory=dict)   # name -> StageRecord, in the recipe's order
    efficiency: dict | None = None
    timings: dict = field(default_factory=dict)
    attempts: int = 1
    # one entry per attempt (:meth:`start`, :meth:`resume`): n, action, started, ended, seconds, status, signal,
    # error, host, pid, argv (the command line) and log (the run's log file; the attempt's lines start at byte
    # log_offset). Records from before it have [] (one attempt, described by ``timings``).
    attempt_log: list = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    git_commit: str | None = None
    host: str | None = None
    schema: int = SCHEMA
    export: dict | None = None   # src/export.py's result (onebit.deploy.run.export_run): model.tflite, checks, timings

    CHECKS = {"smoke": lambda v: isinstance(v, list) and all(map(_is_str, v)),
              "status": lambda v: v in RUN_STATUSES, "timings": _timings, "schema": lambda v: v == SCHEMA}

    # -- creation and persistence --------------------------------------------------------------------------
    @classmethod
    def start(cls, run_dir: Path, *, job_key: str, study: str, options: dict, config: dict,
              stages: list[StageRecord]) -> "RunRecord":
        rec = cls(job_key=job_key, run_id=uuid.uuid4().hex[:12], study=study, run_dir=str(run_dir),
                  options=options, config=config, smoke=smoke_reasons(config),
                  stages={s.name: s for s in stages}, timings={"started": time.time(), "ended": None,
                                                               "seconds": None},
                  versions=versions(), git_commit=git_commit(), host=platform.node())
        rec._new_attempt("started")
        rec.save()
        return rec

    @property
    def path(self) -> Path:
        return Path(self.run_dir) / RECORD_NAME

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = {name: asdict(s) for name, s in self.stages.items()}
        return d

    def save(self) -> None:
        """Write the record atomically, the running attempt's time up to now (a SIGKILLed one keeps it)."""
        self._tick()
        atomic_write_json(self.path, self.to_dict())

    def _tick(self) -> None:
        """The running attempt's ``ended`` / ``seconds``: now."""
        if self.attempt_log and self.attempt_log[-1]["status"] == "running":
            a = self.attempt_log[-1]
            a["ended"] = time.time()
            a["seconds"] = round(a["ended"] - a["started"], 3)

    @property
    def log_path(self) -> Path:
        """The run's log: every attempt's lines, in order (``onebit.records.layout.LOG``)."""
        return Path(self.run_dir) / LOG

    def _new_attempt(self, action: str) -> None:
        log = self.log_path
        offset = log.stat().st_size if action == "resumed" and log.exists() else 0
        self.attempt_log.append({
            "n": self.attempts, "action": action, "started": time.time(), "ended": None, "seconds": None,
            "status": "running", "signal": None, "error": None, "host": platform.node(), "pid": os.getpid(),
            "argv": list(sys.argv), "log": str(log), "log_offset": offset})

    @property
    def training_seconds(self) -> float | None:
        """The time the run worked, over all its attempts (not the idle time between an interruption and the
        resume): the sum of its attempts' seconds; a record from before ``attempt_log``: ended - started."""
        if self.attempt_log:
            return round(sum(a.get("seconds") or 0.0 for a in self.attempt_log), 3)
        return self.timings.get("seconds")

    # -- changes -------------------------------------------------------------------------------------------
    def stage(self, name: str) -> StageRecord:
        return self.stages[name]

    def update_stage(self, name: str, **values) -> StageRecord:
        st = self.stages[name]
        for k, v in values.items():
            if k not in STAGE_TYPES:
                raise AttributeError(f"StageRecord has no field {k!r}")
            setattr(st, k, v)
        self.save()
        return st

    def resume(self) -> None:
        """A new attempt at an interrupted or failed run (or one whose process was killed while ``running``): same
        run directory, ids and finished stages."""
        check_transition(self.status, "running")
        if self.attempt_log and self.attempt_log[-1]["status"] == "running":
            self.attempt_log[-1]["status"] = "killed"   # its process died without recording why (SIGKILL, OOM)
        self.status, self.error, self.traceback = "running", None, None
        self.attempts += 1
        self._new_attempt("resumed")
        self.save()

    def finish(self, status: str, error: str | None = None, traceback: str | None = None,
               signum: int | None = None) -> None:
        """End the current attempt: ``finished``, ``failed`` (``error``: the real cause in one line) or
        ``interrupted`` (``signum``: the signal); a stage still running ends as the run does."""
        check_transition(self.status, status)
        self._tick()   # the attempt's seconds up to now (written once, below)
        t = self.timings
        t["ended"] = time.time()
        self.status, self.error, self.traceback = status, error, traceback
        if self.attempt_log:
            self.attempt_log[-1].update(status=status, error=error,
                                        signal=signal.Signals(signum).name if signum else None)
        t["seconds"] = self.training_seconds if self.attempt_log else round(t["ended"] - t["started"], 3)
        for st in self.stages.values():
            if status in ("failed", "interrupted") and st.status == "running":
                st.status = status
        self.save()

    # -- reading -------------------------------------------------------------------------------------------
    @property
    def final_stage(self) -> StageRecord | None:
        """The last stage of the recipe: the weights the run hands over, whose metrics represent it."""
        return next(reversed(self.stages.values()), None)

    @classmethod
    def from_dict(cls, data: dict, source: str = "record") -> "RunRecord":
        """Validate ``data`` (already migrated to :data:`SCHEMA`) field by field."""
        if not isinstance(data, dict):
            raise CorruptRecordError(f"{source}: not a JSON object")
        _check(cls, data, source)
        stages = {}
        for name, st in data["stages"].items():
            if not isinstance(st, dict):
                raise CorruptRecordError(f"{source}: stages.{name} is not an object")
            _check(StageRecord, st, f"{source}: stages.{name}")
            # fields older records had and these no longer keep (a stage's ``checkpoints`` summary) are ignored
            stages[name] = StageRecord(**{k: st[k] for k in STAGE_TYPES if k in st})
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "stages": stages})


STAGE_TYPES = _types(StageRecord)


def _check(cls, data: dict, source: str) -> None:
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    for name in required:
        if name not in data:
            raise CorruptRecordError(f"{source}: missing field {name!r}")
    for name, ok in _types(cls).items():
        if name in data and not ok(data[name]):
            raise CorruptRecordError(f"{source}: field {name!r} has an invalid value "
                                     f"{_short(data[name])} ({type(data[name]).__name__})")


def _short(v) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


# ----------------------------------------------------------------------------------------------------------
# Reading and migration
# ----------------------------------------------------------------------------------------------------------


def read_record(path: Path | str) -> RunRecord:
    """Load, migrate and validate one record; raises :class:`CorruptRecordError` naming the path and field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptRecordError(f"{path}: corrupt or truncated record ({type(e).__name__}: {e})") from None
    return RunRecord.from_dict(migrate(data, str(path)), str(path))


def migrate(data: Any, source: str = "record") -> dict:
    """Bring a record of any older layout to :data:`SCHEMA`, one step at a time."""
    if not isinstance(data, dict) or not isinstance(data.get("schema"), int):
        raise CorruptRecordError(f"{source}: not a onebit record (no schema version)")
    if data["schema"] > SCHEMA:
        raise CorruptRecordError(f"{source}: schema {data['schema']} is newer than this onebit's ({SCHEMA}); "
                                 "update onebit")
    while data["schema"] < SCHEMA:
        step = MIGRATIONS.get(data["schema"])
        if step is None:
            raise CorruptRecordError(f"{source}: schema {data['schema']} has no migration")
        try:
            data = step(data)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise CorruptRecordError(f"{source}: cannot migrate schema {data['schema']} "
                                     f"({type(e).__name__}: {e})") from None
    return data


def _v1_history(stage: dict) -> list:
    """Schema 1 stored each epoch's ``train/*`` one entry late (entry e held epoch e-1's, the last epoch's
    only in the final metrics); schema 2 stores every entry aligned with its epoch."""
    hist = [dict(h) for h in stage.get("history") or [] if isinstance(h, dict) and "epoch" in h]
    if not hist or any(k.startswith("train/") for k in hist[0]):
        return hist
    train_keys = sorted({k for h in hist for k in h if k.startswith("train/")})
    for i, h in enumerate(hist):
        nxt = hist[i + 1] if i + 1 < len(hist) else stage.get("metrics") or {}
        for k in train_keys:
            h.pop(k, None)
            if k in nxt:
                h[k] = nxt[k]
    return hist


def _v1_to_v2(d: dict) -> dict:
    """Schema 1 (the founding session): stages as plain dicts, W&B ids in a top-level ``wandb`` map, no run id,
    no smoke flag, no stage model/init fields."""
    config = d.get("config") or {}
    order = [s for s in ("pretrain", "binary", "bn_retrain", "real") if s in (d.get("stages") or {})]
    stages, previous = {}, None
    for name in order:
        st = d["stages"][name]
        model = {"pretrain": "twin", "real": "real"}.get(name, "binary")
        init = "cache" if name == "pretrain" else previous
        stages[name] = {
            "name": name, "model": model, "init": init, "epochs": int(st.get("epochs") or 0),
            "status": st.get("status", "finished"),
            "metrics": {k: v for k, v in (st.get("metrics") or {}).items()},
            "history": _v1_history(st), "seconds": st.get("seconds"), "fit_seconds": st.get("fit_seconds"),
            "test_seconds": st.get("test_seconds"), "resumed_from": st.get("resumed_from"),
            "transfer": st.get("transfer"), "cache": st.get("cache"), "wandb": (d.get("wandb") or {}).get(name)}
        previous = name
    started = (d.get("timings") or {}).get("started") or 0
    return {
        "schema": 2, "job_key": d["job_key"], "run_id": f"{d['job_key'][:8]}{int(started) % 10000:04d}",
        "study": d["study"], "run_dir": d["run_dir"], "options": d["options"], "config": config,
        "smoke": smoke_reasons(config), "status": d["status"], "error": d.get("error"),
        "traceback": d.get("traceback"), "stages": stages, "efficiency": d.get("efficiency"),
        "timings": d.get("timings") or {}, "attempts": int(d.get("attempts", 1)),
        "versions": d.get("versions") or {}, "git_commit": d.get("git_commit"), "host": d.get("host")}


# classes that moved when onebit became layered packages (0.2): old ``_target_`` -> new
TARGET_RENAMES = {"onebit.quantizers.": "onebit.nn.quantizers.", "onebit.models.": "onebit.nn.models.",
                  "onebit.optim.": "onebit.nn.optim.", "onebit.training.jobs.": "onebit.training.jobs."}


def _renamed_targets(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: (_renamed_target(v) if k == "_target_" and isinstance(v, str) else _renamed_targets(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_renamed_targets(v) for v in node]
    return node


def _renamed_target(target: str) -> str:
    for old, new in TARGET_RENAMES.items():
        if target.startswith(old):
            return new + target[len(old):]
    return target


def _v2_to_v3(d: dict) -> dict:
    """Schema 2 named the classes of its config by their modules before the layered packages
    (``onebit.quantizers.ApproxSign``); schema 3 by their new ones (``onebit.nn.quantizers.ApproxSign``), so
    that old and new runs of one configuration share a table cell and an old run's model can be rebuilt."""
    return {**d, "schema": 3, "config": _renamed_targets(d.get("config") or {})}


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2, 2: _v2_to_v3}
