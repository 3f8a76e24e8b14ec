"""Rebuild the papers' ablation tables from run records (or from W&B) and check the papers' conclusions.

Data model: one row per (run, stage) with the run's options and the stage's metrics (:func:`load_runs`,
:func:`rows_from_wandb`). A *cell* of a table is a set of options; its value is the mean +- std of the metric over
seeds, with n. A cell with failed or unfinished runs says so (``2 failed``) and its mean uses only finished runs,
shown with their n: nothing is silently dropped.

Bi-Real Table 1 layout: rows init x weight update x activation backward (the paper's "original" = plain / STE,
"proposed" = magnitude-aware / ApproxSign, plus the real-valued rows from each job's pretrain stage), columns
structure x depth, our cell beside the paper's value.

Bethge et al. 2018 layout (the from-scratch ResNetE-18 ablation, their Tables 2-3): rows XNOR scaling (no =
``weight=plain``, yes = ``weight=xnor``) x 1x1 downsample conv (``model.downsample``) x ApproxSign (yes =
``sign=approx``, no = ``sign=ste``), columns by dataset (the ``data`` option), our cell beside the paper's.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from onebit import paper
from onebit.records import CorruptRecordError, read_record

OPTION_KEYS = ("study", "data", "model", "sign", "weight", "pretrain", "shortcut", "structure", "depth", "seed",
               "epochs", "bn_retrain", "experiment", "sign_t", "nonlinearity", "downsample", "scaling")
FINAL_STAGES = ("bn_retrain", "binary", "real")  # the stage whose metrics represent a run, first present wins
METRICS = ("test/top1", "test/top5", "val/top1", "val/top1_best", "val/top5")
STRUCTURE_LABEL = {"bireal": "Bi-Real", "res": "Res", "plain": "Plain"}
WEIGHT_TO_PAPER = {"plain": "original", "magnitude_aware": "proposed"}
SIGN_TO_PAPER = {"ste": "original", "approx": "proposed"}


class NoRunsError(LookupError):
    """The query matched no runs."""


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------


def rows_from_record(rec: dict) -> list[dict]:
    """One row per stage of a record (a run that failed before any stage still gives one row, stage None)."""
    opts = {k: rec["options"].get(k) for k in OPTION_KEYS}
    model_cfg = (rec.get("config") or {}).get("model") or {}
    opts["nonlinearity"] = opts.get("nonlinearity") or model_cfg.get("nonlinearity")
    opts["downsample"] = opts.get("downsample") or model_cfg.get("downsample")
    base = {**opts, "run_dir": rec.get("run_dir"), "job_key": rec.get("job_key"), "run_status": rec["status"],
            "error": rec.get("error"), "started": (rec.get("timings") or {}).get("started")}
    stages = rec.get("stages") or {}
    if not stages:
        return [{**base, "stage": None, "stage_status": rec["status"]}]
    rows = []
    for name, st in stages.items():
        m = st.get("metrics") or {}
        rows.append({**base, "stage": name, "stage_status": st.get("status"),
                     "cache_key": (st.get("cache") or {}).get("key"), **{k: m.get(k) for k in METRICS}})
    return rows


def load_runs(root: Path | str) -> tuple[pd.DataFrame, list[str]]:
    """All records under ``root``: (rows, problems). A corrupt or truncated record is reported by path in
    ``problems`` and skipped; the others load."""
    rows, problems = [], []
    for path in sorted(Path(root).rglob("record.json")):
        try:
            rows.extend(rows_from_record(read_record(path)))
        except CorruptRecordError as e:
            problems.append(str(e))
    return pd.DataFrame(rows, columns=_columns()), problems


def _columns() -> list[str]:
    return [*OPTION_KEYS, "run_dir", "job_key", "run_status", "error", "started", "stage", "stage_status",
            "cache_key", *METRICS]


_TARGET_OPTIONS = {
    "SteSign": "ste", "ApproxSign": "approx", "SwishSign": "swish",
    "PlainSign": "plain", "MagnitudeAware": "magnitude_aware", "MagnitudeAwareOfficial": "magnitude_aware_official",
    "XnorScaling": "xnor",
}


def _nested(config: dict, dotted: str):
    node = config
    for part in dotted.replace("/", ".").split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _option(config: dict, key: str):
    """An option from a W&B run config: the flat key onebit logs (``sign``), or else derived from the nested
    resolved config (``config.sign._target_`` -> ``approx``, ``config.pretrain.name``...)."""
    value = config.get(key)
    if value is not None and not isinstance(value, dict):
        return value
    nested = config.get("config") if isinstance(config.get("config"), dict) else config
    if key in ("sign", "weight"):
        target = _nested(nested, f"{key}._target_")
        return _TARGET_OPTIONS.get(str(target).rsplit(".", 1)[-1]) if target else None
    if key == "pretrain":
        return _nested(nested, "pretrain.name")
    if key in ("depth", "structure", "nonlinearity", "downsample"):
        value = _nested(nested, f"model.{key}")
        if key == "structure" and _nested(nested, "model.shortcut") is False:
            return "plain"
        return value
    return _nested(nested, key)


def rows_from_wandb(runs) -> pd.DataFrame:
    """Rows from W&B runs: an iterable of objects with ``config``, ``summary``, ``job_type``, ``state``, ``id``,
    ``group`` (``wandb.Api().runs(...)``). Metrics come from the keys logged explicitly (``test/top1``,
    ``val/top1_best``...). A run's stage is its ``job_type``."""
    rows = []
    for run in runs:
        config = dict(run.config)
        summary = dict(run.summary) if run.summary is not None else {}
        state = {"finished": "finished", "failed": "failed", "crashed": "failed", "killed": "failed"}.get(
            run.state, "running")
        opts = {k: _option(config, k) for k in OPTION_KEYS}
        opts["study"] = opts.get("study") or getattr(run, "group", None)
        rows.append({**opts, "run_dir": f"wandb:{run.id}", "job_key": config.get("job_key") or run.id,
                     "run_status": state, "error": None, "started": None, "stage": run.job_type or "binary",
                     "stage_status": state, "cache_key": None,
                     **{k: summary.get(k) for k in METRICS}})
    return pd.DataFrame(rows, columns=_columns())


