"""The one loader of run records: every ``record.json`` under a root through :func:`onebit.records.read_record`
(migrated and validated field by field), or W&B runs regrouped into the same :class:`~onebit.records.RunRecord`
and validated by :meth:`RunRecord.from_dict`.

A record that does not validate is named on stderr in one line (``onebit: skipped <path>: <reason>``) and left
out; it never stops the others from loading and never enters a mean.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Iterable

from omegaconf import OmegaConf

from onebit.records.layout import RECORD_NAME
from onebit.records.recipe import stages_for
from onebit.records.record import SCHEMA, CorruptRecordError, RunRecord, read_record
from onebit.tracking.wandb_record import NOT_OPTIONS, metrics_from_summary

WANDB_STATES = {"finished": "finished", "failed": "failed", "crashed": "failed",
                "killed": "interrupted"}  # W&B's "killed": stopped by the user or a signal
METRIC_PREFIXES = ("train/", "val/", "test/")


class NoRunsError(LookupError):
    """Nothing to show: the message is the one line the command prints (exit 1)."""


def skip(reason: str, problems: list[str]) -> None:
    """Name a left-out record on stderr, in one line."""
    line = " ".join(str(reason).split())
    problems.append(line)
    print(f"onebit: skipped {line}", file=sys.stderr)


def load_records(root: Path | str) -> tuple[list[RunRecord], list[str]]:
    """Every valid record under ``root`` (recursively, sorted by path) and the one-line reasons for the skipped
    ones. A record's ``run_dir`` is where its file lies now (its checkpoints are beside it, also when the runs
    were moved or copied). Raises :class:`NoRunsError` when the root does not exist or holds no valid record."""
    root = Path(root)
    if not root.exists():
        raise NoRunsError(f"no run records: {root} does not exist (run python src/train.py first, or --root)")
    records, problems = [], []
    for path in sorted(root.rglob(RECORD_NAME)):
        try:
            rec = read_record(path)
            rec.run_dir = str(path.parent)
        except CorruptRecordError as e:
            skip(str(e), problems)
            continue
        records.append(rec)
    if not records:
        raise NoRunsError(f"no run records under {root}" + (f" ({len(problems)} skipped)" if problems else ""))
    return records, problems


# ----------------------------------------------------------------------------------------------------------
# W&B: one W&B run per stage, regrouped by the record's run id
# ----------------------------------------------------------------------------------------------------------


def _started(run) -> float | None:
    created = getattr(run, "created_at", None)
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        return float(created)
    try:
        return datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp() if created else None
    except ValueError:
        return None


def _recipe(config: dict) -> list[tuple[str, str]]:
    """(stage name, model kind) of the config's recipe, in order (``onebit.records.recipe.stages_for``)."""
    return [(s.name, s.model) for s in stages_for(OmegaConf.create(config))]


def _stage_status(state: str) -> str:
    return WANDB_STATES.get(state, "running")


def record_dict_from_wandb(run_id: str, runs: list) -> dict:
    """The schema-2 record of one onebit run from its W&B runs (one per stage, ``job_type`` = stage): options,
    job key, smoke reasons and the full config from the run config
    (``onebit.tracking.wandb_record.wandb_config``), stage
    metrics from each run's summary (its ``train/*``, ``val/*``, ``test/*`` keys: the last value, and the best
    as ``val/top1_best``, ``onebit.tracking.wandb_record.metrics_from_summary``), the status from
    the stages (a failed stage fails the run; a stage not yet in W&B is pending). Missing pieces are left
    missing: :meth:`RunRecord.from_dict` names them."""
    first = runs[0]
    cfg = dict(first.config)
    config = cfg.get("config")
    by_stage: dict[str, object] = {}
    for run in sorted(runs, key=lambda r: (_stage_status(r.state) == "finished", _started(r) or 0.0)):
        by_stage[str(run.job_type)] = run  # a stage logged twice (offline fallback): the finished, latest one
    recipe = _recipe(config) if isinstance(config, dict) else [(name, "binary") for name in by_stage]
    unknown = sorted(set(by_stage) - {name for name, _ in recipe})
    if unknown:
        raise CorruptRecordError(f"stage(s) {', '.join(unknown)} are not in the config's recipe "
                                 f"({', '.join(n for n, _ in recipe)})")
    stages = {}
    for name, model in recipe:
        run = by_stage.get(name)
        summary = metrics_from_summary(dict(run.summary)) if run is not None and run.summary is not None else {}
        stages[name] = {"name": name, "model": model, "epochs": 0,
                        "status": _stage_status(run.state) if run is not None else "pending",
                        "metrics": {k: v for k, v in summary.items() if str(k).startswith(METRIC_PREFIXES)}}
    statuses = [s["status"] for s in stages.values()]
    status = ("failed" if "failed" in statuses else "interrupted" if "interrupted" in statuses
              else "finished" if statuses and all(s == "finished" for s in statuses) else "running")
    started = [t for t in map(_started, runs) if t is not None]
    data = {"schema": SCHEMA, "run_id": run_id, "run_dir": f"wandb:{run_id}", "status": status, "stages": stages,
            "options": {k: v for k, v in cfg.items() if k not in NOT_OPTIONS and "/" not in k},
            "timings": {"started": min(started) if started else None}}
    for key in ("job_key", "smoke", "config"):
        if key in cfg:
            data[key] = cfg[key]
    study = cfg.get("study") or getattr(first, "group", None)
    if study is not None:
        data["study"] = study
    return data


def records_from_wandb(runs: Iterable) -> tuple[list[RunRecord], list[str]]:
    """Records from W&B runs (objects with ``config``, ``summary``, ``job_type``, ``state``, ``id``, ``group``,
    as ``wandb.Api().runs(...)`` gives): grouped by the ``run_id`` in their config and validated like a local
    record. A run without a ``run_id``, or a group that does not make a valid record, is named and left out."""
    groups: dict[str, list] = {}
    problems: list[str] = []
    for run in runs:
        run_id = dict(run.config).get("run_id")
        if not isinstance(run_id, str) or not run_id:
            skip(f"wandb run {run.id}: missing field 'run_id' (not logged by this onebit's W&B logger)", problems)
            continue
        groups.setdefault(run_id, []).append(run)
    records = []
    for run_id, rs in groups.items():
        source = f"wandb run(s) {', '.join(sorted(str(r.id) for r in rs))}"
        try:
            rec = RunRecord.from_dict(record_dict_from_wandb(run_id, rs), source)
        except CorruptRecordError as e:
            skip(str(e) if str(e).startswith(source) else f"{source}: {e}", problems)
            continue
        except Exception as e:  # a config from which no recipe can be built
            skip(f"{source}: invalid config ({type(e).__name__}: {e})", problems)
            continue
        records.append(rec)
    return records, problems


def load_wandb(entity: str, project: str, group: str | None = None) -> tuple[list[RunRecord], list[str]]:
    """Records of ``entity/project`` (optionally one group = study) through the W&B public API."""
    import wandb

    path = f"{entity}/{project}"
    try:
        runs = list(wandb.Api(timeout=30).runs(path, filters={"group": group} if group else {}))
    except Exception as e:  # wandb raises several types for missing projects / no network / no credentials
        raise NoRunsError(f"W&B project {path!r} could not be read: {type(e).__name__}: {str(e).splitlines()[0]}")
    if not runs:
        raise NoRunsError(f"W&B project {path!r}{f' group {group!r}' if group else ''} has no runs")
    records, problems = records_from_wandb(runs)
    if not records:
        raise NoRunsError(f"W&B project {path!r}: no valid runs ({len(problems)} skipped)")
    return records, problems
