"""Figures from your own runs (and one that needs none), written as PNG files (``onebit.figures``).

    python analysis/plots.py                                              # = all: every figure that has data
    python analysis/plots.py all --root outputs --out /tmp/figures        # runs under outputs/, PNGs in /tmp/figures
    python analysis/plots.py curves --study bireal_table1 --stage binary  # mean over seeds per cell, per epoch
    python analysis/plots.py ablation --metric test/top1 --by structure --color sign   # the tables' cells as bars
    python analysis/plots.py signs --out /tmp/f                           # Bi-Real Fig. 3 (no records needed)
    python analysis/plots.py activations --block layer2.-1                # block inputs, with vs. without shortcuts
    python analysis/plots.py activations --fresh --width 32               # the same, fresh models, no records
    python analysis/plots.py conclusions                                  # one figure per Bi-Real conclusion

Without a subcommand it draws ``all``. The runs are read from ``--root`` (default: ``$ONEBIT_OUTPUTS``, else
``outputs``, as every entry point) and the figures written to ``--out`` (default: ``<root>/figures``, beside the
runs, never into the source tree).

``onebit.figures`` draws; the runs, cells and numbers come from ``onebit.results`` (the same loader, cells, splits and
selection as the tables; every title says "cells as in tables.py"): one figure per study (``--all-studies`` mixes
them, and the title says so), smoke runs left out unless ``--include-smoke``, one run per cell and seed (the latest
finished), a damaged record named on stderr and skipped. Curves and bars are split as the tables split: runs at one
``--by`` x ``--color`` position that differ in any other key (``epochs=2`` and ``epochs=8``) get separate figures
(``...-epochs=2.png``), titled with the keys they fix; labels show options and readable values, never ``<absent>`` or
a list. Failed and running runs never enter a mean or a curve, but every figure counts them.

What a figure pasted into a paper needs: the ablation bars show the tables' cells (each run's final stage by
default; mean ± std over seeds from ``onebit.results.cells``, n below each bar) on a value axis around the data, not
from 0 (the axis label says where it starts); compared histograms share one x range and their bins; legends sit
outside the axes; each Bi-Real conclusion gets a figure of its paired differences with the conclusions table's
noise band and the paper's difference.

Exit codes: 0 ok; 1 no records under the root, or a root that does not exist (one line naming it); 2 bad argument
(one ``onebit: error:`` line listing the valid values, from the formatter every entry point shares). Every file is
written atomically (temporary file, then ``os.replace``). :func:`main` takes the command line as a list and returns
the exit status (it never exits), so tests and scripts call it in-process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from onebit.cli.runs import Parser, run_main
from onebit.core.errors import ConfigError
from onebit.core.paths import output_root
from onebit.core.registry import BINARY, DEFAULT_METRIC
from onebit.figures.common import PROG, slug
from onebit.figures.draw import conclusion_slug, plot_ablation, plot_conclusion, plot_curves
from onebit.results.bireal import CONCLUSIONS
from onebit.results.figures import (
    BANDS,
    FINAL,
    UsageError,
    check_metric,
    check_option,
    conclusion_data,
    figure_parts,
    where,
)
from onebit.results.load import NoRunsError, load_records
from onebit.results.select import Selection, select

COMMANDS = ("curves", "ablation", "signs", "activations", "conclusions", "all")
DEFAULT_COMMAND = "all"


class NoRecordsError(LookupError):
    """Nothing to plot under the root: exit 1 with this one line."""


def _probe():
    """``onebit.figures.probe``, imported when a figure needs models (torch, Lightning, datasets: seconds at start-up
    that curves, ablation and conclusions do without)."""
    from onebit.figures import probe

    return probe


def selections(args) -> list[Selection]:
    """The runs under ``--root`` per study (``onebit.results.select``), filtered by ``--where``; a study left
    empty is named on stderr. Raises :class:`NoRecordsError` when nothing is left."""
    try:
        records, _ = load_records(args.root)
        sels = select(records, args.study, args.all_studies, args.include_smoke)
    except NoRunsError as e:
        raise NoRecordsError(str(e)) from None
    for sel in sels:
        sel.records = where(sel.records, args.where)
    for sel in sels:
        if not sel.records:
            print(f"{PROG}: {sel.label}: no runs to plot ({' '.join(sel.notes) or 'none match --where'})",
                  file=sys.stderr)
    sels = [s for s in sels if s.records]
    if not sels:
        raise NoRecordsError(f"no run records matching {' '.join(args.where)} under {args.root}")
    return sels


def _prefix(args, sel: Selection, several: bool) -> str:
    """File-name prefix: the study when one was asked for or several are drawn; ``all_studies-`` when mixed."""
    if sel.study is None:
        return "all_studies-"
    return f"{slug(sel.study)}-" if args.study or several else ""


def parts(args, sel: Selection):
    """The figures of one selection: its runs split as the tables split theirs, by what differs at one position of
    the compared options ``--by`` and ``--color`` (``onebit.results.figures.figure_parts``): runs with epochs=2 and
    epochs=8 never share a figure; each part's file name ends in ``-key=value`` and its title names the keys."""
    check_option(sel.records, args.by, "--by")
    check_option(sel.records, args.color, "--color")
    return figure_parts(sel, sel.records, [args.by, args.color])


