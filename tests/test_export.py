"""Export to a real 1-bit model (Larq Compute Engine): PyTorch's windows in TensorFlow's "same" geometry, the 1-bit
kernels and folded scales, every supported architecture converted and run by LCE's interpreter against PyTorch,
``src/export.py`` on a real run (verified, measured, recorded) and ``tables.py efficiency --measured``, and each
refusal as one line with nothing written. The LCE tests need ``pip install -e '.[export]'`` and skip without it."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, only_record, run_cli, run_process, run_train
from torch import nn

import onebit.deploy as ex
from onebit.cli.export import main as export_main
from onebit.cli.tables import main as tables
from onebit.nn.layers import BinaryConv2d
from onebit.nn.models import BinaryDenseNet, BiRealResNet, TorchvisionResNet
from onebit.nn.quantizers import (
    ApproxSign,
    Clip,
    LeakyClip,
    MagnitudeAware,
    MagnitudeAwareOfficial,
    PlainSign,
    RealWeight,
    ReLU,
    SteSign,
    SwishSign,
    XnorScaling,
)
from onebit.records.record import read_record
from onebit.training.checkpoints import stage_weights

MISSING = ex.missing_modules()
needs_extra = pytest.mark.skipif(bool(MISSING), reason=f"needs the export extra: pip install -e '.[export]' "
                                                       f"(missing: {', '.join(MISSING)})")


# ----------------------------------------------------------------------------------------------------------
# 1. Geometry: TF "same" on an extended input = PyTorch's symmetric padding (no TensorFlow needed)
# ----------------------------------------------------------------------------------------------------------


def tf_windows(n: int, k: int, s: int, e: int) -> list[int]:
    """Start rows of TensorFlow's "same" windows over n + e rows (TF's documented padding rule)."""
    m = n + e
    out = -(-m // s)
    before = max((out - 1) * s + k - m, 0) // 2
    return [j * s - before for j in range(out)]


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (3, 2, 1), (2, 2, 0), (1, 1, 0), (1, 2, 0), (5, 1, 2)])
def test_same_extension_reproduces_pytorch_windows(k, s, p, ceil_mode):
    """The binary convs' (3x3 / 1x1, stride 1 / 2, padding k // 2) and the pools' geometries at every size; real
    convs (the 7x7 stem) use explicit zero padding instead."""
    for n in range(1, 40):
        if n + 2 * p < k:
            continue
        out = ex.torch_out(n, k, s, p, ceil_mode)
        # torch_out is PyTorch's own output size
        actual = F.max_pool2d(torch.zeros(1, 1, n, n), k, s, p, ceil_mode=ceil_mode).shape[-1] if p <= k // 2 \
            else None
        if actual is not None:
            assert out == actual, (n, k, s, p, ceil_mode)
        e = ex.same_extension(n, k, s, p, ceil_mode)
        if ceil_mode and p:  # not in onebit's models (its ceil-mode pools have no padding); refused if None
            if e is None:
                continue
        else:
            assert e is not None, (n, k, s, p, ceil_mode)  # every geometry onebit's models use has one
        starts = tf_windows(n, k, s, e)
        assert len(starts) >= out and starts[:out] == [j * s - p for j in range(out)]
        if e:  # the appended rows n .. n+e-1 are never read by a kept output
            assert all(st + k - 1 < n for st in starts[:out])


def test_pytorch_windows_that_tf_cannot_place_are_refused():
    assert ex.same_extension(8, 3, 1, 0) is None or ex.same_extension(8, 3, 1, 0) == 0
    assert ex.same_extension(8, 3, 2, 2) is None   # padding 2 > (k - 1) / 2: TF's "same" never pads that much


# ----------------------------------------------------------------------------------------------------------
# 2. What the deployed layer computes: the sign, and +-alpha per output channel
# ----------------------------------------------------------------------------------------------------------


def conv(weight):
    c = BinaryConv2d(8, 16, 3, 1, 1, input_quantizer=SteSign(), weight_quantizer=weight)
    torch.nn.init.normal_(c.weight)
    c.weight.data[0, 0, 0, 0] = 0.0  # sign(0) = +1 (Bi-Real Eq. 1) in both frameworks
    return c.eval()


@pytest.mark.parametrize("weight", [PlainSign(), MagnitudeAware(), MagnitudeAwareOfficial(), XnorScaling()])
def test_binary_kernel_is_sign_and_one_scale_per_channel(weight):
    c = conv(weight)
    signs, alpha = ex.binary_kernel(c, "layer")
    w = c.weight.detach()
    assert np.array_equal(signs, torch.where(w >= 0, 1.0, -1.0).numpy()) and signs[0, 0, 0, 0] == 1.0
    expected = np.ones(16) if isinstance(weight, PlainSign) else w.abs().mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(alpha, expected, rtol=1e-6)
    with torch.no_grad():
        np.testing.assert_array_equal(signs * alpha[:, None, None, None], weight(w).numpy())


def test_real_weights_have_no_binary_kernel():
    with pytest.raises(ex.ExportError, match=r"layer L: its weight component RealWeight does not give one "
                                             r"\+-alpha per output channel"):
        ex.binary_kernel(conv(RealWeight()), "L")


def test_every_sign_approximation_is_the_sign_in_inference():
    assert all(ex.is_sign(q) for q in (SteSign(), ApproxSign(), SwishSign(), SteSign(t=0.5)))
    assert not any(ex.is_sign(q) for q in (ReLU(), Clip(), LeakyClip()))


# ----------------------------------------------------------------------------------------------------------
# 3. Every supported architecture: LCE's interpreter against PyTorch
# ----------------------------------------------------------------------------------------------------------


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters away from their initial values, as after training."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 2)
            m.running_var.copy_(torch.rand(c, generator=g) * 20 + 1)
            m.weight.data.copy_(torch.randn(c, generator=g))
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.3)
        elif isinstance(m, nn.PReLU):
            m.weight.data.uniform_(0.0, 0.5, generator=g)
        elif hasattr(m, "gamma") and hasattr(m, "zeta"):
            m.gamma.data.normal_(0, 0.3, generator=g), m.zeta.data.normal_(0, 0.3, generator=g)
        elif hasattr(m, "pos") and hasattr(m, "neg"):
            m.pos.data.uniform_(0.5, 1.5, generator=g), m.neg.data.uniform_(0.0, 0.5, generator=g)
    return model.eval()


def with_thresholds(model: nn.Module, seed: int = 1) -> nn.Module:
    """Learnable input thresholds (ReActNet's RSign, ``sign.learnable_threshold=true``) away from 0, as after
    training: ``sign(x - alpha_c)`` with alpha ~ N(0, 0.5)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, BinaryConv2d):
            m.threshold.data.normal_(0, 0.5, generator=g)
    return model


