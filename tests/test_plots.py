"""The figures (``onebit.figures``) and their command line (``onebit.cli.plots``, called in-process; one real
process runs ``python analysis/plots.py``) on crafted records: the curve, bar and sign data equal hand-computed
values, failed runs are counted but never averaged, a corrupt record is reported and skipped, the PNGs are real PNGs,
the CLI's exit codes and default folders (no subcommand: all; ``<root>/figures``), and the activation figure's
statistics come from the hooked block inputs (fresh and trained models). What a paper needs, read from the drawn
artists (Agg, no pixels): bar axes around the data, error bars = the tables' std, labels and legends that overlap
nothing, histograms on shared bins, one figure per Bi-Real conclusion with the table's numbers."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import scipy.stats
import torch
from conftest import run_cli, run_process
from test_results import make_config, make_record

from onebit.cli import plots as cli
from onebit.core.files import atomic_write_json
from onebit.figures import draw, probe
from onebit.figures.common import value_limits
from onebit.results.cells import group_cells, label_items
from onebit.results.figures import UsageError, ablation_data, curve_data, shortcut_pair
from onebit.results.load import load_records
from onebit.results.select import select

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "analysis" / "plots.py"
PNG = b"\x89PNG\r\n\x1a\n"


def history(val, loss):
    """A schema-2 history: entry e holds epoch e's validation and training metrics."""
    return [{"epoch": e, "val/top1": v, "val/loss": 1.0 - v, "train/loss": l, "train/top1": 1.0 - l}
            for e, (v, l) in enumerate(zip(val, loss))]


def write_record(root: Path, name: str, *, sign="approx", structure="bireal", seed=0, status="finished",
                 val=(0.5, 0.7, 0.8), loss=(1.0, 0.6, 0.4), test=0.8, study="s", started=0.0, **kw):
    metrics = {"val/top1": val[-1], "val/top1_best": max(val), "test/top1": test, "test/top5": 1.0,
               "train/loss": loss[-1], "train/top1": 1.0 - loss[-1]}
    return make_record(root, name, sign=sign, structure=structure, seed=seed, status=status, study=study,
                       started=started, epochs=len(val), history=history(val, loss), metrics=metrics,
                       real_top1=0.99 if status != "failed" else None, **kw)


def load(root, **kw):
    """The records of the single study under ``root``, as the CLI selects them."""
    (sel,) = select(load_records(root)[0], **kw)
    return sel.records


# two cells (sign approx / ste) x 3 seeds, one failed approx run, one corrupt file
VAL = {("approx", 0): (0.50, 0.70, 0.80), ("approx", 1): (0.60, 0.80, 0.90), ("approx", 2): (0.40, 0.90, 0.85),
       ("ste", 0): (0.30, 0.50, 0.60), ("ste", 1): (0.20, 0.40, 0.70), ("ste", 2): (0.10, 0.60, 0.65)}
LOSS = {("approx", 0): (1.0, 0.5, 0.2), ("approx", 1): (1.2, 0.7, 0.4), ("approx", 2): (0.8, 0.3, 0.3),
        ("ste", 0): (2.0, 1.0, 0.5), ("ste", 1): (2.2, 1.4, 0.9), ("ste", 2): (1.8, 0.9, 0.7)}
TEST = {("approx", 0): 0.80, ("approx", 1): 0.86, ("approx", 2): 0.83,
        ("ste", 0): 0.70, ("ste", 1): 0.60, ("ste", 2): 0.65}


@pytest.fixture
def root(tmp_path):
    for (sign, seed), val in VAL.items():
        write_record(tmp_path, f"{sign}{seed}", sign=sign, seed=seed, val=val, loss=LOSS[sign, seed],
                     test=TEST[sign, seed])
    write_record(tmp_path, "approx3-failed", sign="approx", seed=3, status="failed")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "record.json").write_text('{"schema": 1, "status": "fini')
    return tmp_path


def test_load_reports_corrupt_and_keeps_the_rest(root, capsys):
    records = load(root)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(records) == 7
    assert len(err) == 1 and err[0].startswith(f"onebit: skipped {root / 'corrupt' / 'record.json'}: ")


def test_rerun_of_same_seed_keeps_latest_finished(tmp_path):
    write_record(tmp_path, "a", status="failed", started=5.0)
    write_record(tmp_path, "b", test=0.5, started=1.0)
    write_record(tmp_path, "c", test=0.6, started=2.0)
    (rec,) = load(tmp_path)
    assert rec.stages["binary"].metrics["test/top1"] == 0.6