def load_wandb(entity: str, project: str, group: str | None = None) -> pd.DataFrame:
    """Runs of ``entity/project`` (optionally one group = study) through the W&B public API."""
    import wandb

    path = f"{entity}/{project}"
    try:
        api = wandb.Api(timeout=30)
        runs = list(api.runs(path, filters={"group": group} if group else {}))
    except Exception as e:  # wandb raises several types for missing projects / no network / no credentials
        raise NoRunsError(f"W&B project {path!r} could not be read: {type(e).__name__}: {str(e).splitlines()[0]}")
    if not runs:
        raise NoRunsError(f"W&B project {path!r}{f' group {group!r}' if group else ''} has no runs")
    return rows_from_wandb(runs)


# ----------------------------------------------------------------------------------------------------------
# Cells
# ----------------------------------------------------------------------------------------------------------


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the run's final stage (bn_retrain > binary > real), or its failure row."""
    if df.empty:
        return df
    order = {s: i for i, s in enumerate(FINAL_STAGES)}
    d = df[df["stage"].isin(FINAL_STAGES) | df["stage"].isna() | (df["run_status"] != "finished")].copy()
    d["_rank"] = d["stage"].map(order).fillna(len(order))
    d = d.sort_values("_rank").groupby("run_dir", as_index=False, dropna=False).first()
    return dedupe(d.drop(columns="_rank"))


def dedupe(d: pd.DataFrame) -> pd.DataFrame:
    """The same job run twice (same job_key): keep the latest finished run, else the latest run."""
    if d.empty or d["job_key"].isna().all():
        return d
    d = d.assign(_fin=(d["run_status"] == "finished").astype(int), _t=d["started"].fillna(0))
    d = d.sort_values(["_fin", "_t"]).groupby("job_key", as_index=False, dropna=False).last()
    return d.drop(columns=["_fin", "_t"])


