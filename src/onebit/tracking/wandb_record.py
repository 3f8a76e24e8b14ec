"""The one mapping between a W&B run and the record: what a stage's W&B run config holds
(:func:`stage_config`, :func:`wandb_config`, with the twin's origin, :func:`twin_config`), which of its keys are not
the record's options (:data:`NOT_OPTIONS`), which metrics' summaries hold a best and a last value
(:data:`SUMMARIES`) and how a summary reads back into the record's metrics (:func:`metrics_from_summary`).
Training writes W&B runs through it (:mod:`onebit.tracking.wandb_run`); the W&B loader, ``onebit.results.load``,
reads them back through it. It imports neither wandb nor Lightning.
"""

from __future__ import annotations

from onebit.core.registry import VAL_TOP1, VAL_TOP1_BEST

# keys of :func:`stage_config` / :func:`wandb_config` that are not the record's options (nor are the namespaced ones,
# ``efficiency/*`` and ``twin/*``): the W&B loader (``onebit.results.load``) leaves them out of the options
NOT_OPTIONS = ("job_key", "run_id", "smoke", "stage", "config")
# W&B run summary: per metric, the best epoch's value (``max`` or ``min``) beside the last one, under one key
SUMMARIES = {"val/top1": "max", "val/top5": "max", "val/loss": "min", "train/top1": "max", "train/loss": "min"}
# the record's name for a summary's best value (``onebit.training.loop.stage_metrics``)
BEST_NAMES = {(VAL_TOP1, "max"): VAL_TOP1_BEST}


def stage_config(record, stage: str) -> dict:
    """The hyperparameters of a stage's logger run: the record's options, ids, smoke reasons (empty: not a smoke
    run), the stage, its model's precision and its twin's origin (:func:`twin_config`)."""
    return {**record.options, "job_key": record.job_key, "run_id": record.run_id, "smoke": record.smoke,
            "stage": stage, **_stage_bits(record, stage), **twin_config(record, stage)}


def wandb_config(record, stage: str) -> dict:
    """A stage's W&B run config: :func:`stage_config`, the final model's ``efficiency/*`` summary and the full
    config (the W&B loader, ``onebit.results.load``, reads the record back from it)."""
    eff = record.efficiency or {}
    return {**stage_config(record, stage), **{f"efficiency/{k}": v for k, v in eff.items()}, "config": record.config}


def _stage_bits(record, stage: str) -> dict:
    """This stage's model precision (``A1/W32`` for step 1 of the two-step scheme), beside the final model's
    ``efficiency/*`` summary."""
    eff = record.stages[stage].efficiency or {} if stage in record.stages else {}
    return {f"efficiency/stage_{k}_bits": eff[k] for k in ("activations", "weights") if k in eff}


def twin_stage(record):
    """The stage served by the pretrain cache (the real-valued twin), or ``None``."""
    return next((s for s in record.stages.values() if s.init == "cache"), None)


def twin_config(record, stage: str) -> dict:
    """Where the twin that a later stage descends from came from (the twin stage's ``cache`` entry): ``twin/key``
    (the pretrain cache key), ``twin/cache_hit``, ``twin/trained_by`` (the run directory that trained it) and
    ``twin/trained_by_run`` (its W&B run, ``[entity/]project/id``; ``None`` if it was trained without W&B). Empty
    for the twin's own stage."""
    twin = twin_stage(record)
    if twin is None or twin.name == stage or not twin.cache:
        return {}
    cache = twin.cache
    return {"twin/key": cache["key"], "twin/cache_hit": bool(cache.get("hit")), "twin/trained_by":
            cache.get("trained_by"), "twin/trained_by_run": cache.get("trained_by_run")}


def metrics_from_summary(summary: dict) -> dict:
    """A stage's metrics from its W&B run summary: a :data:`SUMMARIES` metric (``{"max": .., "last": ..}``) gives
    its last value, and its best under the record's name (:data:`BEST_NAMES`, ``val/top1_best``); plain values
    stay as they are."""
    out = {}
    for key, value in summary.items():
        if hasattr(value, "keys"):  # a dict, or the public API's SummarySubDict
            value = {k: value[k] for k in value.keys()}  # noqa: SIM118 (SummarySubDict has no __iter__)
        if isinstance(value, dict) and "last" in value:
            out[key] = value["last"]
            for op in ("max", "min"):
                if (key, op) in BEST_NAMES and op in value:
                    out[BEST_NAMES[key, op]] = value[op]
        elif not isinstance(value, dict):
            out[key] = value
    return out