def test_schema1_lagged_history_is_aligned_when_read(tmp_path):
    """Schema 1 stored train/* one entry late; the records' migration aligns it, the curves use it as read."""
    val, loss = (0.5, 0.7, 0.8), (1.0, 0.6, 0.4)
    hist = [{"epoch": e, "val/top1": v, **({"train/loss": loss[e - 1]} if e else {})} for e, v in enumerate(val)]
    config = make_config()
    rec = {"schema": 1, "job_key": "k", "study": "s", "status": "finished", "error": None, "run_dir": str(tmp_path),
           "options": {"structure": "bireal", "sign": "approx", "seed": 0}, "config": config,
           "timings": {"started": 1.0},
           "stages": {"binary": {"status": "finished", "history": hist,
                                 "metrics": {"train/loss": 0.4, "test/top1": 0.8}}}}
    atomic_write_json(tmp_path / "record.json", rec)
    (cell,) = curve_data(load(tmp_path), "binary")
    assert cell.series["train/loss"]["mean"].tolist() == [1.0, 0.6, 0.4]
    assert cell.series["val/top1"]["mean"].tolist() == [0.5, 0.7, 0.8]


def test_curve_data_means_and_bands(root):
    cells = {c.label: c for c in curve_data(load(root), "binary", band="minmax")}
    assert set(cells) == {"sign=approx", "sign=ste"}
    approx = cells["sign=approx"]
    assert approx.n == 3 and approx.runs == 4 and approx.counts["failed"] == 1 and approx.seeds == [0, 1, 2]
    v = approx.series["val/top1"]
    assert v.index.tolist() == [0, 1, 2]
    np.testing.assert_allclose(v["mean"], [0.5, 0.8, 0.85])
    np.testing.assert_allclose(v["lo"], [0.4, 0.7, 0.8])
    np.testing.assert_allclose(v["hi"], [0.6, 0.9, 0.9])
    assert v["n"].tolist() == [3, 3, 3]
    loss = approx.series["train/loss"]  # aligned to its epoch: the last epoch comes from the final metrics
    np.testing.assert_allclose(loss["mean"], [1.0, 0.5, 0.3])
    ste = cells["sign=ste"]
    assert ste.runs == 3 and ste.counts["failed"] == 0
    np.testing.assert_allclose(ste.series["val/top1"]["mean"], [0.2, 0.5, 0.65])
    std = curve_data(load(root), "binary", band="std")
    s = {c.label: c for c in std}["sign=ste"].series["train/loss"]
    sd = np.std([2.0, 2.2, 1.8], ddof=1)
    assert s["std"].iloc[0] == pytest.approx(sd) and s["hi"].iloc[0] == pytest.approx(2.0 + sd)


@pytest.mark.parametrize("stage", ["binary", "final"])
def test_ablation_data_excludes_but_counts_failed(root, stage):
    """The bars are the tables' cells (``cells.summarize``, 100 x metric), for a named stage and for each run's
    final stage (the tables' default)."""
    df = ablation_data(load(root), stage, "test/top1", by="structure", color="sign")
    assert df["sign"].tolist() == ["approx", "ste"]
    a, s = df["cell"]
    assert (a.n, a.failed, a.running, a.missing) == (3, 1, 0, 0)
    assert a.mean == pytest.approx(100 * (0.80 + 0.86 + 0.83) / 3)
    assert a.std == pytest.approx(100 * np.std([0.80, 0.86, 0.83], ddof=1))
    assert (s.n, s.failed) == (3, 0)
    assert s.mean == pytest.approx(65.0) and s.std == pytest.approx(5.0)
    assert sorted(a.seeds) == [0, 1, 2]
    assert a.text() == "83.0 ± 3.0 (n=3), 1 failed"  # the tables' cell text


def test_cells_split_by_config_values_not_in_options(tmp_path):
    for nl in ("none", "prelu"):
        for seed in (0, 1):
            write_record(tmp_path, f"{nl}{seed}", seed=seed, test=0.5 if nl == "none" else 0.7,
                         model__nonlinearity=nl, output_root=f"/somewhere/{seed}")
    df = ablation_data(load(tmp_path), by="structure", color="sign")
    assert df["label"].tolist() == ["model.nonlinearity=none", "model.nonlinearity=prelu"]
    assert [c.n for c in df["cell"]] == [2, 2] and [c.mean for c in df["cell"]] == pytest.approx([50.0, 70.0])


def test_ablation_of_a_loss_is_in_its_own_units_as_its_cell_says(root):
    """A loss is not an accuracy: the cell, its text, the bars and the labels hold the recorded values (no x 100),
    and each bar's label is the cell's own text."""
    a, s = ablation_data(load(root), metric="train/loss")["cell"]
    assert a.values == pytest.approx([0.2, 0.4, 0.3]) and a.text() == "0.3 ± 0.1 (n=3), 1 failed"
    assert s.text() == "0.7 ± 0.2 (n=3)"
    fig = draw.ablation_figure(load(root), metric="train/loss")
    ax = fig.axes[0]
    assert [b.get_height() for b in ax.containers[0]] == pytest.approx([0.3, 0.7])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.3 ± 0.1 (n=3)\n1 failed", "0.7 ± 0.2 (n=3)"]
    assert ax.get_ylabel().startswith("train/loss\naxis starts at 0.1")  # no "(%)"
    plt.close(fig)