def cmd_curves(args, sels=None) -> list[Path]:
    sels = sels if sels is not None else selections(args)
    stage = args.stage or BINARY
    return [plot_curves(part.records, Path(args.out) / f"{_prefix(args, sel, len(sels) > 1)}curves-"
                        f"{slug(stage)}{part.name}.png", stage, band=args.band, scope=part.label, notes=part.notes)
            for sel in sels for part in parts(args, sel)]


def cmd_ablation(args, sels=None) -> list[Path]:
    sels = sels if sels is not None else selections(args)
    stage = args.stage or FINAL
    name = f"ablation-{slug(stage)}-{slug(args.metric.replace('/', '_'))}-by-{slug(args.by)}"
    return [plot_ablation(part.records, Path(args.out) / f"{_prefix(args, sel, len(sels) > 1)}{name}{part.name}.png",
                          stage, metric=args.metric, by=args.by, color=args.color, scope=part.label, notes=part.notes)
            for sel in sels for part in parts(args, sel)]


def cmd_conclusions(args, sels=None, required: bool = True) -> list[Path]:
    """One figure per Bi-Real Table 1 conclusion with paired runs (``conclusion-bireal-<name>.png``), per study.
    Without any: exit 1 when asked for (``conclusions``), one line on stderr under ``all``."""
    sels = sels if sels is not None else selections(args)
    paths = []
    for sel in sels:
        check_metric(sel.records, FINAL, args.metric)
        found = conclusion_data(sel, args.metric)
        if not found:
            print(f"{PROG}: conclusions: {sel.label}: no paired Bi-Real Table 1 runs (two runs identical except "
                  f"one option of {', '.join(c[1] for c in CONCLUSIONS)}, same seed)", file=sys.stderr)
        prefix = _prefix(args, sel, len(sels) > 1)
        paths += [plot_conclusion(name, parts, Path(args.out) / f"{prefix}conclusion-bireal-{conclusion_slug(name)}"
                                  ".png", metric=args.metric, scope=sel.label, notes=sel.notes)
                  for name, parts in found.items()]
    if required and not paths:
        raise NoRecordsError(f"no paired Bi-Real Table 1 runs to plot under {args.root}")
    return paths


def cmd_signs(args, sels=None) -> list[Path]:
    return [_probe().plot_signs(Path(args.out) / "signs.png", beta=args.beta)]


def cmd_activations(args, sels=None) -> list[Path]:
    if sels is None:
        sels = [Selection("fresh models", None, [])] if args.fresh else selections(args)
    probe = _probe()
    width = probe.FALLBACK_WIDTH if args.width is None else args.width
    paths = []
    for sel in sels:
        prefix = "" if args.fresh else _prefix(args, sel, len(sels) > 1)
        path, data = probe.plot_activations(Path(args.out) / f"{prefix}activations-{slug(args.block)}.png",
                                            sel.records, args.block, width, args.seed, args.stage or BINARY)
        for name in ("bireal", "plain"):
            s = data[name]["stats"]
            print(f"activations {data['source']} {name}: {s['count']} values, {s['distinct']} distinct, "
                  f"{s['distinct_per_channel']:.1f} distinct per channel, std {s['std']:.4g}, shape {s['shape']}")
        paths.append(path)
    return paths


def cmd_all(args) -> list[Path]:
    sels = selections(args)
    paths = []
    for cmd in (cmd_curves, cmd_ablation, cmd_signs, cmd_activations):
        paths += cmd(args, sels)
    return paths + cmd_conclusions(args, sels, required=False)