def resnet(**kw):
    kw = {"depth": 18, "width": 8, "stem": "small", "in_channels": 3, "num_classes": 10, **kw}
    weight = kw.pop("weight", MagnitudeAware())
    return BiRealResNet(kw.pop("sign", ApproxSign()), weight, **kw)


MODELS = {
    "bireal18-small-8x8": (lambda: resnet(), (3, 8, 8)),
    "bireal18-imagenet-stem-odd-28": (lambda: resnet(stem="imagenet", in_channels=1), (1, 28, 28)),
    "bireal34-small-odd-7": (lambda: resnet(depth=34, sign=SteSign()), (3, 7, 7)),
    "res18-xnor-pad1": (lambda: resnet(structure="res", weight=XnorScaling(), pad_value=1.0), (3, 12, 12)),
    "plain18-plain-sign": (lambda: resnet(shortcut=False, weight=PlainSign()), (3, 8, 8)),
    "bireal18-binary-downsample-prelu": (lambda: resnet(downsample="binary", nonlinearity="prelu"), (3, 8, 8)),
    "ftbnn-rprelu": (lambda: resnet(nonlinearity="rprelu"), (3, 8, 8)),
    "ftbnn-fprelu": (lambda: resnet(nonlinearity="fprelu"), (3, 10, 10)),
    "bireal50-bottleneck": (lambda: resnet(depth=50, width=8), (3, 8, 8)),
    "res50-bottleneck": (lambda: resnet(depth=50, width=8, structure="res"), (3, 8, 8)),
    "binarydensenet28": (lambda: BinaryDenseNet(SteSign(t=1.3), PlainSign(), depth=28, growth=16, width=16,
                                                stem="small", num_classes=10), (3, 8, 8)),
    "binarydensenet37-imagenet-stem-scaled": (lambda: BinaryDenseNet(ApproxSign(), MagnitudeAware(), depth=37,
                                                                      growth=8, width=8, num_classes=10), (3, 32, 32)),
    # a learnable threshold before every sign: after a residual addition (Bi-Real), after a BatchNorm (DenseNet)
    "bireal18-learnable-threshold": (lambda: with_thresholds(resnet(sign=SwishSign(learnable_threshold=True),
                                                                    downsample="binary")), (3, 9, 9)),
    "binarydensenet28-learnable-threshold": (lambda: with_thresholds(BinaryDenseNet(
        SteSign(t=1.3, learnable_threshold=True), PlainSign(), depth=28, growth=16, width=16, stem="small",
        num_classes=10)), (3, 8, 8)),
}