def test_sign_derivatives_are_the_components(tmp_path):
    from onebit.nn.quantizers import ApproxSign, SteSign, SwishSign

    x = np.array([-1.5, -1.0, -0.75, -0.25, 0.0, 0.3, 0.5, 0.99, 1.0, 2.0])
    c = probe.sign_curves(x)
    t = torch.as_tensor(x)
    np.testing.assert_array_equal(c["approx"]["df"], ApproxSign().derivative(t).numpy())
    np.testing.assert_allclose(c["approx"]["df"], [0, 0, 0.5, 1.5, 2, 1.4, 1, 0.02, 0, 0], atol=1e-12)
    np.testing.assert_array_equal(c["clip"]["df"], SteSign(1.0).derivative(t).numpy())
    np.testing.assert_allclose(c["swish"]["df"], SwishSign(5.0).derivative(t).numpy())
    np.testing.assert_allclose(c["approx"]["f"], [-1, -1, -0.9375, -0.4375, 0, 0.51, 0.75, 0.9999, 1, 1])
    # each component's derivative is the slope of the function drawn above it (away from the kinks)
    grid = np.linspace(-2, 2, 40001)
    g = probe.sign_curves(grid)
    inner = (np.abs(np.abs(grid) - 1) > 1e-2) & (np.abs(grid) > 1e-2)
    for name in ("clip", "approx", "swish"):
        slope = np.gradient(g[name]["f"], grid)
        np.testing.assert_allclose(slope[inner], g[name]["df"][inner], atol=2e-3, err_msg=name)
    path = probe.plot_signs(tmp_path / "signs.png")
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


def test_pngs_are_written_atomically_and_valid(root, tmp_path):
    records = load(root)
    out = tmp_path / "figs"
    paths = [draw.plot_curves(records, out / "c.png", band="std"), draw.plot_ablation(records, out / "a.png")]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == PNG and len(data) > 1000
    assert sorted(f.name for f in out.iterdir()) == ["a.png", "c.png"]  # no temporary file left


def test_many_cells_use_small_multiples(tmp_path):
    for structure in ("bireal", "res", "plain"):
        for sign in ("approx", "ste", "swish"):
            for weight_seed in (0, 1):
                write_record(tmp_path, f"{structure}-{sign}-{weight_seed}", structure=structure, sign=sign,
                             seed=weight_seed)
    records = load(tmp_path)
    cells = [label_items(rs) for rs in group_cells(records).values()]
    assert len(cells) == 9 and draw.choose_facet(cells, max_lines=3) == "structure"
    assert draw.plot_curves(records, tmp_path / "c.png").read_bytes()[:8] == PNG


def test_script_runs_as_a_process(root, tmp_path):
    """The one real process: ``python analysis/plots.py`` runs ``onebit.cli.plots.main`` and exits with its status
    (1 with one line naming an empty root; 0 with the figure written and named on stdout)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_process([sys.executable, str(SCRIPT), "curves", "--root", str(empty), "--out", str(tmp_path / "o")],
                    timeout=120)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(empty) in lines[0]
    assert not (tmp_path / "o").exists()
    r = run_process([sys.executable, str(SCRIPT), "ablation", "--root", str(root), "--out", str(tmp_path / "o")],
                    timeout=120)
    assert r.returncode == 0, r.stderr
    path = tmp_path / "o" / "ablation-final-test_top1-by-structure.png"
    assert r.stdout.strip().splitlines() == [f"wrote {path}"] and path.read_bytes()[:8] == PNG


def test_cli_empty_root_exits_1_naming_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli(cli.main, ["curves", "--root", str(empty), "--out", str(tmp_path / "o")])
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(empty) in lines[0]
    assert not (tmp_path / "o").exists()


def test_cli_unknown_metric_exits_2_listing_valid(root, tmp_path):
    r = run_cli(cli.main, ["ablation", "--root", str(root), "--out", str(tmp_path / "o"), "--metric", "test/top7"])
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]  # preceded by the corrupt-record line
    assert "test/top7" in last and "test/top1" in last and "val/top1_best" in last
    assert len(r.stderr.strip().splitlines()) == 2


ALL = ["ablation-final-test_top1-by-structure.png", "activations-layer2.-1.png",
       "conclusion-bireal-ApproxSign_vs_STE.png", "curves-binary.png", "signs.png"]


def test_cli_unknown_stage_and_option_exit_2(root, tmp_path):
    r = run_cli(cli.main, ["curves", "--root", str(root), "--out", str(tmp_path), "--stage", "bogus"])
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()[-1]
    assert "bogus" in err and "binary, pretrain" in err and "final" not in err  # curves: recorded stages only
    r = run_cli(cli.main, ["ablation", "--root", str(root), "--out", str(tmp_path), "--stage", "bogus"])
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()[-1]
    assert "bogus" in err and "binary, pretrain, final" in err
    r = run_cli(cli.main, ["ablation", "--root", str(root), "--out", str(tmp_path), "--by", "colour"])
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()[-1]
    assert "colour" in err and "structure" in err and "sign" in err
    r = run_cli(cli.main, ["conclusions", "--root", str(root), "--out", str(tmp_path), "--metric", "test/top7"])
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()[-1]
    assert "test/top7" in err and "test/top1" in err
    r = run_cli(cli.main, ["all", "--root", str(root), "--out", str(tmp_path / "all"), "--width", "4"])
    assert r.returncode == 0, r.stderr
    written = sorted(p.name for p in (tmp_path / "all").iterdir())
    # the fixture's runs pair on sign only (same seeds): one conclusion figure
    assert written == ALL
    assert sorted(line for line in r.stdout.splitlines() if line.startswith("wrote ")) == [
        f"wrote {tmp_path / 'all' / n}" for n in ALL]


@pytest.mark.slow  # ~20 s on 2 busy cores: every figure twice, fresh width-32 models once
def test_cli_without_subcommand_draws_all_under_the_output_root(root, tmp_path):
    """As a new user: ``plots.py`` alone reads ``$ONEBIT_OUTPUTS`` and writes every figure to ``<root>/figures``,
    nothing into the working directory (the source tree); options without a subcommand are ``all``'s."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    r = run_cli(cli.main, [], env={"ONEBIT_OUTPUTS": str(root)}, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (root / "figures").iterdir()) == ALL
    assert [line for line in r.stdout.splitlines() if line.startswith("wrote ")] == [
        f"wrote {root / 'figures' / n}" for n in ("curves-binary.png", "ablation-final-test_top1-by-structure.png",
                                                  "signs.png", "activations-layer2.-1.png",
                                                  "conclusion-bireal-ApproxSign_vs_STE.png")]
    assert all((root / "figures" / n).read_bytes()[:8] == PNG for n in ALL)
    # the figures under the root are not records: a second run reads the same runs (one corrupt record named)
    other = tmp_path / "other"
    r = run_cli(cli.main, ["--root", str(root), "--out", str(other), "--width", "4"], env={"ONEBIT_OUTPUTS": None},
                cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in other.iterdir()) == ALL
    assert list(cwd.iterdir()) == []