def summarize_cell(values: pd.DataFrame, metric: str) -> dict:
    """mean / std / n over the finished runs of a cell (in %), and how many failed or are unfinished."""
    fin = values[values["run_status"] == "finished"][metric].dropna().astype(float) * 100
    failed = int((values["run_status"] == "failed").sum())
    running = int((values["run_status"] == "running").sum())
    return {"mean": fin.mean() if len(fin) else math.nan, "std": fin.std(ddof=1) if len(fin) > 1 else math.nan,
            "n": int(len(fin)), "failed": failed, "running": running, "seeds": sorted(values["seed"].dropna().tolist())}


def format_cell(c: dict | None) -> str:
    if c is None:
        return "missing"
    parts = []
    if c["n"]:
        std = "" if math.isnan(c["std"]) else f" ± {c['std']:.1f}"
        parts.append(f"{c['mean']:.1f}{std} (n={c['n']})")
    if c["failed"]:
        parts.append(f"{c['failed']} failed")
    if c["running"]:
        parts.append(f"{c['running']} running")
    return ", ".join(parts) if parts else "missing"


def study_table(df: pd.DataFrame, study: str, metric: str = "test/top1") -> pd.DataFrame:
    """Any study: one row per combination of the options that vary within it (seeds aggregated)."""
    d = final_rows(df[df["study"] == study])
    if d.empty:
        raise NoRunsError(f"no runs of study {study!r}")
    axes = [k for k in OPTION_KEYS if k not in ("seed", "study") and d[k].astype(str).nunique() > 1]
    if not axes:
        axes = ["model"]
    out = []
    for key, g in d.groupby(axes, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(axes, key)), metric: format_cell(summarize_cell(g, metric))})
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------------------------------------
# Bi-Real Table 1
# ----------------------------------------------------------------------------------------------------------


def table1_cells(df: pd.DataFrame, metric: str = "test/top1") -> dict:
    """{(init, weight_update, activation_backward, structure, depth): cell} from the rows of Table-1 runs.

    Binary cells come from each run's final stage; the "real" rows from the pretrain stages, one per distinct
    pretrained net (a cache hit shares the twin of an earlier job, so it is counted once)."""
    cells: dict = {}
    fin = final_rows(df)
    fin = fin[fin["pretrain"].isin(["relu", "clip"]) & fin["weight"].isin(list(WEIGHT_TO_PAPER))
              & fin["sign"].isin(list(SIGN_TO_PAPER)) & fin["structure"].isin(list(STRUCTURE_LABEL))]
    for (init, w, s, st, depth), g in fin.groupby(["pretrain", "weight", "sign", "structure", "depth"]):
        cells[(init, WEIGHT_TO_PAPER[w], SIGN_TO_PAPER[s], st, int(depth))] = summarize_cell(g, metric)
    pre = df[(df["stage"] == "pretrain") & df["pretrain"].isin(["relu", "clip"])
             & df["structure"].isin(list(STRUCTURE_LABEL))].copy()
    if not pre.empty:
        pre["run_status"] = pre["stage_status"].where(pre["stage_status"].notna(), pre["run_status"])
        pre = pre.sort_values("run_status").drop_duplicates(subset=["cache_key"], keep="first") \
            if pre["cache_key"].notna().any() else pre
        for (init, st, depth), g in pre.groupby(["pretrain", "structure", "depth"]):
            cells[(init, "real", "real", st, int(depth))] = summarize_cell(g, metric)
    return cells


