"""W&B runs of training and the tables: start-up (online falls back to offline with one warning,
:func:`start_wandb`; credentials, :func:`wandb_credentials`), the stage's WandbLogger (:func:`wandb_logger`: group,
job type, id, tags, config), ``define_metric`` curves and summaries, the record's W&B entry (:func:`wandb_info`),
and, with ``logger.log_artifacts=true``, the artifacts: the pretrained twin, each stage's best checkpoint, and the
twin as an input of the stage it initialises (W&B's lineage). wandb itself is imported only where a run is used.

**A resumed stage continues its W&B run's steps** (:func:`continue_steps`). What wandb 0.31.0 does, read from its
sources (``wandb/sdk``, ``wandb/cli/beta_sync.py``, the wandb-core ``runsync`` and ``runupserter`` packages) and
checked on the offline files it writes:

- ``wandb.init(id=<the stage's id>, resume="allow", mode="offline")`` for a second attempt writes a second directory
  ``<run dir>/wandb/offline-run-<time>-<id>/`` (``...-<id>-1`` when two start within one second) holding its own
  ``run-<id>.wandb``. Offline, wandb-core ignores the resume mode (``updateMetadataForResume``: "Ignore the resume
  mode when offline"), so the run record says ``resumed: false, starting_step: 0`` and ``_step`` starts at 0 again;
  ``resume_from`` and ``fork_from`` are server-side (rewind and fork need the W&B server) and do nothing offline.
- ``wandb sync`` (0.31: implemented in wandb-core; ``--append`` is gone: "No such option") groups the files it is
  given in one call by run (entity/project/id of each file's run record) and uploads each run's files one after
  the other in order of the run record's ``start_time``; files of one run given in separate calls are separate
  uploads. When the later file is uploaded, the server resumes the run and appends to its history, but W&B's
  history is indexed by ``_step``: rows whose ``_step`` does not continue after the steps already there clash with
  them (wandb issues #3841 and #5865: the later attempt replaces the earlier one's history; PR #4848's
  ``--append`` only worked for disjoint, increasing steps).
- wandb-core writes the ``.wandb`` file every ``x_transaction_log_flush_interval`` seconds (default 15) and at the
  run's end; a SIGKILLed attempt keeps only what was written (a short one: the 7-byte header, no run record, and
  ``wandb sync`` then fails the whole call: "didn't find run info"). onebit sets the interval to
  :data:`FLUSH_SECONDS` (:func:`flush_settings`) and ``onebit-sync`` leaves such folders out.

So onebit makes the offline files right by themselves: before a stage's W&B run logs anything, the ``_step`` of the
earlier attempts of the same W&B run is read back from their ``.wandb`` files beside it (a killed attempt cannot
write its last step anywhere else), and the new run moves its step counter past it with
``run.log({}, step=last + 1, commit=False)``: no row is written, and the next ``log`` (Lightning's) gets that step.
A stage's first attempt has no earlier files and logs exactly what it logged before. ``onebit-sync`` then gives
every attempt of a run to one ``wandb sync`` call, listed in the order they ran (:mod:`onebit.cli.sync`). ``epoch``
and ``trainer/global_step`` continue by themselves, as the trainer resumes from its checkpoint; ``_runtime`` counts
each attempt's own seconds.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from onebit.core.errors import cause_line
from onebit.core.paths import CONF_DIR
from onebit.core.registry import TAG_OPTIONS
from onebit.records.layout import stage_checkpoint
from onebit.tracking.wandb_record import SUMMARIES, twin_stage, wandb_config

TAG_MAX = 64  # W&B refuses longer tags


def log_artifacts(cfg: DictConfig) -> bool:
    node = cfg.get("logger")
    return bool(node is not None and node.get("log_artifacts", False))


def is_wandb_class(cls) -> bool:
    from pytorch_lightning.loggers import WandbLogger

    return isinstance(cls, type) and issubclass(cls, WandbLogger)


def is_wandb(logger) -> bool:
    return logger is not None and is_wandb_class(type(logger))


def run_tags(record, stage: str) -> list[str]:
    """W&B tags: ``study=<study>``, ``stage=<stage>``, ``<option>=<value>`` for each :data:`TAG_OPTIONS` that is
    set (``bn_retrain=true`` when on), and ``smoke`` for a smoke run; each cut to W&B's 64 characters."""
    tags = [f"study={record.study}", f"stage={stage}"]
    options = dict(record.options)
    if options.get("bn_retrain"):
        tags.append("bn_retrain=true")
    for key in TAG_OPTIONS:
        value = options.get(key)
        if value is not None:
            tags.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    if record.smoke:
        tags.append("smoke")
    return [t[:TAG_MAX] for t in tags]


