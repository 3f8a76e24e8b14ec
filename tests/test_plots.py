"""analysis/plots.py on crafted records: the curve, bar and sign data equal hand-computed values, failed runs are
counted but never averaged, a corrupt record is reported and skipped, the PNGs are real PNGs, the CLI's exit codes,
and the activation figure's statistics come from the hooked block inputs (fresh and trained models)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from onebit.files import atomic_write_json
from onebit.results.cells import group_cells, label_items
from onebit.results.figures import UsageError, ablation_data, curve_data, shortcut_pair
from onebit.results.load import load_records
from onebit.results.select import select
from test_results import make_config, make_record

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "analysis" / "plots.py"
PNG = b"\x89PNG\r\n\x1a\n"

_spec = importlib.util.spec_from_file_location("onebit_plots", SCRIPT)
P = importlib.util.module_from_spec(_spec)
sys.modules["onebit_plots"] = P
_spec.loader.exec_module(P)


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


def test_ablation_data_excludes_but_counts_failed(root):
    df = ablation_data(load(root), "binary", "test/top1", by="structure", color="sign")
    assert df["sign"].tolist() == ["approx", "ste"]
    a, s = df.iloc[0], df.iloc[1]
    assert (a["n"], a["runs"], a["failed"]) == (3, 4, 1)
    assert a["mean"] == pytest.approx((0.80 + 0.86 + 0.83) / 3)
    assert a["std"] == pytest.approx(np.std([0.80, 0.86, 0.83], ddof=1))
    assert (s["n"], s["runs"], s["failed"]) == (3, 3, 0)
    assert s["mean"] == pytest.approx(0.65) and s["std"] == pytest.approx(0.05)
    assert sorted(a["seeds"]) == [0, 1, 2]


def test_cells_split_by_config_values_not_in_options(tmp_path):
    for nl in ("none", "prelu"):
        for seed in (0, 1):
            write_record(tmp_path, f"{nl}{seed}", seed=seed, test=0.5 if nl == "none" else 0.7,
                         model__nonlinearity=nl, output_root=f"/somewhere/{seed}")
    df = ablation_data(load(tmp_path), by="structure", color="sign")
    assert df["label"].tolist() == ["model.nonlinearity=none", "model.nonlinearity=prelu"]
    assert df["n"].tolist() == [2, 2] and df["mean"].tolist() == pytest.approx([0.5, 0.7])


def test_sign_derivatives_are_the_components(tmp_path):
    from onebit.quantizers import ApproxSign, SteSign, SwishSign

    x = np.array([-1.5, -1.0, -0.75, -0.25, 0.0, 0.3, 0.5, 0.99, 1.0, 2.0])
    c = P.sign_curves(x)
    t = torch.as_tensor(x)
    np.testing.assert_array_equal(c["approx"]["df"], ApproxSign().derivative(t).numpy())
    np.testing.assert_allclose(c["approx"]["df"], [0, 0, 0.5, 1.5, 2, 1.4, 1, 0.02, 0, 0], atol=1e-12)
    np.testing.assert_array_equal(c["clip"]["df"], SteSign(1.0).derivative(t).numpy())
    np.testing.assert_allclose(c["swish"]["df"], SwishSign(5.0).derivative(t).numpy())
    np.testing.assert_allclose(c["approx"]["f"], [-1, -1, -0.9375, -0.4375, 0, 0.51, 0.75, 0.9999, 1, 1])
    # each component's derivative is the slope of the function drawn above it (away from the kinks)
    grid = np.linspace(-2, 2, 40001)
    g = P.sign_curves(grid)
    inner = (np.abs(np.abs(grid) - 1) > 1e-2) & (np.abs(grid) > 1e-2)
    for name in ("clip", "approx", "swish"):
        slope = np.gradient(g[name]["f"], grid)
        np.testing.assert_allclose(slope[inner], g[name]["df"][inner], atol=2e-3, err_msg=name)
    path = P.plot_signs(tmp_path / "signs.png")
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


def test_pngs_are_written_atomically_and_valid(root, tmp_path):
    records = load(root)
    out = tmp_path / "figs"
    paths = [P.plot_curves(records, out / "c.png", band="std"), P.plot_ablation(records, out / "a.png")]
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
    assert len(cells) == 9 and P.choose_facet(cells, max_lines=3) == "structure"
    assert P.plot_curves(records, tmp_path / "c.png").read_bytes()[:8] == PNG


def run_cli(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def test_cli_empty_root_exits_1_naming_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("curves", "--root", str(empty), "--out", str(tmp_path / "o"))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(empty) in lines[0]
    assert not (tmp_path / "o").exists()


def test_cli_unknown_metric_exits_2_listing_valid(root, tmp_path):
    r = run_cli("ablation", "--root", str(root), "--out", str(tmp_path / "o"), "--metric", "test/top7")
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]  # preceded by the corrupt-record line
    assert "test/top7" in last and "test/top1" in last and "val/top1_best" in last
    assert len(r.stderr.strip().splitlines()) == 2


def test_cli_unknown_stage_and_option_exit_2(root, tmp_path, capsys):
    assert P.main(["curves", "--root", str(root), "--out", str(tmp_path), "--stage", "bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "bogus" in err and "binary, pretrain" in err
    assert P.main(["ablation", "--root", str(root), "--out", str(tmp_path), "--by", "colour"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "colour" in err and "structure" in err and "sign" in err
    assert P.main(["all", "--root", str(root), "--out", str(tmp_path / "all"), "--width", "4"]) == 0
    written = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert written == ["ablation-binary-test_top1-by-structure.png", "activations-layer2.-1.png",
                       "curves-binary.png", "signs.png"]


def test_activations_fallback_stats_come_from_the_hooked_tensor(tmp_path):
    path, data = P.plot_activations(tmp_path / "act.png", records=[], block="layer2.-1", width=8, seed=0)
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
        P.activation_data([], block="layer2.9", width=4)


def test_activations_trained_pair_from_checkpoints(tmp_path):
    from onebit.data import DigitsData
    from onebit.models import BiRealResNet
    from onebit.quantizers import ApproxSign, MagnitudeAware

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
    data = P.activation_data(records, block="layer2.-1")
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