def test_cli_default_root_and_out(root, tmp_path):
    """``--root`` defaults to ``$ONEBIT_OUTPUTS``, else ``outputs`` (relative to the working directory); ``--out`` to
    ``<root>/figures``, ``signs`` (no records) included."""
    r = run_cli(cli.main, ["ablation"], env={"ONEBIT_OUTPUTS": str(root)}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"wrote {root / 'figures' / 'ablation-final-test_top1-by-structure.png'}"
    r = run_cli(cli.main, ["signs"], env={"ONEBIT_OUTPUTS": str(tmp_path / "elsewhere")}, cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "elsewhere" / "figures" / "signs.png").read_bytes()[:8] == PNG
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    r = run_cli(cli.main, ["signs"], env={"ONEBIT_OUTPUTS": None}, cwd=cwd)
    assert r.returncode == 0 and r.stdout.strip() == "wrote outputs/figures/signs.png"
    assert (cwd / "outputs" / "figures" / "signs.png").read_bytes()[:8] == PNG
    r = run_cli(cli.main, ["curves"], env={"ONEBIT_OUTPUTS": None}, cwd=cwd)  # outputs/ holds no record
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].endswith("outputs")


def test_cli_help_and_bad_subcommand_return_instead_of_exiting(tmp_path):
    r = run_cli(cli.main, ["--help"])
    assert r.returncode == 0 and r.stdout.startswith("usage: plots.py") and "Without a subcommand" in r.stdout
    r = run_cli(cli.main, ["signs", "--help"])
    assert r.returncode == 0 and "--beta" in r.stdout and "<root>/figures" in r.stdout
    r = run_cli(cli.main, ["bogus"])
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "bogus" in line and all(c in line for c in cli.COMMANDS)
    r = run_cli(cli.main, ["curves", "--band", "wide", "--root", str(tmp_path)])
    assert r.returncode == 2 and "minmax" in r.stderr and "std" in r.stderr


def test_activations_fallback_stats_come_from_the_hooked_tensor(tmp_path):
    path, data = probe.plot_activations(tmp_path / "act.png", records=[], block="layer2.-1", width=8, seed=0)
    assert data["source"] == "init" and path.read_bytes()[:8] == PNG
    for name in ("bireal", "plain"):
        s, v = data[name]["stats"], data[name]["values"]
        assert s["shape"] == (64, 16, 4, 4)  # first digits val batch, 2 x width channels, 8x8 -> 4x4 in layer2
        assert s["count"] == 64 * 16 * 4 * 4 == v.size
        assert s["distinct"] == np.unique(v).size
        assert s["std"] == pytest.approx(np.std(v.astype(np.float64), ddof=1), rel=1e-6)
    # without a shortcut the block input is a BatchNorm output (batch statistics at init): std 1 per channel
    assert data["plain"]["stats"]["std"] == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(UsageError, match="layer2 has 4 blocks"):
        probe.activation_data([], block="layer2.9", width=4)


