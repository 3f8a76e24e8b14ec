"""Figures from your own runs (and one that needs none), written as PNG files.

    python analysis/plots.py all --root outputs --out analysis/figures   # the four figures below
    python analysis/plots.py curves --study bireal_table1 --stage binary  # mean over seeds per cell, per epoch
    python analysis/plots.py ablation --metric test/top1 --by structure --color sign
    python analysis/plots.py signs --out /tmp/f                           # Bi-Real Fig. 3 (no records needed)
    python analysis/plots.py activations --block layer2.-1                # block inputs, with vs. without shortcuts
    python analysis/plots.py activations --fresh --width 32               # the same, fresh models, no records

Records are the ``record.json`` files under ``--root`` (``onebit.records``). A *cell* is a set of runs that share
every option except the seed (options of the record, plus any semantic config value that differs, e.g.
``model.nonlinearity``); a cell's value is the mean over its finished runs. Failed and running runs never enter a
mean or a curve, but every figure counts them (legend / bar labels / title). The same job run twice (same
``job_key``) counts once: the latest finished run. A corrupt record is named on stderr and skipped.

Exit codes: 0 ok; 1 no records under the root (one line naming it); 2 bad argument (one line listing the valid
values). Every file is written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from onebit import pipeline  # noqa: E402
from onebit.records import RECORD_NAME, CorruptRecordError, read_record  # noqa: E402

PROG = "plots"
BANDS = ("minmax", "std")
BAND_LABEL = {"minmax": "shaded: min-max over seeds", "std": "shaded: mean ± 1 std over seeds (ddof=1)"}
CURVE_METRICS = ("val/top1", "train/loss")
# config keys that do not change what a run computes, never part of a cell
NON_SEMANTIC = (*pipeline.NON_SEMANTIC, "study", "threads")
TRAINER_SEMANTIC = ("precision", "deterministic")
# the order in which options are tried when labelling cells (first ones that tell cells apart win)
LABEL_ORDER = ("structure", "sign", "weight", "pretrain", "depth", "model", "shortcut", "sign_t", "data",
               "optimizer", "scheduler", "epochs", "bn_retrain", "experiment", "trainer", "study")
MAX_LINES_PER_PANEL = 8
FALLBACK_WIDTH = 32  # DigitsData.default_width


class UsageError(ValueError):
    """A bad argument value (unknown stage, metric, option...): exit 2 with this one line."""


class NoRecordsError(LookupError):
    """Nothing to plot under the root: exit 1 with this one line."""


# ----------------------------------------------------------------------------------------------------------
# Records and cells
# ----------------------------------------------------------------------------------------------------------


def load_records(root: Path | str, study: str | None = None, where: Sequence[str] = (),
                 warn: bool = True) -> list[dict]:
    """Every readable record under ``root`` (recursively), optionally only one ``study`` and those whose options
    match every ``key=value`` of ``where``. A corrupt record is named on stderr and skipped; a job recorded twice
    (same ``job_key``) keeps its latest finished run (else its latest run). Each record gets ``_path`` (its file).

    Raises :class:`NoRecordsError` (naming the root) when nothing is left, :class:`UsageError` for a malformed
    ``where``."""
    root = Path(root)
    records, corrupt = [], 0
    for path in sorted(root.rglob(RECORD_NAME)) if root.is_dir() else []:
        try:
            rec = read_record(path)
        except CorruptRecordError as e:
            corrupt += 1
            if warn:
                print(f"{PROG}: skipping corrupt record: {e}", file=sys.stderr)
            continue
        rec["_path"] = str(path)
        records.append(rec)
    if not records:
        why = "directory does not exist" if not root.is_dir() else (
            f"{corrupt} corrupt record(s) skipped" if corrupt else f"no {RECORD_NAME} found")
        raise NoRecordsError(f"no run records under {root} ({why})")
    if study is not None:
        studies = sorted({str(r.get("study") or r["options"].get("study")) for r in records})
        records = [r for r in records if (r.get("study") or r["options"].get("study")) == study]
        if not records:
            raise NoRecordsError(f"no run records of study {study!r} under {root} (studies there: "
                                 f"{', '.join(studies)})")
    records = dedupe(records)  # after the study filter: job_key ignores the study, a job may be in two studies
    for cond in where:
        key, sep, value = cond.partition("=")
        if not sep or not key:
            raise UsageError(f"--where {cond!r} is invalid: use key=value, e.g. --where sign=approx")
        keys = sorted({k for r in records for k in r["options"]})
        if key not in keys:
            raise UsageError(f"--where key {key!r} is unknown; valid keys: {', '.join(keys)}")
        records = [r for r in records if _text(r["options"].get(key)) == value.lower()]
        if not records:
            raise NoRecordsError(f"no run records with {key}={value} under {root}")
    return records


def dedupe(records: list[dict]) -> list[dict]:
    """One record per ``job_key``: the latest finished run, else the latest run (a rerun supersedes a failure)."""
    best: dict[Any, dict] = {}
    out = []
    for rec in records:
        key = rec.get("job_key")
        if key is None:
            out.append(rec)
            continue
        rank = (rec.get("status") == "finished", float((rec.get("timings") or {}).get("started") or 0.0))
        if key not in best or rank >= best[key][0]:
            best[key] = (rank, rec)
    return out + [rec for _, rec in best.values()]


def _text(value) -> str:
    return str(value).lower()


def _hashable(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict, tuple)) else value


def _semantic_leaves(config: dict, prefix: str = "") -> dict:
    """Dotted leaves of the resolved config that determine a run: minus every ``seed`` key, the data's ``root``
    (a path), ``num_workers``, the non-semantic groups (logger, launcher, paths) and the trainer settings other
    than precision and determinism (as ``onebit.pipeline.job_key``)."""
    out = {}
    for k, v in (config or {}).items():
        name = f"{prefix}{k}"
        if not prefix and k in NON_SEMANTIC:
            continue
        if k in ("seed", "root", "num_workers"):  # seeds; where the data lives; loader processes
            continue
        if name == "trainer" and isinstance(v, dict):
            v = {kk: vv for kk, vv in v.items() if kk in TRAINER_SEMANTIC}
        if isinstance(v, dict) and v:
            out.update(_semantic_leaves(v, f"{name}."))
        else:
            out[name] = _hashable(v)
    return out


def cell_items(record: dict) -> dict:
    """What identifies a record's cell: its options except ``seed``, plus its semantic config leaves (dotted
    names, e.g. ``model.nonlinearity``; seeds, paths and loggers excluded)."""
    items = {k: _hashable(v) for k, v in record["options"].items() if k != "seed"}
    items.update(_semantic_leaves(record.get("config") or {}))
    return items


def _key(items: dict) -> tuple:
    return tuple(sorted(items.items(), key=lambda kv: kv[0]))


def group_cells(records: Iterable[dict]) -> dict[tuple, list[dict]]:
    """Records grouped by cell (insertion order = first appearance)."""
    cells: dict[tuple, list[dict]] = {}
    for rec in records:
        cells.setdefault(_key(cell_items(rec)), []).append(rec)
    return cells


def label_keys(cells: Sequence[dict], exclude: Iterable[str] = ()) -> list[str]:
    """The fewest keys, tried in :data:`LABEL_ORDER` (then other options, then config leaves), that tell
    ``cells`` (dicts of :func:`cell_items`) apart given the ``exclude`` keys (shown elsewhere: a panel, the bar
    groups or colours): a key enters only if, together with ``exclude`` and the keys already chosen, it
    separates more cells (so ``model=plain18`` is not added when ``structure`` already says it)."""
    exclude = [k for k in dict.fromkeys(exclude) if k is not None]
    varying = [k for k in {k for c in cells for k in c}
               if k not in exclude and len({_text(c.get(k)) for c in cells}) > 1]
    order = sorted(varying, key=lambda k: (k not in LABEL_ORDER, "." in k,
                                           LABEL_ORDER.index(k) if k in LABEL_ORDER else 0, k))

    def distinct(keys):
        return len({tuple(_text(c.get(k)) for k in keys) for c in cells})

    chosen: list[str] = []
    target = distinct([*exclude, *order])
    n = distinct(exclude)
    for k in order:
        if n >= target:
            break
        m = distinct([*exclude, *chosen, k])
        if m > n:
            chosen.append(k)
            n = m
    return chosen


def describe(items: dict, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={items.get(k)}" for k in keys)


def common_options(records: Sequence[dict], skip: Iterable[str] = ("seed",)) -> str:
    """The options every record shares (for a figure's subtitle)."""
    skip = set(skip)
    keys = [k for k in LABEL_ORDER if k not in skip] + sorted(
        {k for r in records for k in r["options"]} - set(LABEL_ORDER) - skip)
    same = [k for k in keys if len({_text(r["options"].get(k)) for r in records}) == 1
            and records and records[0]["options"].get(k) is not None]
    return ", ".join(f"{k}={records[0]['options'][k]}" for k in same)


def stage_records(records: Sequence[dict], stage: str) -> list[dict]:
    """The records that concern ``stage``: those that have it, and every unfinished record (it may have failed
    or be running before reaching the stage, and must be counted)."""
    return [r for r in records if stage in (r.get("stages") or {}) or r.get("status") != "finished"]


def usable(record: dict, stage: str) -> bool:
    """A finished run whose ``stage`` finished."""
    st = (record.get("stages") or {}).get(stage) or {}
    return record.get("status") == "finished" and st.get("status", "finished") == "finished" and bool(st)


def status_counts(records: Sequence[dict]) -> Counter:
    return Counter(str(r.get("status")) for r in records)


def format_counts(c: Counter, used: int | None = None) -> str:
    """``"4 runs: 3 finished, 1 failed"``."""
    total = sum(c.values())
    parts = [f"{c['finished']} finished"] + [f"{n} {s}" for s, n in sorted(c.items()) if s != "finished" and n]
    text = f"{total} run{'s' if total != 1 else ''}: {', '.join(parts)}"
    if used is not None and used != c["finished"]:
        text += f" ({c['finished'] - used} without data)"
    return text


def check_stage(records: Sequence[dict], stage: str) -> None:
    stages = sorted({s for r in records for s in (r.get("stages") or {})})
    if stage not in stages:
        raise UsageError(f"unknown --stage {stage!r}; valid stages: {', '.join(stages) or '(none recorded)'}")


def check_option(records: Sequence[dict], key: str, flag: str) -> None:
    keys = sorted({k for r in records for k in r["options"] if k != "seed"})
    if key not in keys:
        raise UsageError(f"unknown {flag} {key!r}; valid options: {', '.join(keys)}")


def check_metric(records: Sequence[dict], stage: str, metric: str) -> None:
    metrics = sorted({m for r in records for m in (((r.get("stages") or {}).get(stage) or {}).get("metrics") or {})})
    if metric not in metrics:
        raise UsageError(f"unknown --metric {metric!r} for stage {stage!r}; valid metrics: "
                         f"{', '.join(metrics) or '(none recorded)'}")


def _percent(metric: str) -> bool:
    return "top" in metric.rsplit("/", 1)[-1]


def _axis_label(metric: str) -> str:
    return f"{metric} (%)" if _percent(metric) else metric


def _palette(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def save_figure(fig, path: Path | str) -> Path:
    """Save ``fig`` as PNG to ``path`` atomically (temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------
# 1. Training curves
# ----------------------------------------------------------------------------------------------------------


def stage_history(stage: dict) -> pd.DataFrame:
    """A stage's per-epoch history as a DataFrame indexed by epoch, with ``train/*`` aligned to their epoch.

    onebit's Classifier appends the history entry in ``on_validation_epoch_end``, which Lightning runs *before*
    the epoch's training metrics are aggregated: entry ``e`` holds the ``train/*`` values of epoch ``e - 1``
    (entry 0 has none), and the last epoch's are only in the stage's final ``metrics``. That lag is detected
    (the first entry has no ``train/*`` value) and undone: ``train/*`` are shifted back one epoch and the last
    epoch takes the final metrics. A history whose first entry has train values is used as it is.
    """
    hist = [h for h in (stage.get("history") or []) if isinstance(h, dict) and "epoch" in h]
    if not hist:
        return pd.DataFrame()
    df = pd.DataFrame(hist).drop_duplicates("epoch", keep="last").set_index("epoch").sort_index()
    df = df.apply(pd.to_numeric, errors="coerce")
    train = [c for c in df.columns if str(c).startswith("train/")]
    first = df.iloc[0]
    lagged = not any(pd.notna(first.get(c)) for c in train)
    if lagged:
        metrics = stage.get("metrics") or {}
        for c in train:
            df[c] = df[c].shift(-1)
        for c in {*train, *(m for m in metrics if str(m).startswith("train/"))}:
            if c not in df:
                df[c] = np.nan
            value = metrics.get(c)
            if value is not None:
                df.loc[df.index[-1], c] = float(value)
    return df


@dataclass
class CellCurves:
    """The curve data of one cell: ``series[metric]`` is a DataFrame indexed by epoch with columns mean, std
    (ddof=1), min, max, lo, hi (the band) and n (seeds), over the epochs every seed has."""

    items: dict
    label: str
    counts: Counter
    seeds: list
    series: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def runs(self) -> int:
        return sum(self.counts.values())


def curve_data(records: Sequence[dict], stage: str = "binary", metrics: Sequence[str] = CURVE_METRICS,
               band: str = "minmax", exclude_label: Iterable[str] = ()) -> list[CellCurves]:
    """Per cell, the mean over seeds of each metric per epoch, with a band (``minmax`` or ``std``: mean ± 1
    std). Only finished runs enter (failed / running ones are counted in ``counts``); an epoch enters only when
    every used seed has it, so no point is an average of a partial set of seeds."""
    if band not in BANDS:
        raise UsageError(f"unknown --band {band!r}; valid bands: {', '.join(BANDS)}")
    cells = group_cells(stage_records(records, stage))
    items = [dict(k) for k in cells]
    keys = label_keys(items, exclude_label)
    out = []
    for key, recs in cells.items():
        histories = []
        for r in sorted(recs, key=lambda r: (r["options"].get("seed") is None, r["options"].get("seed") or 0)):
            if usable(r, stage):
                h = stage_history(r["stages"][stage])
                if not h.empty:
                    histories.append((r["options"].get("seed"), h))
        cell = CellCurves(items=dict(key), label=describe(dict(key), keys) or "all runs",
                          counts=status_counts(recs), seeds=[s for s, _ in histories])
        for m in metrics:
            cols = {i: h[m] for i, (_, h) in enumerate(histories) if m in h}
            if len(cols) < len(histories) or not cols:
                cell.series[m] = pd.DataFrame(columns=["mean", "std", "min", "max", "lo", "hi", "n"])
                continue
            wide = pd.DataFrame(cols).astype(float)
            wide = wide[wide.notna().all(axis=1)]
            s = pd.DataFrame({"mean": wide.mean(axis=1), "std": wide.std(axis=1, ddof=1),
                              "min": wide.min(axis=1), "max": wide.max(axis=1), "n": wide.count(axis=1)})
            if band == "minmax":
                s["lo"], s["hi"] = s["min"], s["max"]
            else:
                std = s["std"].fillna(0.0)
                s["lo"], s["hi"] = s["mean"] - std, s["mean"] + std
            s.index.name = "epoch"
            cell.series[m] = s
        out.append(cell)
    return out


def choose_facet(cells: Sequence[dict], max_lines: int = MAX_LINES_PER_PANEL) -> str | None:
    """With more than ``max_lines`` cells, the option to split panels by (small multiples): the varying
    option, in label order, that leaves the fewest lines per panel (first one reaching ``max_lines`` wins)."""
    if len(cells) <= max_lines:
        return None
    best, best_lines = None, len(cells)
    for k in label_keys(cells) or []:
        values = Counter(_text(c.get(k)) for c in cells)
        if len(values) < 2:
            continue
        lines = max(values.values())
        if lines < best_lines:
            best, best_lines = k, lines
        if lines <= max_lines:
            return k
    return best


def _cell_count(cell: CellCurves) -> str:
    """``n=3/4, 1 failed``: seeds averaged / runs in the cell, and the runs that are not finished."""
    bad = "".join(f", {n} {s}" for s, n in sorted(cell.counts.items()) if s != "finished")
    return f"n={cell.n}/{cell.runs}{bad}"


def plot_curves(records: Sequence[dict], path: Path | str, stage: str = "binary",
                metrics: Sequence[str] = CURVE_METRICS, band: str = "minmax", study: str | None = None,
                facet: str | None = "auto") -> Path:
    """Training curves per cell: the mean over seeds per epoch of ``val/top1`` (top) and ``train/loss``
    (bottom) of one stage, with a shaded band over seeds, one line per cell; from each run's recorded history
    (``stages[stage].history``, one entry per epoch; the ``pretrain`` history of a cache hit is the cached
    twin's). Not a figure of the papers: it shows how each ablation cell of Bi-Real Table 1 (section 4.2)
    trains. With more than 8 cells the panels are split by one option (columns, small multiples) and the
    legend sits outside the axes."""
    check_stage(records, stage)
    recs = stage_records(records, stage)
    items = [dict(k) for k in group_cells(recs)]
    facet = choose_facet(items) if facet == "auto" else facet
    data = curve_data(recs, stage, metrics, band, exclude_label=[facet] if facet else [])
    facet_values = sorted({_text(c.items.get(facet)) for c in data}) if facet else [None]
    labels = list(dict.fromkeys(c.label for c in data))
    colors = dict(zip(labels, _palette(len(labels))))
    ncols = len(facet_values)
    fig, axes = plt.subplots(len(metrics), ncols, figsize=(4.6 * ncols + 1.0, 3.1 * len(metrics)), squeeze=False,
                             sharex=True, sharey="row")
    handles = {}
    for j, fv in enumerate(facet_values):
        for cell in data:
            if facet and _text(cell.items.get(facet)) != fv:
                continue
            legend = f"{cell.label}  ({_cell_count(cell)})"
            for i, m in enumerate(metrics):
                ax = axes[i][j]
                s = cell.series.get(m)
                scale = 100.0 if _percent(m) else 1.0
                if s is None or s.empty:
                    h, = ax.plot([], [], color=colors[cell.label], ls=":")
                else:
                    h, = ax.plot(s.index, s["mean"] * scale, color=colors[cell.label], lw=1.4,
                                 marker="o" if len(s) < 3 else None, ms=3)
                    ax.fill_between(s.index, s["lo"] * scale, s["hi"] * scale, color=colors[cell.label],
                                    alpha=0.18, lw=0)
                handles.setdefault(legend if not facet else cell.label, h)
        for i, m in enumerate(metrics):
            ax = axes[i][j]
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel(_axis_label(m))
            if i == len(metrics) - 1:
                ax.set_xlabel("epoch")
            if facet and i == 0:
                sub = [c for c in data if _text(c.items.get(facet)) == fv]
                runs = Counter()
                for c in sub:
                    runs.update(c.counts)
                ax.set_title(f"{facet}={fv}\n{format_counts(runs)}", fontsize=9)
    if facet:  # one legend entry per label across panels: its usual count, and the panels that differ
        named = {}
        for label in handles:
            per = Counter()
            cells = [c for c in data if c.label == label]
            for c in cells:
                per[_cell_count(c)] += 1
            usual = per.most_common(1)[0][0]
            odd = [f"{c.items.get(facet)}: {_cell_count(c)}" for c in cells if _cell_count(c) != usual]
            named[f"{label}  ({usual}{'; ' + '; '.join(odd) if odd else ''})"] = handles[label]
            for c in cells:
                if any(s != "finished" for s in c.counts):
                    print(f"{PROG}: curves: {facet}={c.items.get(facet)}, {label}: {_cell_count(c)} "
                          "(unfinished runs excluded)", file=sys.stderr)
        handles = named
    band_handle = plt.Rectangle((0, 0), 1, 1, color="grey", alpha=0.3)
    legend_labels = [*handles, BAND_LABEL[band], "n = seeds averaged / runs in cell"
                     + ("" if not facet else f" (in every panel, unless a {facet} is named)")]
    legend_handles = [*handles.values(), band_handle, plt.Line2D([], [], ls="none")]
    fig.legend(legend_handles, legend_labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               frameon=False)
    total = Counter()
    for c in data:
        total.update(c.counts)
    title = (f"Training curves, stage {stage!r}{f', study {study}' if study else ''}: {len(data)} cells, "
             f"{format_counts(total)} (only finished runs averaged)")
    common = common_options([r for r in recs])
    fig.suptitle(title + (f"\ncommon: {common}" if common else ""), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
# 2. Ablation bars
# ----------------------------------------------------------------------------------------------------------


def ablation_data(records: Sequence[dict], stage: str = "binary", metric: str = "test/top1",
                  by: str = "structure", color: str = "sign") -> pd.DataFrame:
    """One row per cell: the ``by`` and ``color`` values, ``label`` (the other options that tell cells apart),
    ``mean`` / ``std`` (ddof=1; NaN for one seed) / ``n`` over the finished runs that have ``metric`` in
    ``stage``, ``runs`` (every run of the cell, failed and running included), ``failed``, ``running``,
    ``values`` and ``seeds``. Sorted by ``by``, then ``color``, then ``label``."""
    check_stage(records, stage)
    check_option(records, by, "--by")
    check_option(records, color, "--color")
    check_metric(records, stage, metric)
    cells = group_cells(stage_records(records, stage))
    keys = label_keys([dict(k) for k in cells], exclude=[by, color])
    rows = []
    for key, recs in cells.items():
        items = dict(key)
        vals, seeds = [], []
        for r in recs:
            if not usable(r, stage):
                continue
            v = (r["stages"][stage].get("metrics") or {}).get(metric)
            if v is not None and math.isfinite(float(v)):
                vals.append(float(v))
                seeds.append(r["options"].get("seed"))
        c = status_counts(recs)
        arr = np.asarray(vals, dtype=float)
        rows.append({by: items.get(by), color: items.get(color) if color != by else items.get(by),
                     "label": describe(items, keys), "mean": arr.mean() if len(arr) else math.nan,
                     "std": arr.std(ddof=1) if len(arr) > 1 else math.nan, "n": len(arr),
                     "runs": sum(c.values()), "failed": c["failed"], "running": c["running"],
                     "values": vals, "seeds": seeds})
    df = pd.DataFrame(rows)
    sort = list(dict.fromkeys([by, color, "label"]))
    return df.sort_values(sort, key=lambda s: s.map(_text)).reset_index(drop=True)


def plot_ablation(records: Sequence[dict], path: Path | str, stage: str = "binary", metric: str = "test/top1",
                  by: str = "structure", color: str = "sign", study: str | None = None) -> Path:
    """Bar chart of a final metric per cell (default: ``test/top1`` of the binary stage), the mean over seeds
    with ±1 std error bars (ddof=1), the individual seeds as dots and ``n`` (finished seeds / runs in the cell,
    failed and running counted) above each bar; bars grouped by ``by`` (default ``structure``, the columns of
    Bi-Real Table 1, section 4.2) and coloured by ``color`` (default ``sign``: STE vs. ApproxSign)."""
    df = ablation_data(records, stage, metric, by, color)
    scale = 100.0 if _percent(metric) else 1.0
    groups = list(dict.fromkeys(df[by].map(str)))
    color_values = list(dict.fromkeys(df[color].map(str).sort_values()))
    palette = dict(zip(color_values, _palette(len(color_values))))
    x, centers, pos = [], [], 0.0
    for g in groups:
        n = int((df[by].map(str) == g).sum())
        x.extend(pos + np.arange(n))
        centers.append(pos + (n - 1) / 2)
        pos += n + 1
    x = np.asarray(x)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(x) + 2.5), 5.0))
    means = df["mean"].to_numpy(float) * scale
    stds = df["std"].to_numpy(float) * scale
    colors = [palette[str(v)] for v in df[color]]
    ax.bar(x, np.nan_to_num(means), width=0.8, color=colors, edgecolor="black", lw=0.5)
    ax.errorbar(x, means, yerr=np.where(np.isnan(stds), 0, stds), fmt="none", ecolor="black", capsize=3, lw=1)
    top = np.nanmax(np.concatenate([means + np.nan_to_num(stds), [v * scale for vs in df["values"] for v in vs],
                                    [0.0]])) if len(df) else 1.0
    many = len(x) > 12
    for xi, row in zip(x, df.itertuples()):
        if row.values:
            ax.scatter(np.full(len(row.values), xi) + np.linspace(-0.15, 0.15, len(row.values)),
                       np.asarray(row.values) * scale, s=9, color="black", zorder=3)
        text = f"n={row.n}/{row.runs}"
        if row.failed:
            text += f"\n{row.failed} failed"
        if row.running:
            text += f"\n{row.running} running"
        if row.n:
            text = f"{row.mean * scale:.1f}" + ("" if math.isnan(row.std) else f"±{row.std * scale:.1f}") + \
                "\n" + text
        base = 0.0 if not row.n else (row.mean + (0 if math.isnan(row.std) else row.std)) * scale
        ax.text(xi, base + 0.01 * top, text, ha="center", va="bottom", fontsize=6.5 if many else 7.5,
                rotation=90 if many else 0)
    ax.set_ylim(0, top * (1.35 if many else 1.2) if top > 0 else 1)
    if scale == 100.0 and top <= 100.0:
        ax.set_yticks(np.arange(0, 101, 20))
    ax.set_xticks(x, [str(v) for v in df["label"]], rotation=60 if df["label"].map(len).max() > 6 else 0,
                  ha="right" if df["label"].map(len).max() > 6 else "center", fontsize=7)
    sec = ax.secondary_xaxis("top")
    sec.set_xticks(centers, groups, fontsize=9)
    sec.tick_params(length=0)
    sec.set_xlabel(by, fontsize=9)
    ax.set_ylabel(_axis_label(f"{stage} {metric}"))
    ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=palette[v]) for v in color_values]
    ax.legend(handles + [plt.Line2D([], [], color="black", marker="|", ls="none"),
                         plt.Line2D([], [], color="black", marker=".", ls="none")],
              [f"{color}={v}" for v in color_values] + ["error bar: ±1 std over seeds", "dots: seeds"],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    total = Counter()
    for r in stage_records(records, stage):
        total[str(r.get("status"))] += 1
    common = common_options(stage_records(records, stage))
    fig.suptitle(f"{metric} of stage {stage!r} per cell{f', study {study}' if study else ''}: {len(df)} cells, "
                 f"{format_counts(total)}; n = finished seeds / runs (failed/running not averaged)"
                 + (f"\ncommon: {common}" if common else ""), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
# 3. Sign approximations (Bi-Real Fig. 3)
# ----------------------------------------------------------------------------------------------------------


def sign_curves(x: np.ndarray | None = None, beta: float = 5.0) -> dict[str, dict]:
    """Bi-Real Fig. 3 (section 3.2, Eq. 2-3) plus BNN+'s SwishSign: per approximation, ``f`` (the function the
    backward pass pretends the forward is) and ``df`` (its derivative, the pseudo-gradient), on the grid ``x``.

    ``df`` always comes from onebit's real components (``SteSign(1).derivative``, ``ApproxSign().derivative``,
    ``SwishSign(beta).derivative``; sign's derivative is 0 except a Dirac delta at 0); ``f`` is sign
    (``binary_sign``), clip (the ``Clip`` component), ApproxSign's F(x) (Bi-Real Eq. 3) and SwishSign's
    ``2 sigmoid(bx)(1 + bx(1 - sigmoid(bx))) - 1``, so the figure also shows that each component's derivative
    is the slope of the function it claims to approximate (tested)."""
    import torch

    from onebit.quantizers import ApproxSign, Clip, SteSign, SwishSign, binary_sign

    if x is None:
        x = np.linspace(-2, 2, 4001)
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    swish = SwishSign(beta)
    b = swish.beta
    sig = torch.sigmoid(b * t)
    approx_f = torch.where(t < -1, -torch.ones_like(t), torch.where(
        t < 0, 2 * t + t**2, torch.where(t < 1, 2 * t - t**2, torch.ones_like(t))))
    with torch.no_grad():
        curves = {
            "sign": {"f": binary_sign(t.clone()), "df": torch.zeros_like(t),
                     "title": "(a) sign(x)", "component": "binary_sign (derivative: Dirac delta at 0)"},
            "clip": {"f": Clip()(t), "df": SteSign(1.0).derivative(t),
                     "title": "(b) clip(-1, x, 1): STE", "component": "Clip / SteSign(t=1).derivative"},
            "approx": {"f": approx_f, "df": ApproxSign().derivative(t),
                       "title": "(c) ApproxSign F(x)", "component": "ApproxSign().derivative"},
            "swish": {"f": 2 * sig * (1 + b * t * (1 - sig)) - 1, "df": swish.derivative(t),
                      "title": f"(d) SwishSign, b={b:g}", "component": f"SwishSign({b:g}).derivative"},
        }
    for c in curves.values():
        c["f"], c["df"] = c["f"].numpy(), c["df"].numpy()
    curves["x"] = np.asarray(x, dtype=np.float64)
    return curves


def plot_signs(path: Path | str, beta: float = 5.0) -> Path:
    """Bi-Real Fig. 3 (section 3.2): top row the sign function and its differentiable approximations (clip,
    whose derivative is the STE of Eq. 2; ApproxSign's piecewise polynomial F of Eq. 3; SwishSign of BNN+ with
    b = 5), bottom row their derivatives as computed by onebit's components (``.derivative``)."""
    curves = sign_curves(beta=beta)
    x = curves.pop("x")
    fig, axes = plt.subplots(2, len(curves), figsize=(3.2 * len(curves), 5.6), sharex=True)
    for j, (name, c) in enumerate(curves.items()):
        top, bottom = axes[0][j], axes[1][j]
        top.plot(x, c["f"], color="C0", lw=1.6)
        top.set_title(c["title"], fontsize=10)
        top.set_ylim(-1.3, 1.3)
        bottom.plot(x, c["df"], color="C3", lw=1.6)
        if name == "sign":
            bottom.annotate("", xy=(0, 2.2), xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", color="C3", lw=1.6))
            bottom.text(0.08, 2.0, "δ(x)", color="C3")
        bottom.set_ylim(-0.1, max(2.4, float(np.nanmax(c["df"])) * 1.1))
        bottom.set_title(c["component"], fontsize=7.5)
        bottom.set_xlabel("x")
        for ax in (top, bottom):
            ax.axhline(0, color="grey", lw=0.5)
            ax.axvline(0, color="grey", lw=0.5)
            ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("F(x)")
    axes[1][0].set_ylabel("∂F/∂x (backward)")
    fig.suptitle("Bi-Real Net Fig. 3: sign and its approximations (top) and their derivatives used in the "
                 "backward pass (bottom)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
# 4. Block activations with vs. without shortcuts (Bi-Real section 3.1)
# ----------------------------------------------------------------------------------------------------------


def resolve_block(model, spec: str = "layer2.-1"):
    """The residual block named ``layerN.i`` (``i`` may be negative), e.g. ``layer2.-1`` = last block of layer2."""
    from onebit.models.resnet import BinaryBlock

    layer, _, index = spec.partition(".")
    blocks = getattr(model, layer, None)
    valid = [n for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, n)]
    if blocks is None or not index.lstrip("-").isdigit():
        raise UsageError(f"unknown --block {spec!r}; use layerN.i with layerN in {', '.join(valid)}, e.g. layer2.-1")
    try:
        block = blocks[int(index)]
    except IndexError:
        raise UsageError(f"unknown --block {spec!r}: {layer} has {len(blocks)} blocks "
                         f"(index {-len(blocks)}..{len(blocks) - 1})") from None
    if not isinstance(block, BinaryBlock):
        raise UsageError(f"--block {spec!r} is a {type(block).__name__}, not a BinaryBlock")
    return block


def block_input(model, x, spec: str = "layer2.-1"):
    """The real-valued tensor that the Sign of block ``spec`` binarizes (the input of its first
    ``BinaryConv2d``, before its ``input_quantizer``), captured with a forward pre-hook on one forward pass."""
    import torch

    conv = resolve_block(model, spec).conv1
    captured = []
    handle = conv.register_forward_pre_hook(lambda m, inputs: captured.append(inputs[0].detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return captured[0]


def activation_stats(t) -> dict:
    """count (number of values), distinct values (whole tensor, and the mean over channels of the distinct values
    per channel, dim 1: the paper's argument is per channel, since BN is a per-channel affine map), mean and std
    (ddof=1) of a tensor, and its shape."""
    import torch

    shape = tuple(t.shape)
    t = t.detach().double()
    per_channel = ([int(torch.unique(t[:, c]).numel()) for c in range(t.shape[1])] if t.dim() > 1 else
                   [int(torch.unique(t).numel())])
    flat = t.flatten()
    return {"count": int(flat.numel()), "distinct": int(torch.unique(flat).numel()),
            "distinct_per_channel": float(np.mean(per_channel)), "mean": float(flat.mean()),
            "std": float(flat.std()), "shape": shape}


def _first_val_batch(data):
    data.setup("fit")
    x, _ = next(iter(data.val_dataloader()))
    return x


def _pair_key(rec: dict) -> tuple:
    items = cell_items(rec)
    for k in ("structure", "shortcut", "model", "study", "model.shortcut", "shortcut", "model._target_"):
        items.pop(k, None)
    return _key(items)


def find_shortcut_pair(records: Sequence[dict], stage: str = "binary") -> tuple[dict, dict] | None:
    """(bireal, plain): finished runs with ``structure=bireal`` (shortcuts) and ``structure=plain`` (none) that
    share every other option and have a ``stage`` checkpoint; the first such pair (sorted), lowest seed each
    (the same seed when both sides have it)."""
    def ckpt(r):
        return Path(r["_path"]).parent / "checkpoints" / stage / "last.ckpt" if "_path" in r else \
            Path(r["run_dir"]) / "checkpoints" / stage / "last.ckpt"

    sides: dict[tuple, dict[str, list]] = {}
    for r in records:
        s = r["options"].get("structure")
        if s in ("bireal", "plain") and usable(r, stage) and ckpt(r).exists():
            sides.setdefault(_pair_key(r), {"bireal": [], "plain": []})[s].append(r)
    for key in sorted(sides, key=str):
        b, p = sides[key]["bireal"], sides[key]["plain"]
        if b and p:
            seed = lambda r: (r["options"].get("seed") is None, r["options"].get("seed") or 0)  # noqa: E731
            common = sorted({r["options"].get("seed") for r in b} & {r["options"].get("seed") for r in p},
                            key=lambda s: (s is None, s or 0))
            if common:
                b = [r for r in b if r["options"].get("seed") == common[0]]
                p = [r for r in p if r["options"].get("seed") == common[0]]
            return min(b, key=seed), min(p, key=seed)
    return None


def activation_data(records: Sequence[dict] | None = None, block: str = "layer2.-1", width: int = FALLBACK_WIDTH,
                    seed: int = 0, stage: str = "binary") -> dict:
    """Inputs to the Sign of ``block`` for a net with shortcuts (``bireal``) and without (``plain``).

    Trained: when ``records`` hold a finished ``structure=bireal`` / ``structure=plain`` pair (same other options,
    first seed) with ``stage`` checkpoints, both models come from ``onebit.pipeline.model_from_record`` (eval
    mode) and see the first validation batch of the bireal run's data module. Otherwise (or if loading fails,
    reported on stderr) freshly initialised Bi-Real-18s (ApproxSign, magnitude-aware weights, small stem, digits)
    built after ``torch.manual_seed(seed)``, with BatchNorm in training mode (batch statistics; at init the
    running statistics are the identity), on the first digits validation batch.

    Returns ``{"source": "trained" | "init", "detail": str, "bireal": {...}, "plain": {...}}``, each side with
    ``values`` (numpy), ``stats`` (:func:`activation_stats`, computed from the hooked tensor, with its shape)."""
    import torch

    pair = find_shortcut_pair(records or [], stage)
    if pair is not None:
        try:
            from hydra.utils import instantiate
            from omegaconf import OmegaConf

            from onebit.pipeline import model_from_record

            models = {}
            for name, rec in zip(("bireal", "plain"), pair):
                rec = {**rec, "run_dir": str(Path(rec["_path"]).parent) if "_path" in rec else rec["run_dir"]}
                models[name] = (model_from_record(rec, stage), rec)
            x = _first_val_batch(instantiate(OmegaConf.create(pair[0]["config"]).data))
            out = {"source": "trained", "detail": f"{stage} checkpoints (last.ckpt), seed "
                                                  f"{pair[0]['options'].get('seed')} ({common_options(pair)})"}
            for name, (model, rec) in models.items():
                t = block_input(model, x, block)
                out[name] = {"values": t.flatten().numpy(), "stats": activation_stats(t),
                             "run_dir": rec["run_dir"]}
            return out
        except UsageError:
            raise
        except Exception as e:  # a missing dataset, an unreadable checkpoint: say so and fall back
            print(f"{PROG}: activations: could not use the trained checkpoints ({type(e).__name__}: {e}); "
                  f"using freshly initialised models", file=sys.stderr)
    from onebit.data import DigitsData
    from onebit.models import BiRealResNet
    from onebit.quantizers import ApproxSign, MagnitudeAware

    x = _first_val_batch(DigitsData(seed=seed))
    out = {"source": "init", "detail": f"freshly initialised Bi-Real-18 (width {width}, seed {seed}, ApproxSign, "
                                       "magnitude-aware, BN batch statistics), no trained bireal/plain pair found"}
    for name, shortcut in (("bireal", True), ("plain", False)):
        torch.manual_seed(seed)
        model = BiRealResNet(ApproxSign(), MagnitudeAware(), depth=18, structure="bireal", shortcut=shortcut,
                             width=width, stem="small", in_channels=1, num_classes=10).train()
        t = block_input(model, x, block)
        out[name] = {"values": t.flatten().numpy(), "stats": activation_stats(t)}
    return out


def plot_activations(path: Path | str, records: Sequence[dict] | None = None, block: str = "layer2.-1",
                     width: int = FALLBACK_WIDTH, seed: int = 0, stage: str = "binary") -> tuple[Path, dict]:
    """Bi-Real section 3.1 (representational capability, cf. Fig. 1): histograms of the real-valued inputs to
    the Sign of one block with shortcuts (Bi-Real) and without (Plain). Without a shortcut a block input is
    BN(binary conv(binary input)), a per-channel affine map of an integer count, so it takes few distinct values;
    the shortcut adds the previous real-valued activation and enlarges that set. Each panel states the number of
    values, of distinct values and the std. Trained checkpoints when available, else fresh models (the title
    says which). Returns (path, data of :func:`activation_data`)."""
    data = activation_data(records, block, width, seed, stage)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (name, title, color) in zip(axes, (("bireal", "with shortcuts (Bi-Real)", "C0"),
                                                ("plain", "without shortcuts (Plain)", "C1"))):
        v, s = data[name]["values"], data[name]["stats"]
        ax.hist(v, bins=120, color=color, alpha=0.85)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"input of the Sign of {block}")
        ax.text(0.98, 0.97, f"values: {s['count']:,}\ndistinct: {s['distinct']:,}\n"
                f"distinct per channel: {s['distinct_per_channel']:,.1f}\nstd: {s['std']:.3g}",
                transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox=dict(boxstyle="round", fc="white", alpha=0.8))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("count (log)")
    fig.suptitle(f"Bi-Real section 3.1: block inputs to the Sign, {block}, shape "
                 f"{data['bireal']['stats']['shape']}\n{data['source']}: {data['detail']}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path), data


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the usage too)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))


def _prefix(args) -> str:
    return f"{_slug(args.study)}-" if getattr(args, "study", None) else ""


def cmd_curves(args, records=None) -> list[Path]:
    records = records if records is not None else load_records(args.root, args.study, args.where)
    path = Path(args.out) / f"{_prefix(args)}curves-{_slug(args.stage)}.png"
    return [plot_curves(records, path, args.stage, band=args.band, study=args.study)]


def cmd_ablation(args, records=None) -> list[Path]:
    records = records if records is not None else load_records(args.root, args.study, args.where)
    path = Path(args.out) / (f"{_prefix(args)}ablation-{_slug(args.stage)}-{_slug(args.metric.replace('/', '_'))}"
                             f"-by-{_slug(args.by)}.png")
    return [plot_ablation(records, path, args.stage, args.metric, args.by, args.color, args.study)]


def cmd_signs(args, records=None) -> list[Path]:
    return [plot_signs(Path(args.out) / "signs.png", beta=args.beta)]


def cmd_activations(args, records=None) -> list[Path]:
    if records is None:
        records = [] if args.fresh else load_records(args.root, args.study, args.where)
    path, data = plot_activations(Path(args.out) / f"{_prefix(args)}activations-{_slug(args.block)}.png",
                                  records, args.block, args.width, args.seed)
    for name in ("bireal", "plain"):
        s = data[name]["stats"]
        print(f"activations {data['source']} {name}: {s['count']} values, {s['distinct']} distinct, "
              f"{s['distinct_per_channel']:.1f} distinct per channel, std {s['std']:.4g}, shape {s['shape']}")
    return [path]


def cmd_all(args) -> list[Path]:
    records = load_records(args.root, args.study, args.where)
    paths = []
    for cmd in (cmd_curves, cmd_ablation, cmd_signs, cmd_activations):
        paths += cmd(args, records)
    return paths


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--out", default="analysis/figures", help="folder for the PNG files")
    rec = _Parser(add_help=False)
    rec.add_argument("--root", default="outputs", help="folder searched recursively for record.json")
    rec.add_argument("--study", default=None, help="only records of this study (sweep name)")
    rec.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                     help="only records whose option KEY equals VALUE (repeatable)")
    rec.add_argument("--stage", default="binary", help="stage: pretrain, binary, bn_retrain or real")
    curves = _Parser(add_help=False)
    curves.add_argument("--band", default="minmax", choices=BANDS, help="shaded band: min-max or ±1 std")
    abl = _Parser(add_help=False)
    abl.add_argument("--metric", default="test/top1")
    abl.add_argument("--by", default="structure", help="option whose values group the bars")
    abl.add_argument("--color", default="sign", help="option whose values colour the bars")
    act = _Parser(add_help=False)
    act.add_argument("--block", default="layer2.-1", help="layerN.i: the block whose Sign input is shown")
    act.add_argument("--width", type=int, default=FALLBACK_WIDTH, help="width of the fresh models (fallback)")
    act.add_argument("--seed", type=int, default=0, help="seed of the fresh models (fallback)")
    act.add_argument("--fresh", action="store_true",
                     help="activations: use freshly initialised models, read no records (works without runs)")
    sg = _Parser(add_help=False)
    sg.add_argument("--beta", type=float, default=5.0, help="SwishSign's b")

    parser = _Parser(prog="plots.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("curves", parents=[common, rec, curves], help="training curves per cell (mean over seeds)")
    sub.add_parser("ablation", parents=[common, rec, abl], help="final metric per cell, bars with std and n")
    sub.add_parser("signs", parents=[common, sg], help="Bi-Real Fig. 3: sign approximations and derivatives")
    sub.add_parser("activations", parents=[common, rec, act], help="Sign inputs with vs. without shortcuts")
    sub.add_parser("all", parents=[common, rec, curves, abl, act, sg], help="all four figures")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"curves": cmd_curves, "ablation": cmd_ablation, "signs": cmd_signs,
                "activations": cmd_activations, "all": lambda a: cmd_all(a)}
    try:
        paths = commands[args.command](args) if args.command == "all" else commands[args.command](args)
    except NoRecordsError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
