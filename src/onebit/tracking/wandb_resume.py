"""A resumed stage is one W&B run with one history: its steps continue after the earlier attempts'
(:func:`continue_steps`), and the epochs those attempts did not log are filled in from the stage's own history
(:class:`onebit.tracking.replay.ReplayMissingEpochs`).

**Steps.** What wandb 0.31.0 does, read from its sources (``wandb/sdk``, ``wandb/cli/beta_sync.py``, the wandb-core
``runsync`` and ``runupserter`` packages) and checked on the offline files it writes:

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
  :data:`~onebit.tracking.wandb_run.FLUSH_SECONDS` (:func:`~onebit.tracking.wandb_run.flush_settings`), and
  ``onebit-sync`` leaves such folders out.

So onebit makes the offline files right by themselves: before a stage's W&B run logs anything, the ``_step`` of the
earlier attempts of the same W&B run is read back from their ``.wandb`` files beside it (a killed attempt cannot
write its last step anywhere else), and the new run moves its step counter past it with
``run.log({}, step=last + 1, commit=False)``: no row is written, and the next ``log`` (Lightning's) gets that step.
A stage's first attempt has no earlier files and logs exactly what it logged before. ``onebit-sync`` then gives
every attempt of a run to one ``wandb sync`` call, listed in the order they ran (:mod:`onebit.cli.sync`). ``epoch``
and ``trainer/global_step`` continue by themselves, as the trainer resumes from its checkpoint; ``_runtime`` counts
each attempt's own seconds.

**Epochs no attempt logged** are filled in from the stage's history by :mod:`onebit.tracking.replay`, which reads
what the earlier attempts' ``.wandb`` files hold through :func:`logged_epochs`."""

from __future__ import annotations

import json
from pathlib import Path

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


def logged_epochs(paths) -> dict[int, dict]:
    """``{epoch: {key: value}}`` of the history rows with an ``epoch`` in the ``.wandb`` files ``paths`` (keys as
    W&B shows them: a nested key joined with ``/``), ``trainer/global_step`` included."""
    found: dict[int, dict] = {}
    for path in paths:
        for record in wandb_log_records(path):
            if record.WhichOneof("record_type") != "history":
                continue
            row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
            if isinstance(row.get("epoch"), (int, float)):
                found.setdefault(int(row["epoch"]), {}).update(row)
    return found