def test_activations_trained_pair_from_checkpoints(tmp_path):
    from onebit.data import DigitsData
    from onebit.nn.models import BiRealResNet
    from onebit.nn.quantizers import ApproxSign, MagnitudeAware

    models = {}
    for structure in ("bireal", "plain"):  # the same config but model.shortcut (width 4, batches of 32)
        write_record(tmp_path, structure, structure=structure, width=4, data__batch_size=32)
        torch.manual_seed(1)
        m = BiRealResNet(ApproxSign(), MagnitudeAware(), structure="bireal", shortcut=structure == "bireal",
                         width=4, stem="small", in_channels=1, num_classes=10)
        for bn in m.modules():  # non-trivial BN statistics, as after training
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
        ckpt = tmp_path / structure / "checkpoints" / "binary" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        torch.save({"state_dict": {f"model.{k}": v for k, v in m.state_dict().items()}}, ckpt)
        models[structure] = m.eval()
    records = load(tmp_path)
    assert [r.options["structure"] for r in shortcut_pair(records)] == ["bireal", "plain"]
    data = probe.activation_data(records, block="layer2.-1")
    assert data["source"] == "trained"
    d = DigitsData(batch_size=32)
    d.setup("fit")
    x, _ = next(iter(d.val_dataloader()))
    for structure, m in models.items():  # the block input computed without hooks: the previous block's output
        with torch.no_grad():
            expected = m.layer2[:-1](m.layer1(m.bn1(m.conv1(x))))
        s = data[structure]["stats"]
        assert s["shape"] == (32, 8, 4, 4) and s["count"] == expected.numel()
        np.testing.assert_allclose(data[structure]["values"], expected.flatten().numpy(), rtol=1e-5, atol=1e-6)
        assert s["std"] == pytest.approx(expected.double().std().item(), rel=1e-6)
        assert s["distinct"] == torch.unique(expected).numel()


# ----------------------------------------------------------------------------------------------------------
# Figures for papers: read from the drawn artists (Agg), never from pixels
# ----------------------------------------------------------------------------------------------------------


def _no_overlap(boxes):
    return all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _legend_off_axes(fig, ax, legend):
    fig.canvas.draw()
    return not legend.get_window_extent().overlaps(ax.get_window_extent())


@pytest.fixture
def high_root(tmp_path):
    """Six cells at 94-98 % (a 3-point effect), long labels (model.nonlinearity), 3 seeds each."""
    tops = {("approx", "none"): (0.970, 0.975, 0.980), ("ste", "none"): (0.950, 0.945, 0.955),
            ("approx", "prelu"): (0.965, 0.960, 0.972), ("ste", "prelu"): (0.940, 0.948, 0.951),
            ("approx", "rprelu_per_channel"): (0.968, 0.971, 0.969),
            ("ste", "rprelu_per_channel"): (0.949, 0.952, 0.94)}
    for (sign, nl), values in tops.items():
        for s, v in enumerate(values):
            write_record(tmp_path, f"{sign}-{nl}-{s}", sign=sign, seed=s, test=v, model__nonlinearity=nl)
    return tmp_path


def test_ablation_axis_spans_the_data_with_the_tables_std_as_error_bars(high_root):
    from onebit.results.cells import group_cells as cells_of
    from onebit.results.cells import summarize

    records = load(high_root)
    fig = draw.ablation_figure(records, metric="test/top1")
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert 90 < lo < 94 and 98 < hi < 100  # around 94-98 %, not from 0
    assert "not 0" in ax.get_ylabel()
    # error bars: the half length of every segment is the std of that cell as the tables compute it
    (bars,) = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    segs = bars.lines[2][0].get_segments()
    drawn = sorted((round(float(s[0][0]), 6), (s[1][1] - s[0][1]) / 2, (s[1][1] + s[0][1]) / 2) for s in segs)
    tables = sorted((c.std, c.mean) for c in (summarize(rs, "test/top1") for rs in cells_of(records).values()))
    assert len(drawn) == 6
    assert sorted((h, m) for _, h, m in drawn) == [pytest.approx(t, abs=1e-12) for t in tables]
    # every bar says its n; the labels of neighbouring bars do not overlap once drawn
    fig.canvas.draw()
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    assert len(labels) == 6 and all("(n=3)" in t.get_text() for t in labels)
    assert _no_overlap([t.get_window_extent() for t in labels])
    assert _legend_off_axes(fig, ax, ax.get_legend())
    plt.close(fig)


