"""A job: one config, run once. Its identity (``onebit.records.identity.job_key``) finds it in the job index, so running
the same command again skips it if it finished, continues it if it was interrupted or failed, and refuses a
second copy while one runs.

Order of a job (:func:`run`):

1. everything that can refuse the config (values, options, data, models) runs *before* any record exists, so a
   refused config leaves nothing that a table would show (only ``job.json``, ``action: refused``);
2. the job's index lock is taken (a second copy is refused, naming the process that holds it);
3. skip / resume / start a record, then run the recipe (``onebit.training.loop``), then finish the record.

``job.json`` in Hydra's job directory always says what happened (started / resumed / skipped / refused / busy)
and where the record is; :class:`SweepSummary` reads it at the end of a multirun.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from onebit.core import cluster
from onebit.core.dist import global_rank
from onebit.core.errors import ConfigError, cause_line, config_error
from onebit.core.files import atomic_write_json
from onebit.core.killpoints import kill_point
from onebit.core.registry import BINARY_ONLY, OPTION_GROUPS, chosen, is_real_model
from onebit.nn.summary import precision, summarize
from onebit.records.identity import job_key
from onebit.records.layout import POINTER, RECORD_NAME, read_pointer, remove_if_empty, remove_stub
from onebit.records.lifecycle import RESUME_HINT, interruption, signal_name
from onebit.records.recipe import stages_for
from onebit.records.record import CorruptRecordError, RunRecord, read_record
from onebit.tracking.progress import bits, logging_into, stage_result
from onebit.training.build import make_data, make_model
from onebit.training.checks import check, check_training
from onebit.training.loop import run_recipe
from onebit.training.teacher import check_teacher

log = logging.getLogger("onebit")


@dataclass(frozen=True)
class Job:
    """What a job runs and where. ``rank_zero`` is False in DDP helper processes: they train alongside rank
    zero and write nothing (no record, index, cache, logger or checkpoint)."""

    cfg: DictConfig
    key: str
    run_dir: Path
    rank_zero: bool
    resuming: bool


# ----------------------------------------------------------------------------------------------------------
# The index
# ----------------------------------------------------------------------------------------------------------


class JobBusy(ConfigError):
    """Another process holds the job's lock."""


class JobIndex:
    """``<output_root>/index/<job key>.json`` -> the run directory of the job's record. The lock
    ``<job key>.lock`` is held while the job runs (released by the OS if the process dies), and
    ``<job key>.holder.json`` says which process holds it."""

    def __init__(self, output_root: Path | str):
        self.root = Path(output_root) / "index"

    def _lock(self, key: str):
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / f"{key}.lock"), timeout=0)

    def hold(self, key: str):
        """Take the job's lock or raise :class:`JobBusy` naming its holder; use as a context manager."""
        lock = self._lock(key)
        try:
            lock.acquire()
        except Timeout:
            raise JobBusy(f"this job is already running ({self.holder(key)}); wait for it, or change study/seed "
                          "to run another copy") from None
        atomic_write_json(self.root / f"{key}.holder.json",
                          {"pid": os.getpid(), "host": platform.node(), "since": time.time()})
        return lock

    def holder(self, key: str) -> str:
        try:
            h = json.loads((self.root / f"{key}.holder.json").read_text())
            return f"process {h['pid']} on {h['host']}"
        except (OSError, ValueError, KeyError):
            return "another process"

    def running(self, key: str) -> bool:
        """Whether a live process holds the job's lock."""
        lock = self._lock(key)
        try:
            lock.acquire()
        except Timeout:
            return True
        lock.release()
        return False

    def get(self, key: str) -> RunRecord | None:
        """The job's record, if the index has one that belongs to this job; an entry pointing at a record of
        another job key, or at a damaged record, is ignored with a warning."""
        path = self.root / f"{key}.json"
        if not path.exists():
            return None
        try:
            run_dir = Path(json.loads(path.read_text())["run_dir"])
            record = read_record(run_dir / RECORD_NAME)
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring index entry %s: %s", path, e)
            return None
        if record.job_key != key:
            log.warning("ignoring index entry %s: its record %s belongs to job %s", path, run_dir, record.job_key)
            return None
        return record

    def set(self, key: str, run_dir: Path | str) -> None:
        atomic_write_json(self.root / f"{key}.json", {"run_dir": str(run_dir)})