@needs_extra
@pytest.mark.parametrize("name", list(MODELS))
def test_lce_model_equals_pytorch(name):
    """Random inputs through the converted flatbuffer (LCE's interpreter, its optimised kernels) and PyTorch: the
    same class for every image, and equal logits up to float rounding except where rounding flips a sign."""
    factory, size = MODELS[name]
    torch.manual_seed(0)
    model = randomize_batchnorm(factory())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fb, info = ex.convert(model, size)
    n_binary = sum(isinstance(m, BinaryConv2d) for m in model.modules())
    ops = ex.operators(fb)
    assert info.binary_convs == n_binary and ops["LceBconv2d"] == n_binary, ops
    assert ops.get("CONV_2D", 0) == sum(type(m) is nn.Conv2d for m in model.modules())  # only the real convs
    x = torch.randn(24, *size)
    with torch.inference_mode():
        ours = model(x).numpy()
    # LCE's default binary GEMM, its indirect one (which src/export.py times), and its reference kernels
    for kernels in ({"use_indirect_bgemm": False, "use_xnnpack": False}, {}, {"use_reference_bconv": True}):
        lite = ex.predict(ex.interpreter(fb, **kernels), x.permute(0, 2, 3, 1).numpy())
        close = np.abs(lite - ours).max(axis=1) <= 1e-3 * np.maximum(1.0, np.abs(ours).max(axis=1))
        agree = (lite.argmax(1) == ours.argmax(1)).mean()
        assert agree >= 0.95 and close.mean() >= 0.9, (kernels, np.abs(lite - ours).max(1))


@needs_extra
def test_learnable_thresholds_are_exported_as_a_subtraction_before_the_sign():
    """The thresholds change what PyTorch computes (zeroed, its logits differ on most images), and the LCE model
    matches the thresholded PyTorch model: the subtraction is in the graph, one per binary conv, not folded away."""
    factory, size = MODELS["binarydensenet28-learnable-threshold"]
    torch.manual_seed(0)
    model = randomize_batchnorm(factory())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fb, info = ex.convert(model, size)
        plain_fb, _ = ex.convert(randomize_batchnorm(BinaryDenseNet(SteSign(t=1.3), PlainSign(), depth=28, growth=16,
                                                                    width=16, stem="small", num_classes=10)), size)
    n = sum(isinstance(m, BinaryConv2d) for m in model.modules())
    assert ex.operators(fb)["SUB"] - ex.operators(plain_fb).get("SUB", 0) == n == info.binary_convs
    x = torch.randn(64, *size)
    with torch.inference_mode():
        ours = model(x).numpy()
        zeroed = model.apply(_zero_thresholds)(x).numpy()
    lite = ex.predict(ex.interpreter(fb), x.permute(0, 2, 3, 1).numpy())
    tolerance = 1e-3 * np.maximum(1.0, np.abs(ours).max(axis=1))
    assert (np.abs(lite - ours).max(axis=1) <= tolerance).mean() >= 0.9
    assert (lite.argmax(1) == ours.argmax(1)).mean() >= 0.95
    assert (np.abs(lite - zeroed).max(axis=1) <= tolerance).mean() < 0.5  # the thresholds matter


def _zero_thresholds(m: nn.Module) -> None:
    if isinstance(m, BinaryConv2d) and m.threshold is not None:
        m.threshold.data.zero_()