def test_ablation_axis_starts_at_0_only_when_the_data_reach_it(tmp_path):
    for s, (a, b) in enumerate([(0.05, 0.60), (0.10, 0.70), (0.08, 0.65)]):
        write_record(tmp_path, f"a{s}", sign="approx", seed=s, test=a)
        write_record(tmp_path, f"s{s}", sign="ste", seed=s, test=b)
    fig = draw.ablation_figure(load(tmp_path))
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0.0 and "not 0" not in ax.get_ylabel()
    plt.close(fig)
    assert value_limits([95.0, 98.0, np.nan], percent=True) == pytest.approx((95 - 0.36, 98 + 0.36))
    assert value_limits([0.5, 99.9], percent=True) == (0.0, 100.0)
    assert value_limits([-2.0, 3.0], percent=True) == pytest.approx((-2.6, 3.6))  # a difference: not clipped


def test_curves_legend_is_off_the_data(root):
    fig = draw.curves_figure(load(root))
    (legend,) = fig.legends
    for ax in fig.axes:
        assert _legend_off_axes(fig, ax, legend)
    plt.close(fig)


def test_activation_histograms_share_x_range_and_bins():
    fig, data = probe.activations_figure([], block="layer2.-1", width=4, seed=0)
    a, b = fig.axes
    assert a.get_xlim() == b.get_xlim()
    edges_a = [p.get_x() for p in a.patches]
    assert edges_a == [p.get_x() for p in b.patches] and len(edges_a) == 120
    lo = min(data["bireal"]["values"].min(), data["plain"]["values"].min())
    hi = max(data["bireal"]["values"].max(), data["plain"]["values"].max())
    assert a.get_xlim() == pytest.approx((lo, hi))
    assert sum(p.get_height() for p in a.patches) == data["bireal"]["stats"]["count"]  # every value in a bin
    assert sum(p.get_height() for p in b.patches) == data["plain"]["stats"]["count"]
    plt.close(fig)


@pytest.fixture
def pairs_root(tmp_path):
    """Bi-Real Table 1 at the base (clip / magnitude-aware / ApproxSign / Bi-Real-18) and its STE and Plain
    neighbours, 3 seeds: known paired differences."""
    tops = {"base": (0.80, 0.82, 0.81), "ste": (0.79, 0.80, 0.805), "plain": (0.70, 0.69, 0.73)}
    for cell, values in tops.items():
        for s, v in enumerate(values):
            write_record(tmp_path, f"{cell}{s}", seed=s, test=v, sign="ste" if cell == "ste" else "approx",
                         structure="plain" if cell == "plain" else "bireal", study="bireal_table1")
    return tmp_path


def test_conclusion_figure_has_the_tables_numbers_and_the_papers_difference(pairs_root):
    from matplotlib.collections import PolyCollection

    from onebit.results import bireal
    from onebit.results.figures import conclusion_data

    (sel,) = select(load_records(pairs_root)[0])
    data = conclusion_data(sel)
    assert set(data) == {"shortcut > none", "ApproxSign > STE"}  # no pairs for the other two
    table = bireal.conclusions(sel.records).set_index("conclusion")
    for name, diffs in (("ApproxSign > STE", [1.0, 2.0, 0.5]), ("shortcut > none", [10.0, 13.0, 8.0])):
        (part,) = data[name]
        row = table.loc[name]
        assert part.diffs == pytest.approx(diffs)
        assert "protocol: not declared" in part.label
        fig = draw.conclusion_figure(name, data[name])
        ax = fig.axes[0]
        mean, paper = row["ours (points)"], row["paper (points)"]
        assert mean == pytest.approx(np.mean(diffs), abs=0.005)
        ci = scipy.stats.ttest_1samp(diffs, 0).confidence_interval(0.95)
        assert row["95% CI"] == f"[{ci.low:.2f}, {ci.high:.2f}]"
        assert paper == {"ApproxSign > STE": 2.8, "shortcut > none": 44.3}[name]  # Table 1: 56.4-53.6, 56.4-12.1
        by_gid = {a.get_gid(): a for a in [*ax.lines, *ax.collections] if a.get_gid()}
        assert by_gid["paper-0"].get_xdata().tolist() == [paper]
        assert by_gid["mean-0"].get_xdata().tolist() == [mean, mean]
        assert sorted(by_gid["pairs-0"].get_offsets()[:, 0]) == pytest.approx(sorted(diffs))
        band = by_gid.get("band-0") or next(c for c in ax.collections if isinstance(c, PolyCollection))
        xs = band.get_paths()[0].vertices[:, 0]
        assert (xs.min(), xs.max()) == pytest.approx((ci.low, ci.high))  # the table's 95 % t-interval
        assert any(line.get_xdata()[0] == 0 for line in ax.lines if line.get_gid() is None)  # the zero line
        (legend,) = fig.legends
        texts = [t.get_text() for t in legend.get_texts()]
        assert any(t.startswith("paper's difference") for t in texts) and any("95 % t-interval" in t for t in texts)
        assert _legend_off_axes(fig, ax, legend)
        lo, hi = ax.get_xlim()
        assert lo < min(0, *diffs) and hi > max(paper, *diffs)  # zero, every pair and the paper in view
        plt.close(fig)