def table1(df: pd.DataFrame, metric: str = "test/top1") -> pd.DataFrame:
    """Bi-Real Table 1 in the paper's layout, our cells (mean ± std (n)) beside the paper's top-1."""
    cells = table1_cells(df, metric)
    if not cells:
        raise NoRunsError("no runs for Bi-Real Table 1 (options pretrain x weight x sign x structure)")
    ref = paper.load("bireal_table1").set_index(["init", "weight_update", "activation_backward", "structure", "depth"])
    columns = sorted({(k[3], k[4]) for k in cells}, key=lambda c: (c[1], list(STRUCTURE_LABEL).index(c[0])))
    rows = []
    for init in ("relu", "clip"):
        for w, a in (("original", "original"), ("original", "proposed"), ("proposed", "original"),
                     ("proposed", "proposed"), ("real", "real")):
            if not any((init, w, a, *c) in cells for c in columns):
                continue
            row = {"init": init, "weight": {"original": "plain", "proposed": "magnitude_aware", "real": "real"}[w],
                   "activation": {"original": "ste", "proposed": "approx", "real": "real"}[a]}
            for st, depth in columns:
                label = f"{STRUCTURE_LABEL[st]}-{depth}"
                row[label] = format_cell(cells.get((init, w, a, st, depth)))
                key = (init, w, a, st, depth)
                row[f"{label} paper"] = ref.loc[key, "top1"] if key in ref.index else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


CONCLUSIONS = (
    # (name, option column, better, worse)
    ("shortcut > none", "structure", "bireal", "plain"),
    ("ApproxSign > STE", "sign", "approx", "ste"),
    ("magnitude-aware > plain", "weight", "magnitude_aware", "plain"),
    ("clip > ReLU init", "pretrain", "clip", "relu"),
)


def _paired_differences(fin: pd.DataFrame, col: str, better, worse, axes: list[str], metric: str):
    """Runs that differ only in ``col`` (same other ``axes`` and seed): (differences better - worse in points,
    the set of other-axes keys (seed dropped) that have at least one pair)."""
    others = [a for a in axes if a != col] + ["seed"]
    a = fin[fin[col] == better].set_index(others)[metric].astype(float) * 100
    b = fin[fin[col] == worse].set_index(others)[metric].astype(float) * 100
    a, b = a[~a.index.duplicated()], b[~b.index.duplicated()]
    common = a.index.intersection(b.index)
    return (a.loc[common] - b.loc[common]).to_numpy(), {tuple(k[:-1]) for k in common}