def wandb_run_path(info: dict | None) -> str | None:
    """``[entity/]project/id`` of a stage's W&B run from its record entry (:func:`wandb_info`)."""
    if not info or not info.get("id"):
        return None
    return "/".join(str(p) for p in (info.get("entity"), info.get("project"), info["id"]) if p)


def flush_settings() -> dict:
    """W&B settings that keep a killed attempt's offline history: wandb 0.31's wandb-core buffers the run's
    ``.wandb`` file and writes it every ``x_transaction_log_flush_interval`` seconds (default 15) or at the run's
    end; a process killed (SIGKILL, a preempted job) loses what was not written: for a short stage, the whole file
    but its 7-byte header (not even the run record, and ``wandb sync`` stops on such a file). onebit writes it every
    :data:`FLUSH_SECONDS` instead. Empty where the installed wandb has no such setting."""
    import wandb

    fields = getattr(wandb.Settings, "model_fields", {})
    return {"x_transaction_log_flush_interval": FLUSH_SECONDS} if "x_transaction_log_flush_interval" in fields else {}


FLUSH_SECONDS = 0.5


def wandb_logger(cls, cfg: DictConfig, stage: str, record, args: dict):
    """The stage's WandbLogger, its run started (:func:`start_wandb`); its ``.wandb`` file written every
    :data:`FLUSH_SECONDS` (:func:`flush_settings`; ``logger.settings`` overrides)."""
    onebit_args = {"group": record.study, "job_type": stage, "name": f"{record.study}-{record.run_id[:8]}-{stage}",
                   "id": f"{record.run_id}-{stage}", "resume": "allow", "save_dir": str(record.run_dir),
                   "config": wandb_config(record, stage), "tags": run_tags(record, stage), "reinit": "finish_previous",
                   "settings": flush_settings()}
    kwargs = {**onebit_args, **args, "tags": [*onebit_args["tags"], *(args.get("tags") or [])],
              "settings": {**onebit_args["settings"], **(args.get("settings") or {})}}
    if os.environ.get("WANDB_SWEEP_ID") and stage == next(reversed(record.stages)) and os.environ.get("WANDB_RUN_ID"):
        kwargs["id"] = os.environ["WANDB_RUN_ID"]  # under `wandb agent`: the agent's run holds the final stage
    return start_wandb(lambda kw: _start(cls, kw, cfg, record, stage), kwargs)


def start_wandb(start, kwargs: dict):
    """``start(kwargs)``: start a W&B run (``kwargs``: ``wandb.init`` / WandbLogger arguments) and return what
    ``start`` returns. Online mode that cannot start (no API key, for which W&B would prompt; no server within
    ``settings.init_timeout``) goes on offline after one warning line: W&B's service torn down, then a fresh ``id``
    (the service may still hold the one the failed attempt registered). Used by training and ``analysis/tables.py
    --to-wandb``."""
    os.environ.setdefault("WANDB_SILENT", "true")
    if kwargs.get("mode") != "online":
        return start(kwargs)
    try:
        if not wandb_credentials():
            raise RuntimeError("no W&B API key (set WANDB_API_KEY or run `wandb login`)")
        return start(kwargs)
    except Exception as e:  # noqa: BLE001 (W&B raises many types when it cannot start)
        import wandb

        where = kwargs.get("save_dir") or kwargs.get("dir")
        print(f"onebit: warning: W&B could not start in online mode ({cause_line(e)}); logging offline"
              f"{f' to {where}/wandb' if where else ''} instead (upload later with `python -m onebit.cli.sync`)",
              file=sys.stderr)
        with contextlib.suppress(Exception):  # release the half-started online run
            wandb.teardown()
        offline = {**kwargs, "mode": "offline"}
        if kwargs.get("id"):
            offline["id"] = f"{kwargs['id']}-offline-{time.strftime('%Y%m%d%H%M%S')}"
        return start(offline)


def wandb_defaults() -> dict:
    """``project``, ``entity`` and ``mode`` of ``conf/logger/wandb.yaml`` (``WANDB_PROJECT``, ``WANDB_ENTITY``,
    ``WANDB_MODE`` or its defaults), for W&B runs outside training (``analysis/tables.py --to-wandb``)."""
    node = OmegaConf.load(CONF_DIR / "logger" / "wandb.yaml")
    return {key: node[key] for key in ("project", "entity", "mode")}