def test_conclusion_parts_are_named_by_the_keys_they_were_split_by(tmp_path):
    """Runs that differ in a list-valued key form one table (and one figure row) per value, named by it."""
    for milestones in ([2, 3], [3, 4]):
        for s in range(2):
            for sign, top in (("approx", 0.8), ("ste", 0.7)):
                write_record(tmp_path, f"{sign}{s}-{milestones[0]}", seed=s, sign=sign, test=top + 0.01 * s,
                             scheduler__milestones=milestones, study="bireal_table1")
    from onebit.results.figures import conclusion_data

    (sel,) = select(load_records(tmp_path)[0])
    (parts,) = conclusion_data(sel).values()
    assert [p.label for p in parts] == [f"scheduler.milestones=[{m}], protocol: not declared (optimizer: Adam)"
                                        for m in ("2, 3", "3, 4")]
    assert [p.diffs for p in parts] == [pytest.approx([10.0, 10.0])] * 2


def test_cli_conclusions_one_file_per_conclusion_or_exit_1(pairs_root, tmp_path):
    out = tmp_path / "o"
    assert run_cli(cli.main, ["conclusions", "--root", str(pairs_root), "--out", str(out)]).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["conclusion-bireal-ApproxSign_vs_STE.png",
                                                     "conclusion-bireal-shortcut_vs_none.png"]
    assert all(p.read_bytes()[:8] == PNG for p in out.iterdir())
    lone = tmp_path / "lone"
    write_record(lone, "only", study="s")
    r = run_cli(cli.main, ["conclusions", "--root", str(lone), "--out", str(tmp_path / "none")])
    assert r.returncode == 1 and "no paired Bi-Real Table 1 runs" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "none").exists()


# ----------------------------------------------------------------------------------------------------------
# Figures split and name their runs as the tables do (issue 22)
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def mixed_root(tmp_path):
    """An ordinary output folder: sign approx / ste at epochs=2 and epochs=8 (2 seeds each), and approx runs at
    epochs=2 with ``trainer.gradient_clip_val=1.0`` (absent from every other run)."""
    for epochs in (2, 8):
        for sign, top in (("approx", 0.8), ("ste", 0.7)):
            for s in (0, 1):
                val = tuple(0.5 + 0.3 * e / epochs for e in range(epochs))
                write_record(tmp_path, f"{sign}{s}-e{epochs}", sign=sign, seed=s, val=val,
                             loss=tuple(1 - v for v in val), test=top + (0.05 if epochs == 8 else 0.0) + 0.01 * s)
    for s in (0, 1):
        write_record(tmp_path, f"clip{s}", sign="approx", seed=s, val=(0.5, 0.6), loss=(1.0, 0.9), test=0.9,
                     trainer={"gradient_clip_val": 1.0})
    return tmp_path


def _unreadable(text: str) -> bool:
    return any(bad in text for bad in ("<absent>", "{", "[", "nan"))


def test_figure_parts_never_mix_epochs_and_name_the_keys_they_fix(mixed_root):
    from onebit.results.figures import figure_parts

    (sel,) = select(load_records(mixed_root)[0])
    parts = figure_parts(sel, sel.records, ["structure", "sign"])
    assert [p.name for p in parts] == ["-epochs=2-trainer.gradient_clip_val=unset",
                                       "-epochs=2-trainer.gradient_clip_val=1.0",
                                       "-epochs=8-trainer.gradient_clip_val=unset"]
    assert [p.label for p in parts] == [f"study s [epochs={e}, trainer.gradient_clip_val={c}]"
                                        for e, c in ((2, "unset"), (2, "1.0"), (8, "unset"))]
    assert [len(p.records) for p in parts] == [4, 2, 4]
    for p in parts:
        assert len({r.options["epochs"] for r in p.records}) == 1  # one epochs value per figure
        assert "one figure per combination" in p.notes[-1] and "epochs" in p.notes[-1]
        df = ablation_data(p.records)
        assert not any(_unreadable(t) for t in df["label"])
        assert not any(_unreadable(c.label) for c in curve_data(p.records))
        fig = draw.ablation_figure(p.records, scope=p.label, notes=p.notes)
        title = fig._suptitle.get_text()
        assert p.label in title and "cells as in tables.py" in title and "<absent>" not in title
        assert len(fig.axes[0].containers[0]) == len(group_cells(p.records))  # one bar per cell of this part
        plt.close(fig)
        fig = draw.curves_figure(p.records, scope=p.label, notes=p.notes)
        assert p.label in fig._suptitle.get_text() and "cells as in tables.py" in fig._suptitle.get_text()
        (legend,) = fig.legends
        assert not any(_unreadable(t.get_text()) for t in legend.get_texts())
        plt.close(fig)
    two, eight = parts[0], parts[2]
    assert ablation_data(two.records)["cell"].map(lambda c: c.mean).tolist() == pytest.approx([80.5, 70.5])
    assert ablation_data(eight.records)["cell"].map(lambda c: c.mean).tolist() == pytest.approx([85.5, 75.5])