def build_parser() -> argparse.ArgumentParser:
    """The command line; ``--root`` defaults to :func:`onebit.core.paths.output_root` as read now."""
    common = Parser(add_help=False)
    common.add_argument("--out", default=None, help="folder for the PNG files (default: <root>/figures)")
    rec = Parser(add_help=False)
    rec.add_argument("--root", default=output_root(),
                     help="folder searched recursively for record.json (default: $ONEBIT_OUTPUTS, else outputs; "
                          "now %(default)s)")
    rec.add_argument("--study", default=None, help="only records of this study (default: one figure per study)")
    rec.add_argument("--all-studies", action="store_true", help="mix every study in one figure (the title says so)")
    rec.add_argument("--include-smoke", action="store_true",
                     help="include smoke runs (cut short by a Trainer limit; the title says so)")
    rec.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                     help="only records whose option KEY equals VALUE (repeatable)")
    stg = Parser(add_help=False)
    stg.add_argument("--stage", default=None,
                     help="stage (pretrain, binary, bn_retrain, ...; default binary); the ablation also takes "
                          f"'{FINAL}' (each run's last stage, as the tables; its default)")
    curves = Parser(add_help=False)
    curves.add_argument("--band", default="minmax", choices=BANDS, help="shaded band: min-max or ±1 std")
    met = Parser(add_help=False)
    met.add_argument("--metric", default=DEFAULT_METRIC, help="metric of the bars and of the paired differences")
    abl = Parser(add_help=False)
    abl.add_argument("--by", default="structure",
                     help="option whose values group the bars (runs at one --by x --color position that differ in any "
                          "other key go into separate figures, -key=value in the file name, as the tables split)")
    abl.add_argument("--color", default="sign", help="option whose values colour the bars")
    act = Parser(add_help=False)
    act.add_argument("--block", default="layer2.-1", help="layerN.i: the block whose Sign input is shown")
    act.add_argument("--width", type=int, default=None,
                     help="width of the fresh models (fallback; default: the digits data's default width, 32)")
    act.add_argument("--seed", type=int, default=0, help="seed of the fresh models (fallback)")
    act.add_argument("--fresh", action="store_true",
                     help="activations: use freshly initialised models, read no records (works without runs)")
    sg = Parser(add_help=False)
    sg.add_argument("--beta", type=float, default=5.0, help="SwishSign's b")

    parser = Parser(prog="plots.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser,
                                metavar="{" + ",".join(COMMANDS) + "}", help=f"default: {DEFAULT_COMMAND}")
    sub.add_parser("curves", parents=[common, rec, stg, curves, abl],
                   help="training curves per cell (mean over seeds; split as the ablation, by --by and --color)")
    sub.add_parser("ablation", parents=[common, rec, stg, met, abl], help="final metric per cell, bars with std and n")
    sub.add_parser("signs", parents=[common, sg], help="Bi-Real Fig. 3: sign approximations and derivatives")
    sub.add_parser("activations", parents=[common, rec, stg, act], help="Sign inputs with vs. without shortcuts")
    sub.add_parser("conclusions", parents=[common, rec, met],
                   help="Bi-Real Table 1's conclusions: paired differences, noise band, the paper's difference")
    sub.add_parser("all", parents=[common, rec, stg, curves, met, abl, act, sg],
                   help="all figures (conclusions where paired runs exist); the default")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The arguments of ``plots.py argv``: without a subcommand (nothing, or options first) those of ``all``; the
    default ``--out`` is ``<root>/figures`` (``signs`` has no ``--root``: the default output root's)."""
    argv = list(argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = [DEFAULT_COMMAND, *argv]
    args = build_parser().parse_args(argv)
    if args.out is None:
        args.out = str(Path(getattr(args, "root", None) or output_root()) / "figures")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``plots.py argv`` (default: the process's command line) and return its exit status; never exits. Every
    error is one ``onebit: error:`` line: a bad argument (``onebit.cli.runs.Parser``, as every entry point) or
    value, exit 2; nothing to plot under the root, exit 1."""
    commands = {"curves": cmd_curves, "ablation": cmd_ablation, "signs": cmd_signs, "activations": cmd_activations,
                "conclusions": cmd_conclusions, "all": cmd_all}

    def body() -> int:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        try:
            paths = commands[args.command](args)
        except UsageError as e:
            raise ConfigError(str(e)) from None
        except NoRecordsError as e:
            print(f"onebit: error: {e}", file=sys.stderr)
            return 1
        for p in paths:
            print(f"wrote {p}")
        return 0

    return run_main(body)