def _start(cls, kwargs: dict, cfg: DictConfig, record, stage: str):
    """Build the WandbLogger and start its run now (so that a failure to connect is handled by the caller)."""
    logger = cls(**kwargs)
    # Lightning's WandbLogger passes `anonymous=None` to wandb.init unless asked for anonymous logging, and W&B
    # 0.23+ warns about any `anonymous` ("The anonymous setting has no effect..."): leave it out at the source
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
    run = logger.experiment
    _define_metrics(run)
    continue_steps(run)
    if log_artifacts(cfg):
        _use_twin(run, record, stage)
    return logger


def _define_metrics(run) -> None:
    """Curves against ``epoch`` (Lightning logs it with every metric); each :data:`SUMMARIES` metric's summary
    holds its best and last value under its own key (``val/top1`` -> ``{"max": .., "last": ..}``)."""
    run.define_metric("epoch", hidden=True)
    for pattern in ("train/*", "val/*", "lr-*"):
        run.define_metric(pattern, step_metric="epoch")
    for key, best in SUMMARIES.items():
        run.define_metric(key, step_metric="epoch", summary=f"{best},last")


# ----------------------------------------------------------------------------------------------------------
# A resumed stage: its W&B run's steps continue after the earlier attempts' (see the module docstring)
# ----------------------------------------------------------------------------------------------------------

LOG_BLOCK = 32768  # W&B's transaction log: LevelDB-style blocks
LOG_HEADER = 7     # ":W&B", magic (2 bytes), version (1 byte)