def test_cli_writes_one_figure_per_split_and_never_one_with_both_epochs(mixed_root, tmp_path):
    out = tmp_path / "o"
    for cmd in ("curves", "ablation"):
        r = run_cli(cli.main, [cmd, "--root", str(mixed_root), "--out", str(out)])
        assert r.returncode == 0, r.stderr
    stems = ["epochs=2-trainer.gradient_clip_val=unset", "epochs=2-trainer.gradient_clip_val=1.0",
             "epochs=8-trainer.gradient_clip_val=unset"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"ablation-final-test_top1-by-structure-{s}.png" for s in stems] + [f"curves-binary-{s}.png" for s in stems])
    assert all(p.read_bytes()[:8] == PNG for p in out.iterdir())


def test_labels_use_readable_options_never_absent_or_json(tmp_path):
    """Cells told apart only by ``recipe.steps`` (a list, absent in one-step runs): named by the option that set it."""
    from onebit.results.figures import figure_items, figure_label_keys, figure_parts

    for s in (0, 1):
        write_record(tmp_path, f"one{s}", seed=s, test=0.8)
        rec = write_record(tmp_path, f"two{s}", seed=s, test=0.85, recipe__name="two_step",
                           recipe__steps=[{"stage": "binary", "weight": "real"}, {"stage": "binary"}])
        rec.options["recipe"] = "two_step"
        rec.save()
    (sel,) = select(load_records(tmp_path)[0])
    items = [figure_items(rs) for rs in group_cells(sel.records).values()]
    assert figure_label_keys(items) == ["recipe"]  # not recipe.steps, not recipe.name=<absent>
    # a two-step run without a teacher (no distill in its config: recorded before distillation) is named by what it
    # ran, two_step_no_distill, never as recipe=two_step, which now brings a teacher (onebit.results.cells)
    two = "two_step_no_distill"
    assert [c.label for c in curve_data(sel.records)] == ["recipe=one_step", f"recipe={two}"]
    assert ablation_data(sel.records)["label"].tolist() == ["recipe=one_step", f"recipe={two}"]
    parts = figure_parts(sel, sel.records, ["structure", "sign"])  # one position, two cells: two figures
    assert [(p.fixed, p.name, p.label) for p in parts] == [
        ({"recipe": r}, f"-recipe={r}", f"study s [recipe={r}]") for r in ("one_step", two)]


def test_conclusion_figure_leaves_out_parts_without_pairs_and_says_so(tmp_path):
    """Bi-Real Table 1 runs split by scheduler.milestones; the [3, 4] part has ApproxSign runs only: no pairs, so
    no ``nan ± nan`` row; the subtitle names it."""
    from onebit.results.figures import conclusion_data

    for s in range(2):
        for name, sign, top, milestones in (("a", "approx", 0.8 + 0.01 * s, [2, 3]), ("s", "ste", 0.7, [2, 3]),
                                            ("b", "approx", 0.9, [3, 4])):
            write_record(tmp_path, f"{name}{s}", seed=s, sign=sign, test=top, scheduler__milestones=milestones,
                         study="bireal_table1")
    (sel,) = select(load_records(tmp_path)[0])
    parts = conclusion_data(sel)["ApproxSign > STE"]
    assert [bool(p.diffs) for p in parts] == [True, False]
    fig = draw.conclusion_figure("ApproxSign > STE", parts)
    ax = fig.axes[0]
    assert len(ax.get_yticks()) == 1
    texts = [t.get_text() for a in (ax, *ax.child_axes) for t in a.get_yticklabels()]
    assert len(texts) == 2 and not any("nan" in t for t in texts)  # one row: its label and its numbers
    assert "scheduler.milestones=[2, 3]" in texts[0] and "ours 10.5" in texts[1]
    title = fig._suptitle.get_text()
    assert f"no pairs (no row): {parts[1].label}" in title and "as in tables.py" in title
    plt.close(fig)


def test_parts_are_named_by_the_options_that_tell_them_apart(tmp_path):
    """The committed example's one-factor star: its figures split by protocol, weight and pretrain (as the tables'
    generic selection does), named ``pretrain=clip``, never by the config leaf ``pretrain.activation._target_``."""
    from onebit.results.figures import figure_parts

    example = Path(__file__).resolve().parents[1] / "analysis" / "example"
    (sel,) = [s for s in select(load_records(example)[0]) if "bireal_conclusions" in s.label]
    parts = figure_parts(sel, sel.records, ["structure", "sign"])  # plots.py ablation: --by structure --color sign
    names = sorted(p.name for p in parts)
    assert names and all("_target_" not in n and "." not in n.replace("=1.0", "") for n in names), names
    assert "-weight=plain-pretrain=clip-protocol=paper_sgd" in names
    assert all(set(p.fixed) <= {"weight", "pretrain", "protocol", "bn_retrain"} for p in parts)