@needs_extra
def test_the_float_twin_equals_pytorch():
    torch.manual_seed(0)
    twin = randomize_batchnorm(resnet(sign=Clip(), weight=None, stem="imagenet"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fb, info = ex.convert(twin, (3, 32, 32), binary=False)
    assert info.binary_convs == 0 and "LceBconv2d" not in ex.operators(fb)
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        ours = twin(x).numpy()
    lite = ex.predict(ex.interpreter(fb), x.permute(0, 2, 3, 1).numpy())
    np.testing.assert_allclose(lite, ours, atol=1e-3 * np.abs(ours).max())


@needs_extra
@pytest.mark.parametrize("model,message", [
    (lambda: resnet(pad_value=-1.0), r"layer layer1\.0\.conv1: pad_value=-1 has no LCE kernel; valid: 0, 1"),
    (lambda: TorchvisionResNet(depth=18, num_classes=10), r"model ResNet cannot be exported; supported"),
    (lambda: resnet(weight=None), r"layer layer1\.0\.conv1: its weight component RealWeight does not give"),
    (lambda: resnet(sign=ReLU()), r"layer layer1\.0\.conv1: its input component ReLU is not the sign in inference"),
])
def test_layers_without_a_1bit_equivalent_are_refused(model, message):
    with pytest.raises(ex.ExportError, match=message):
        ex.convert(model().eval(), (3, 8, 8))


# ----------------------------------------------------------------------------------------------------------
# 4. src/export.py on real runs
# ----------------------------------------------------------------------------------------------------------

ARGS = ["epochs=1", "logger=none", "threads=1", "trainer.deterministic=true"]


def run_export(*args):
    """``onebit-export args`` in this process (conftest.run_cli)."""
    return run_cli(export_main, args, cwd=ROOT)


def export_process(*args):
    """``python src/export.py args``: the wrapper as a real process (one test with the extra, one without)."""
    return run_process([sys.executable, str(ROOT / "src" / "export.py"), *map(str, args)], timeout=1200)


@pytest.fixture
def trained_run(train_once):
    """The default job (digits, Bi-Real-18 at width 32, pretrain -> binary), one epoch per stage."""
    return train_once(*ARGS)  # conftest: trained once per session (in-process), shared: read only


@needs_extra
def test_export_a_finished_run_verifies_measures_and_records(trained_run, tmp_path):
    run_dir = Path(trained_run.run_dir)
    r = export_process(run_dir, "--out", tmp_path / "export.json")
    assert r.returncode == 0, r.stderr[-3000:]
    rec = read_record(run_dir / "record.json")
    e = rec.export
    assert e == json.loads((tmp_path / "export.json").read_text())
    model, twin = run_dir / "model.tflite", run_dir / "twin.tflite"
    assert model.stat().st_size == e["bytes"] and twin.stat().st_size == e["twin_bytes"]
    # 16 binary 3x3 convs of Bi-Real-18, each an LceBconv2d, each magnitude-aware scale folded into its BatchNorm
    assert e["binary_convs"] == 16 and e["ops"]["LceBconv2d"] == 16 and e["folded_scales"] == 16
    assert e["binary_params"] == trained_run.efficiency["binary_params"]
    # the full test split (270 of digits' 1797 images), the same classes as PyTorch
    assert e["check"]["n"] == 270 and e["check"]["agreement"] >= 0.999 and e["min_agreement"] == 0.999
    assert e["check"]["equal_logits"] >= 0.9  # the rest: float rounding moved a pre-sign value across 0
    assert abs(e["check"]["top1_torch"] - trained_run.final_stage.metrics["test/top1"]) < 1e-6
    # size: 1 bit per binary weight, 32 per real parameter, plus the flatbuffer's own few percent
    assert 1.0 <= e["bytes"] / e["counted_bytes"] <= 1.15, e
    assert 0.98 <= e["twin_bytes"] / e["twin_counted_bytes"] <= 1.05, e
    assert e["twin_weights"] == "stage pretrain"
    assert all(v > 0 for v in e["latency_ms"].values()) and e["threads"] == 1
    out = r.stdout
    assert f"{run_dir / 'model.tflite'}" in out and "top-1 agreement with PyTorch" in out and "270 images" in out
    # Table 3 with the measured columns
    t = run_cli(tables, ["efficiency", "--measured", run_dir, "--format", "csv", "--out", tmp_path])
    assert t.returncode == 0, t.stderr
    (row,) = pd.read_csv(tmp_path / "bireal_table3_measured.csv").to_dict("records")
    assert row["run"] == rec.run_id and row["input"] == "8x8" and row["tflite_mb"] == round(e["bytes"] / 1e6, 3)
    assert row["agreement"] == round(e["check"]["agreement"], 4) and row["lce_ms"] == e["latency_ms"]["lce_binary"]
    assert row["counted_speedup"] == round(e["twin_counted_ops"] / e["counted_ops"], 2)
    assert "LCE's optimised binary kernels target ARM" in t.stderr + t.stdout


@needs_extra
def test_export_a_run_with_learnable_thresholds(tmp_path):
    """A real digits run with ``sign.learnable_threshold=true`` (thresholds trained away from 0): the exported model's
    top-1 equals PyTorch's on the test split (export's own check), each threshold a subtraction before its sign."""
    r = run_train([*ARGS, "model.width=8", "sign.learnable_threshold=true", f"output_root={tmp_path}"])
    assert r.returncode == 0, r.stderr[-3000:]
    rec = only_record(tmp_path)
    thresholds = [v for k, v in stage_weights(rec, "binary").items() if k.endswith(".threshold")]
    assert len(thresholds) == 16 and all(float(v.abs().max()) > 1e-3 for v in thresholds)
    e = run_export(rec.run_dir)
    assert e.returncode == 0, e.stderr[-3000:]
    x = read_record(rec.path).export
    assert x["check"]["n"] == 270 and x["check"]["agreement"] >= 0.999 and x["check"]["equal_logits"] >= 0.9, x
    assert x["binary_convs"] == 16 and x["ops"]["LceBconv2d"] == 16 and x["ops"].get("SUB", 0) >= 16, x["ops"]
    assert x["real_params"] == rec.efficiency["real_params"]  # the thresholds: 32-bit parameters in both counts


@needs_extra
def test_a_run_without_a_finished_binary_stage_is_refused(tmp_path):
    killed = run_train([*ARGS, "model.width=4", f"output_root={tmp_path}"],
                       env={"ONEBIT_KILL_AT": "epoch_end:binary:0"})
    assert killed.returncode != 0
    rec = only_record(tmp_path)
    r = run_export(rec.run_dir)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"onebit: error: run {rec.run_dir} has no finished binary stage to export: its final stage 'binary' is "
        f"{rec.stages['binary'].status} (stages: pretrain finished, binary {rec.stages['binary'].status})"]
    assert not (Path(rec.run_dir) / "model.tflite").exists() and read_record(rec.path).export is None


@needs_extra
def test_a_real_valued_model_is_refused(tmp_path):
    r = run_train([*ARGS, "model=resnet18", f"output_root={tmp_path}",
                   "+trainer.limit_train_batches=2"])
    assert r.returncode == 0, r.stderr[-2000:]
    rec = only_record(tmp_path)
    r = run_export(rec.run_dir, "--threads", "2")
    assert r.returncode == 2
    assert r.stderr.strip() == (f"onebit: error: run {rec.run_dir}: its final stage {rec.final_stage.name!r} trained "
                                f"a real model (A32/W32), not a binary one (A1/W1): nothing 1-bit to export")
    assert not list(Path(rec.run_dir).glob("*.tflite"))


@pytest.mark.parametrize("args,message", [
    ([], "onebit: error: RUN is required: a run directory (with record.json), or the Hydra job folder of a run "
         "(with job.json)"),
    (["/nonexistent/run"], "onebit: error: run='/nonexistent/run': no such directory"),
    ([".", "--threads", "0"], "onebit: error: argument --threads: '0' is invalid: must be a positive integer "
                              "(see --help)"),
    ([".", "--format", "onnx"], "onebit: error: unknown argument '--format'; valid: RUN, --threads, --min-agreement, "
                                "--out (see --help)"),
    ([".", "--min-agreement=2"], "onebit: error: argument --min-agreement: '2' is invalid: must be a number in "
                                 "[0, 1] (see --help)"),
    # the older key=value spelling: the same checks, an unknown key named with the older keys
    (["run=/nonexistent/run"], "onebit: error: run='/nonexistent/run': no such directory"),
    (["run=.", "threads=0"], "onebit: error: argument --threads: '0' is invalid: must be a positive integer "
                             "(see --help)"),
    (["run=.", "format=onnx"], "onebit: error: unknown argument 'format=onnx'; valid: run=, threads=, "
                               "min_agreement=, out= (see --help)"),
    (["run=.", "min_agreement=2"], "onebit: error: argument --min-agreement: '2' is invalid: must be a number in "
                                   "[0, 1] (see --help)"),
])
def test_bad_arguments_are_one_line(args, message):
    r = run_export(*args)
    assert r.returncode == 2 and r.stderr.strip() == message and r.stdout == ""


@pytest.mark.skipif(not MISSING, reason="the export extra is installed here")
def test_without_the_extra_export_says_what_to_install(trained_run):
    r = export_process(trained_run.run_dir)  # the wrapper as a real process (without the extra)
    assert r.returncode == 2
    assert r.stderr.strip() == ("onebit: error: export needs the optional extra: pip install -e '.[export]' "
                                f"(missing: {', '.join(MISSING)})")


def test_measured_table_of_a_run_that_was_not_exported_is_one_line(tmp_path):
    run = tmp_path / "copy"
    r = run_train([*ARGS, "model.width=4", "pretrain=none", f"output_root={run}", "+trainer.limit_train_batches=2"])
    assert r.returncode == 0, r.stderr[-2000:]
    rec = only_record(run)
    t = run_cli(tables, ["efficiency", "--measured", rec.run_dir])
    assert t.returncode == 1
    assert t.stderr.strip() == (f"onebit: error: run {rec.run_dir} has no exported model: onebit-export "
                                f"{rec.run_dir}")
    shutil.rmtree(run)