def wandb_log_records(path: Path | str):
    """The protobuf Records of a W&B transaction log (``run-<id>.wandb``), in the order they were written: a
    7-byte header (``:W&B``, magic, version), then 32 KiB blocks of chunks (crc32 4 bytes, length 2, type 1:
    full, first, middle, last). A file cut short (its process killed) yields the records before the cut; a file
    that is not a W&B log yields nothing. wandb 0.31 has no Python reader (wandb-core reads them), hence this."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    try:
        data = Path(path).read_bytes()
    except OSError:
        return
    if data[:4] != b":W&B":
        return
    pos, buf = LOG_HEADER, b""
    while pos + 7 <= len(data):
        if LOG_BLOCK - pos % LOG_BLOCK < 7:  # a block's trailer: padding
            pos += LOG_BLOCK - pos % LOG_BLOCK
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        end = pos + 7 + length
        if end > len(data):  # cut short
            return
        chunk, pos = data[pos + 7:end], end
        if kind == 0:  # a zero chunk (LevelDB's reserved type): nothing
            continue
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            try:
                record.ParseFromString(buf)
            except DecodeError:
                return
            yield record


def log_run_info(path: Path | str) -> dict | None:
    """``{"id", "entity", "project", "start"}`` of the run record in a ``.wandb`` file (``start``: its
    ``start_time`` in seconds, what ``wandb sync`` orders a run's files by), or ``None`` without one."""
    for record in wandb_log_records(path):
        if record.WhichOneof("record_type") == "run":
            run = record.run
            return {"id": run.run_id, "entity": run.entity, "project": run.project,
                    "start": run.start_time.seconds + run.start_time.nanos / 1e9}
    return None


def last_step(path: Path | str) -> int | None:
    """The highest history ``_step`` in a ``.wandb`` file (``None``: no history row)."""
    steps = [r.history.step.num for r in wandb_log_records(path) if r.WhichOneof("record_type") == "history"]
    return max(steps) if steps else None


def earlier_attempts(run) -> list[Path]:
    """The ``.wandb`` files of the other attempts of ``run`` (the same id) in its W&B directory: every
    ``<wandb dir>/*/run-<id>.wandb`` except the run's own (``latest-run`` is a link to one of them)."""
    own = Path(run.settings.sync_file).resolve()
    found = {p.resolve() for p in Path(run.settings.wandb_dir).glob(f"*/run-{run.id}.wandb")}
    return sorted(p for p in found if p != own)


def continue_steps(run) -> int | None:
    """Make ``run`` log its first row after every ``_step`` of its earlier attempts (:func:`earlier_attempts`):
    ``run.log({}, step=last + 1, commit=False)`` moves wandb's step counter without writing a row. Nothing happens
    for a first attempt, or where the run already starts past them (online, resumed from the server's history).
    Returns the step it moved to, else ``None``. (``mode="disabled"`` runs log nothing: left alone.)"""
    if run.settings.mode == "disabled":
        return None
    steps = [s for s in map(last_step, earlier_attempts(run)) if s is not None]
    if not steps or max(steps) + 1 <= run.starting_step:
        return None
    step = max(steps) + 1
    run.log({}, step=step, commit=False)
    return step


def wandb_info(logger) -> dict | None:
    if not is_wandb(logger):
        return None
    run = logger.experiment
    return {"id": run.id, "mode": run.settings.mode, "project": run.project,
            **({"entity": run.entity} if run.entity else {})}


def wandb_credentials() -> bool:
    """Whether online W&B can authenticate without asking (an API key in the environment or in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


# ----------------------------------------------------------------------------------------------------------
# A stage's end: its summary; artifacts (logger.log_artifacts=true): the twin, each stage's best checkpoint
# ----------------------------------------------------------------------------------------------------------


def twin_artifact_name(key: str) -> str:
    return f"twin-{key}"


def log_twin(logger, cfg: DictConfig, key: str, entry: Path, meta: dict) -> None:
    """The pretrained twin (the pretrain cache entry ``entry``: ``weights.pt``, ``meta.json``) as the W&B artifact
    ``twin-<pretrain key>`` (type ``model``), an output of the stage run that trained it; its metadata names the
    key, the run directory and the W&B run that trained it."""
    if not (is_wandb(logger) and log_artifacts(cfg)):
        return
    import wandb

    run = logger.experiment
    art = wandb.Artifact(twin_artifact_name(key), type="model",
                         metadata={"pretrain_key": key, "trained_by": meta.get("trained_by"),
                                   "trained_by_run": meta.get("trained_by_run"), "wandb_run_id": run.id,
                                   "metrics": meta.get("metrics", {})})
    for name in ("weights.pt", "meta.json"):
        art.add_file(str(Path(entry) / name), name=name, policy="immutable")
    run.log_artifact(art)


def _use_twin(run, record, stage: str) -> None:
    """Declare the twin's artifact as an input of the stage it initialises (W&B's lineage graph). wandb 0.31's
    ``Run.use_artifact`` refuses offline runs (``TypeError: Cannot use artifact when in offline mode``), so offline
    the lineage is the ``twin/*`` config (:func:`twin_config`); online a twin trained without artifacts (or
    offline and not yet synced) is not found: one warning, the run goes on."""
    twin = twin_stage(record)
    if twin is None or not twin.cache or record.stages[stage].init != twin.name or run.settings.mode != "online":
        return
    name = f"{twin_artifact_name(twin.cache['key'])}:latest"
    try:
        run.use_artifact(name, type="model")
    except Exception as e:  # noqa: BLE001 (lineage is optional: the run goes on)
        print(f"onebit: warning: W&B artifact {name} could not be declared as input of stage {stage} "
              f"({cause_line(e)}); its origin is in the run config (twin/trained_by_run)", file=sys.stderr)


def log_stage_end(logger, cfg: DictConfig, run_dir: Path | str, stage_record) -> None:
    """Before a stage's W&B run ends: each :data:`SUMMARIES` metric's summary from the stage record's history,
    ``{best: best over epochs, "last": last epoch's}`` (``val/top1``: the record's ``val/top1_best`` and
    ``val/top1``); W&B computes ``define_metric`` summaries per process, so for a resumed stage they would cover
    its last attempt only, while the history holds every epoch of every attempt. With ``logger.log_artifacts``,
    the stage's best checkpoint (``<run dir>/checkpoints/<stage>/best.ckpt``, if any) as the artifact
    ``model-<W&B run id>`` (type ``model``, alias ``best``)."""
    if not is_wandb(logger):
        return
    import wandb

    run = logger.experiment
    for key, best in SUMMARIES.items():
        values = [h[key] for h in stage_record.history if key in h]
        if values:
            run.summary[key] = {best: max(values) if best == "max" else min(values), "last": values[-1]}
    path = stage_checkpoint(run_dir, stage_record.name, "best")
    if log_artifacts(cfg) and path is not None:
        art = wandb.Artifact(f"model-{run.id}", type="model",
                             metadata={"stage": stage_record.name, "run_dir": str(run_dir),
                                       "checkpoint": str(path.relative_to(run_dir)),
                                       "val/top1_best": stage_record.metrics.get("val/top1_best")})
        art.add_file(str(path), name=path.name, policy="immutable")
        run.log_artifact(art, aliases=["best"])