# ----------------------------------------------------------------------------------------------------------
# Running a job
# ----------------------------------------------------------------------------------------------------------


def flat_options(cfg: DictConfig) -> dict:
    """The chosen option of every group plus the ablation keys, as flat values (the record's ``options``, W&B's
    config and the tables' axes)."""
    opts = {g: chosen(cfg, g) for g in OPTION_GROUPS}
    if is_real_model(cfg):
        opts.update(dict.fromkeys(BINARY_ONLY))
    shortcut = bool(cfg.model.get("shortcut", cfg.shortcut))
    opts.update(shortcut=shortcut, seed=cfg.seed, epochs=cfg.epochs,
                structure=("plain" if not shortcut else cfg.model.get("structure")),
                depth=cfg.model.get("depth"), bn_retrain=cfg.bn_retrain, study=cfg.study)
    if not is_real_model(cfg) and "t" in cfg.sign:
        opts["sign_t"] = cfg.sign.t
    return opts


def _pointer(job_dir: Path, key: str, action: str, record: str | None = None, error: str | None = None) -> None:
    atomic_write_json(Path(job_dir) / POINTER, {"job_key": key, "action": action, "record": record,
                                                 "error": error})


def prepare(cfg: DictConfig, explicit: frozenset[str]):
    """Everything that can refuse a config, before any record exists: values (then torch's threads are set from
    ``threads``), the recipe, the data, every model of the recipe, a distilled recipe's teacher. Returns (stages,
    data, efficiency) or raises ConfigError (one line, the real cause kept).
    ``efficiency``: per model kind of the recipe, its declared precision (``onebit.nn.summary.precision``) and
    efficiency summary at the data's input size."""
    check(cfg, explicit)
    if cfg.get("threads"):  # checked above: a positive integer, or null for torch's default
        torch.set_num_threads(int(cfg.threads))
    log.info("torch threads: %d", torch.get_num_threads())   # threads=null: torch's (joblib: cores // n_jobs)
    if (where := cluster.describe()) is not None and global_rank() == 0:
        log.info(where)   # said once, in onebit's words (onebit.core.cluster decides; Lightning does not guess)
    check_training(cfg)  # optimizer, schedule and Trainer built once: e.g. trainer=gpu without a GPU
    try:
        stages = stages_for(cfg)
        data = make_data(cfg)
        models = {kind: make_model(cfg, data, kind) for kind in dict.fromkeys(s.model for s in stages)}
    except (ValueError, TypeError, FileNotFoundError, InstantiationException) as e:
        raise config_error(e) from e
    check_teacher(cfg, data, models)  # distill: the teacher exists, is real-valued and fits this data and student
    efficiency = {kind: {**precision(m), **summarize(m, tuple(data.input_size)).as_dict()}
                  for kind, m in models.items()}
    return stages, data, efficiency