def _mean_se(diffs) -> tuple[float, float]:
    n = len(diffs)
    mean = float(diffs.mean()) if n else math.nan
    se = float(diffs.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return mean, se


def _round(x: float) -> float:
    return round(x, 2) if not math.isnan(x) else math.nan


def conclusions(df: pd.DataFrame, metric: str = "test/top1") -> pd.DataFrame:
    """For each conclusion of the paper: the mean paired difference (points) between runs that differ only in
    that option (same other options and seed), its standard error over pairs, and whether it holds and exceeds
    the seed noise (mean > 2 SE). The paper's mean difference over the same cells is given beside it."""
    fin = final_rows(df)
    fin = fin[(fin["run_status"] == "finished") & fin[metric].notna()]
    ref = paper.load("bireal_table1")
    ref = ref[ref["weight_update"] != "real"].rename(columns={"init": "pretrain"})
    ref["weight"] = ref["weight_update"].map({v: k for k, v in WEIGHT_TO_PAPER.items()})
    ref["sign"] = ref["activation_backward"].map({v: k for k, v in SIGN_TO_PAPER.items()})
    axes = ["pretrain", "weight", "sign", "structure", "depth"]
    out = []
    for name, col, better, worse in CONCLUSIONS:
        diffs, cells = _paired_differences(fin, col, better, worse, axes, metric)
        n = len(diffs)
        mean, se = _mean_se(diffs)
        ro = [x for x in axes if x != col]
        ra = ref[ref[col] == better].set_index(ro)["top1"]
        rb = ref[ref[col] == worse].set_index(ro)["top1"]
        rc = [c for c in cells if c in ra.index and c in rb.index]
        paper_diff = float(np.mean([ra.loc[c] - rb.loc[c] for c in rc])) if rc else math.nan
        verdict = "no paired runs" if not n else (
            ("holds" if mean > 0 else "does not hold")
            + ("" if math.isnan(se) else (", exceeds seed noise" if abs(mean) > 2 * se else ", within seed noise")))
        out.append({"conclusion": name, "ours (points)": round(mean, 2) if n else math.nan,
                    "SE": round(se, 2) if not math.isnan(se) else math.nan, "pairs": n,
                    "paper (points)": round(paper_diff, 2) if not math.isnan(paper_diff) else math.nan,
                    "verdict": verdict})
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------------------------------------
# Bethge et al. 2018, Tables 2-3: the from-scratch ResNetE-18 ablation
# ----------------------------------------------------------------------------------------------------------

BETHGE_STUDY = "bethge2018_resnete18"
# the sweep's study, and the studies of single runs of the two experiment overlays (same recipe, same cells)
BETHGE_STUDIES = (BETHGE_STUDY, "bethge2018_cifar10", "bethge2018_imagenet")
BETHGE_SCALING = {"plain": "no", "xnor": "yes"}      # weight option -> the paper's "scaling"
BETHGE_APPROXSIGN = {"approx": "yes", "ste": "no"}   # sign option -> the paper's "ApproxSign"
BETHGE_DOWNSAMPLES = ("binary", "full_precision")
BETHGE_PAPER_DATA = ("cifar10", "imagenet")          # the datasets of the paper's tables
_DATA_ORDER = ("digits", "cifar10", "cifar100", "imagenet")
BETHGE_CONCLUSIONS = (
    # (name, option column, a, b, claim): the difference a - b is expected to be > 0 ("positive") or ~ 0 ("equal")
    ("scaling hurts from scratch", "weight", "plain", "xnor", "positive"),
    ("ApproxSign ~ STE", "sign", "approx", "ste", "equal"),
    ("full-precision downsample helps", "downsample", "full_precision", "binary", "positive"),
)


def bethge_rows(df: pd.DataFrame, study: str | None = None) -> pd.DataFrame:
    """The rows that belong to the ablation: study ``study`` (default: bethge2018_resnete18 and the
    bethge2018_cifar10 / _imagenet overlays), weight plain|xnor, sign ste|approx, a known downsample."""
    in_study = df["study"] == study if study else df["study"].isin(BETHGE_STUDIES)
    return df[in_study & df["weight"].isin(list(BETHGE_SCALING)) & df["sign"].isin(list(BETHGE_APPROXSIGN))
              & df["downsample"].isin(list(BETHGE_DOWNSAMPLES))]


def bethge_cells(df: pd.DataFrame, metric: str = "test/top1", study: str | None = None) -> dict:
    """{(data, model, scaling, downsample, approxsign): cell} over seeds, from each run's final stage."""
    fin = final_rows(bethge_rows(df, study))
    cells = {}
    for (data, model, w, ds, s), g in fin.groupby(["data", "model", "weight", "downsample", "sign"], dropna=False):
        cells[(data, model, BETHGE_SCALING[w], ds, BETHGE_APPROXSIGN[s])] = summarize_cell(g, metric)
    return cells


def _data_rank(data) -> tuple:
    return (_DATA_ORDER.index(data) if data in _DATA_ORDER else len(_DATA_ORDER), str(data))


def _paper_column(metric: str) -> str:
    return "top5" if metric.endswith("top5") else "top1"


def bethge_table(df: pd.DataFrame, metric: str = "test/top1", study: str | None = None) -> pd.DataFrame:
    """Bethge et al. 2018 Tables 2-3 in the paper's layout: rows scaling x downsample x approxsign, one column
    per dataset (per dataset and model if several models ran) with our cell, the paper's value (top-1, or top-5
    for a top-5 metric) beside it for CIFAR-10 and ImageNet."""
    cells = bethge_cells(df, metric, study)
    if not cells:
        raise NoRunsError(f"no runs for Bethge et al. 2018 Tables 2-3 (study {study or BETHGE_STUDY!r}: weight "
                          "plain|xnor x model.downsample binary|full_precision x sign ste|approx)")
    ref = paper.load("bethge2018_resnete18").set_index(["dataset", "scaling", "downsample", "approxsign"])
    pcol = _paper_column(metric)
    ours = sorted({(k[0], k[1]) for k in cells}, key=lambda c: (_data_rank(c[0]), str(c[1])))
    several_models = len({m for _, m in ours}) > 1
    datasets = sorted({d for d, _ in ours} | set(BETHGE_PAPER_DATA), key=_data_rank)
    rows = []
    for scaling in ("no", "yes"):
        for ds in BETHGE_DOWNSAMPLES:
            for approx in ("yes", "no"):
                row = {"scaling": scaling, "downsample": ds, "approxsign": approx}
                for data in datasets:
                    for d, model in ours:
                        if d == data:
                            label = f"{data} {model}" if several_models else str(data)
                            row[label] = format_cell(cells.get((data, model, scaling, ds, approx)))
                    if data in BETHGE_PAPER_DATA:
                        key = (data, scaling, ds, approx)
                        row[f"{data} paper"] = ref.loc[key, pcol] if key in ref.index else math.nan
                rows.append(row)
    return pd.DataFrame(rows)


def bethge_conclusions(df: pd.DataFrame, metric: str = "test/top1", study: str | None = None) -> pd.DataFrame:
    """The paper's findings in our data, per dataset: mean paired difference (points) between runs that differ
    only in one option (same data, model, other options and seed), its SE over pairs and the verdict; beside it
    the paper's mean difference over the same cells on CIFAR-10 and on ImageNet.

    "scaling hurts" and "full-precision downsample helps" hold when the difference is > 0 (and say whether it
    exceeds the seed noise, |mean| > 2 SE); "ApproxSign ~ STE" holds when |approx - ste| <= 2 SE (within seed
    noise). No finished runs: an empty frame."""
    fin = final_rows(bethge_rows(df, study))
    fin = fin[(fin["run_status"] == "finished") & fin[metric].notna()]
    ref = paper.load("bethge2018_resnete18")
    ref = ref.assign(weight=ref["scaling"].map({v: k for k, v in BETHGE_SCALING.items()}),
                     sign=ref["approxsign"].map({v: k for k, v in BETHGE_APPROXSIGN.items()}))
    pcol = _paper_column(metric)
    axes = ["model", "weight", "sign", "downsample"]
    out = []
    for data in sorted(fin["data"].unique(), key=_data_rank):
        d = fin[fin["data"] == data]
        for name, col, better, worse, claim in BETHGE_CONCLUSIONS:
            diffs, cells = _paired_differences(d, col, better, worse, axes, metric)
            n = len(diffs)
            mean, se = _mean_se(diffs)
            ro = [x for x in axes if x not in (col, "model")]
            cells = {c[1:] for c in cells}  # drop the model: the paper has one (ResNetE-18)
            row = {"data": data, "conclusion": name, "ours (points)": _round(mean), "SE": _round(se), "pairs": n}
            for pdata in BETHGE_PAPER_DATA:
                r = ref[ref["dataset"] == pdata]
                ra, rb = r[r[col] == better].set_index(ro)[pcol], r[r[col] == worse].set_index(ro)[pcol]
                rc = [c for c in cells if c in ra.index and c in rb.index]
                row[f"paper {pdata} (points)"] = _round(float(np.mean([ra.loc[c] - rb.loc[c] for c in rc]))
                                                        if rc else math.nan)
            row["verdict"] = _bethge_verdict(claim, n, mean, se)
            out.append(row)
    return pd.DataFrame(out, columns=["data", "conclusion", "ours (points)", "SE", "pairs",
                                      *(f"paper {d} (points)" for d in BETHGE_PAPER_DATA), "verdict"])


def _bethge_verdict(claim: str, n: int, mean: float, se: float) -> str:
    if not n:
        return "no paired runs"
    noisy = None if math.isnan(se) else abs(mean) <= 2 * se
    if claim == "equal":
        if noisy is None:
            return "no noise estimate (1 pair)"
        return "holds, within seed noise" if noisy else "does not hold, exceeds seed noise"
    return ("holds" if mean > 0 else "does not hold") + (
        "" if noisy is None else (", within seed noise" if noisy else ", exceeds seed noise"))