def run(cfg: DictConfig, job_dir: Path | str, explicit: frozenset[str] | set[str] = frozenset()):
    """Run one job. Returns ``(record, action)`` with action ``started`` / ``resumed`` / ``skipped``, or ``None``
    in a DDP helper rank. Raises ConfigError for a refused config (nothing recorded) and re-raises a training
    failure after recording it."""
    job_dir = Path(job_dir)
    key = job_key(cfg)
    rank_zero = global_rank() == 0
    try:
        stages, data, efficiency = prepare(cfg, frozenset(explicit))
    except ConfigError as e:
        if rank_zero:
            _pointer(job_dir, key, "refused", error=str(e))
        raise
    index = JobIndex(cfg.output_root)
    if not rank_zero:
        return _run_helper(cfg, key, job_dir, index, stages, data)
    _guard_against_orphaning()
    try:
        lock = index.hold(key)
    except JobBusy as e:
        _pointer(job_dir, key, "busy", error=str(e))
        raise
    try:
        previous = index.get(key) if cfg.resume else None
        if previous is not None and previous.status == "finished":
            _pointer(job_dir, key, "skipped", record=previous.run_dir)
            return previous, "skipped"
        if previous is not None:
            record, action = previous, "resumed"
            record.stages = {s.name: record.stages.get(s.name) or s.record() for s in stages}
            record.resume()
        else:
            record, action = RunRecord.start(job_dir, job_key=key, study=cfg.study, options=flat_options(cfg),
                                              config=OmegaConf.to_container(cfg, resolve=True),
                                              stages=[s.record() for s in stages]), "started"
        _pointer(job_dir, key, action, record=record.run_dir)
        index.set(key, record.run_dir)
        record.efficiency = efficiency[stages[-1].model]   # the model the run hands over
        for s in stages:
            record.stages[s.name].efficiency = efficiency[s.model]
        record.save()
        job = Job(cfg, key, Path(record.run_dir), rank_zero=True, resuming=action == "resumed")
        header = (f"==== attempt {record.attempts} ({action}) of run {record.run_id}, pid {os.getpid()} "
                  f"on {platform.node()} ====")
        with logging_into(record.log_path, header):
            try:
                run_recipe(job, record, data, stages)
                kill_point("job_end")
            except BaseException as e:
                if (stop := interruption(e)) is not None:
                    stop.record = record   # the console's line names the record
                    log.info("interrupted by %s: %s", signal_name(stop.signum), RESUME_HINT)
                    record.finish("interrupted", error=f"interrupted by {signal_name(stop.signum)}",
                                  signum=stop.signum)
                else:
                    record.finish("failed", error=cause_line(e), traceback=traceback.format_exc(limit=20))
                raise
            record.finish("finished")
        return record, action
    finally:
        lock.release()


class _ReadOnlyRecord(RunRecord):
    def save(self) -> None:  # a DDP helper rank never writes the record
        pass


def _run_helper(cfg, key, job_dir, index, stages, data) -> None:
    """A DDP helper rank: the same stages as rank zero, from rank zero's record (read only), writing nothing."""
    previous = index.get(key) if cfg.resume else None
    if previous is not None:
        record = _ReadOnlyRecord(**{**{k: v for k, v in asdict(previous).items()}, "stages": previous.stages})
    else:
        record = _ReadOnlyRecord(job_key=key, run_id="helper", study=cfg.study, run_dir=str(job_dir), options={},
                                 config={}, stages={s.name: s.record() for s in stages})
    record.stages = {s.name: record.stages.get(s.name) or s.record() for s in stages}
    job = Job(cfg, key, Path(record.run_dir), rank_zero=False, resuming=previous is not None)
    run_recipe(job, record, data, stages)
    return None


def _guard_against_orphaning() -> None:
    """In a launcher's worker process (joblib's loky workers), exit when the process that started the sweep
    dies, so that a killed sweep leaves no worker training on and holding job locks. The record stays
    ``running`` and the next run of the sweep resumes it."""
    try:
        target = str(HydraConfig.get().launcher.get("_target_", ""))
    except ValueError:
        return
    if "joblib" not in target.lower():
        return
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True, name="onebit-orphan-guard").start()


# ----------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------


def summary_lines(record: RunRecord) -> list[str]:
    """The short summary printed at the end of a run: one line per stage (``onebit.tracking.progress.stage_result``)."""
    seconds = record.training_seconds or 0.0
    smoke = f"  SMOKE RUN ({', '.join(record.smoke)}): not counted in tables" if record.smoke else ""
    attempts = f" over {record.attempts} attempts" if record.attempts > 1 else ""
    lines = [f"onebit: {record.status} in {seconds:.1f}s{attempts}  ({record.run_dir}){smoke}"]
    width = max([10, *(len(n) for n in record.stages)])
    lines += [f"  {st.name:<{width}} {bits(st):<8} {stage_result(st)}" for st in record.stages.values()]
    return lines


def job_outcome(job_dir: Path, output_root: Path | str | None = None) -> tuple[str, str]:
    """(state, detail) of one job of a sweep: finished, skipped, failed, refused, running elsewhere,
    interrupted, or corrupt record."""
    try:
        p = read_pointer(job_dir)
    except (OSError, ValueError) as e:
        return "corrupt", f"{Path(job_dir) / POINTER}: {e}"
    if p is None:
        return "failed", f"{job_dir}: no record (the job stopped before it started)"
    if p.get("action") in ("refused", "busy"):
        return ("running elsewhere" if p["action"] == "busy" else "refused"), f"{_job_name(job_dir)}: {p.get('error')}"
    try:
        record = read_record(Path(p["record"]) / RECORD_NAME)
    except (CorruptRecordError, KeyError, TypeError) as e:
        return "corrupt", f"corrupt record: {e}"
    if record.status == "finished":
        return ("skipped" if p.get("action") == "skipped" else "finished"), record.run_dir
    if record.status == "failed":
        return "failed", f"{record.run_dir}: {record.error}"
    if record.status == "interrupted":
        return "interrupted", f"{record.run_dir}: {record.error} ({RESUME_HINT})"
    if output_root is not None and JobIndex(output_root).running(record.job_key):
        return "running elsewhere", f"{record.run_dir}: running in {JobIndex(output_root).holder(record.job_key)}"
    return "interrupted", f"{record.run_dir}: interrupted (run the sweep again to resume it)"


def _job_name(job_dir: Path) -> str:
    """``job 3 (seed=2 sign=ste)``: a job by its number and overrides (its directory is removed at the sweep's end:
    it holds no run, ``onebit.records.layout.remove_stub``)."""
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(Path(job_dir) / ".hydra" / "overrides.yaml"))
    except (OSError, ValueError):
        overrides = []
    return f"job {Path(job_dir).name}" + (f" ({' '.join(map(str, overrides))})" if overrides else "")


def sweep_job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a multirun, in job order. A job whose ``study`` differs from the sweep's (``-m
    debug=a,b``, ``-m sweeps=a,b``) has its directory under ``sweeps/<its study>/`` with the same
    ``<time>-<uid>`` name (conf/hydra/onebit.yaml), so every study's folder of that name is searched."""
    parents = {sweep_dir} | set(sweep_dir.parent.parent.glob(f"*/{sweep_dir.name}"))
    dirs = [p for parent in parents if parent.is_dir() for p in parent.iterdir()
            if p.is_dir() and not p.name.startswith(".")]
    return sorted(dirs, key=lambda p: (len(p.name), p.name, str(p)))


class SweepSummary(Callback):
    """At the end of a multirun: what happened to each job, one line per job that did not finish, and a
    non-zero exit if any job did not finish (a failing job never stops the others)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        job_dirs = sweep_job_dirs(sweep_dir)
        outcomes = [job_outcome(d, config.get("output_root")) for d in job_dirs]
        for d in job_dirs:  # directories that hold no run; then the sweep's folders if nothing is left in them
            remove_stub(d)
        for parent in {d.parent for d in job_dirs} | {sweep_dir}:
            if remove_if_empty(parent, names=("multirun.yaml",)):
                remove_if_empty(parent.parent)
        done = [o for o in outcomes if o[0] in ("finished", "skipped")]
        skipped = sum(o[0] == "skipped" for o in outcomes)
        bad = [o for o in outcomes if o[0] not in ("finished", "skipped")]
        note = f" ({skipped} skipped: finished before)" if skipped else ""
        counts = {}
        for state, _ in bad:
            counts[state] = counts.get(state, 0) + 1
        failed = sum(n for s, n in counts.items() if s in ("failed", "refused"))
        others = "".join(f", {n} {s}" for s, n in counts.items() if s not in ("failed", "refused"))
        where = sweep_dir if sweep_dir.exists() else "no new run: no sweep directory kept"
        print(f"onebit sweep: {len(done)} finished{note}, {failed} failed{others}  ({where})")
        for state, detail in bad:
            print(f"  {state.upper()} {detail}")
        if bad:
            raise SystemExit(1)


def is_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False
