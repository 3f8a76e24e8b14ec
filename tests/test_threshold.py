"""ReActNet's learnable per-channel threshold of the Sign (RSign, Liu et al. ECCV 2020 Eq. 1-2),
``sign.learnable_threshold=true``: forward ``sign(x - alpha_c)``, backward ``dL/dx = dL/dy g(x - alpha_c)`` and
``dL/dalpha_c = -sum dL/dy g(x - alpha_c)`` for every sign approximation's g (NumPy re-implementations and finite
differences of the smooth function g is the derivative of); a 'bn'-role, 32-bit parameter of the binary conv, absent
by default; initialised to 0 from the twin; trained on digits and resumed after a kill."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import torch
from conftest import ROOT, only_record, run_train
from hydra.utils import instantiate
from omegaconf import OmegaConf
from test_quantizers import np_approx, np_sign, np_ste, np_swish

from onebit.nn.layers import BinaryConv2d, threshold_names
from onebit.nn.models import BinaryDenseNet, BiRealResNet
from onebit.nn.optim import param_groups, parameter_roles
from onebit.nn.quantizers import ApproxSign, Clip, MagnitudeAware, PlainSign, RealWeight, SteSign, SwishSign
from onebit.nn.summary import summarize
from onebit.training.build import transfer
from onebit.training.checkpoints import stage_weights

C = 5

# (component, g: its pseudo-gradient, F: the smooth function g is the derivative of, away from F's kinks)
SIGNS = {
    "ste": (lambda: SteSign(t=1.0, learnable_threshold=True), lambda x: np_ste(x, 1.0),
            lambda x: np.clip(x, -1.0, 1.0), (-1.0, 1.0)),
    "ste-1.3": (lambda: SteSign(t=1.3, learnable_threshold=True), lambda x: np_ste(x, 1.3),
                lambda x: np.clip(x, -1.3, 1.3), (-1.3, 1.3)),
    "approx": (lambda: ApproxSign(learnable_threshold=True), np_approx,  # Bi-Real Eq. 3's F
               lambda x: np.where(x < -1, -1, np.where(x < 0, 2 * x + x**2, np.where(x < 1, 2 * x - x**2, 1))),
               (-1.0, 0.0, 1.0)),
    "swish": (lambda: SwishSign(beta=5.0, learnable_threshold=True), np_swish,  # BNN+'s SignSwish
              lambda x: 2 / (1 + np.exp(-5 * x)) * (1 + 5 * x * (1 - 1 / (1 + np.exp(-5 * x)))) - 1, ()),
}


def identity_conv(sign) -> BinaryConv2d:
    """A 1x1 conv with the identity kernel and real weights: its output is the binarized input itself, so the
    upstream gradient of the conv is dL/dy of the sign."""
    conv = BinaryConv2d(C, C, 1, input_quantizer=sign, weight_quantizer=RealWeight())
    with torch.no_grad():
        conv.weight.copy_(torch.eye(C).view(C, C, 1, 1))
    return conv


def inputs(seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1.2, size=(3, C, 6, 7)).astype(np.float32)
    alpha = rng.normal(0, 0.5, size=C).astype(np.float32)
    x[0, :, 0, 0] = alpha  # x = alpha_c exactly: +1 (Bi-Real Eq. 1's sign(0) = +1)
    up = rng.normal(size=x.shape).astype(np.float32)
    return x, alpha, up


def backward(conv, x_np, alpha_np, up_np):
    with torch.no_grad():
        conv.threshold.copy_(torch.from_numpy(alpha_np))
    x = torch.tensor(x_np, requires_grad=True)
    y = conv(x)
    y.backward(torch.from_numpy(up_np))
    return y.detach().numpy(), x.grad.numpy(), conv.threshold.grad.numpy()


@pytest.mark.parametrize("name", list(SIGNS))
def test_threshold_forward_and_gradients_match_reactnet_eq_1_2(name):
    make, g, _, _ = SIGNS[name]
    x, alpha, up = inputs(0)
    y, gx, ga = backward(identity_conv(make()), x, alpha, up)
    shifted = x - alpha[None, :, None, None]  # float32, as in the layer
    np.testing.assert_array_equal(y, np_sign(shifted))  # Eq. 1 (with sign(0) = +1)
    assert np.all(y[0, :, 0, 0] == 1.0)
    np.testing.assert_allclose(gx, up * g(shifted.astype(np.float64)), rtol=1e-5, atol=1e-6)
    # Eq. 2: dL/dalpha_c = -sum over the channel's elements of dL/dy g(x - alpha_c)
    expected = -(up * g(shifted.astype(np.float64))).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(ga, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(ga).min() > 1e-3  # every channel gets a gradient


@pytest.mark.parametrize("name", list(SIGNS))
def test_threshold_gradient_is_the_finite_difference_of_the_smooth_function(name):
    """``d/dalpha_c sum dL/dy F(x - alpha_c)`` by central differences (float64) equals the layer's threshold
    gradient: the pseudo-gradient is the derivative of F, the function the approximation stands for."""
    make, _, F, kinks = SIGNS[name]
    x, alpha, up = inputs(1)
    x[0, :, 0, 0] += 0.25  # no point on a kink
    _, _, ga = backward(identity_conv(make()), x, alpha, up)
    s = (x - alpha[None, :, None, None]).astype(np.float64)
    assert all(np.abs(s - k).min() > 1e-4 for k in kinks)
    h = 1e-6
    fd = np.array([((up * F(s - h * (np.arange(C) == c)[None, :, None, None])).sum()
                    - (up * F(s + h * (np.arange(C) == c)[None, :, None, None])).sum()) / (2 * h) for c in range(C)])
    np.testing.assert_allclose(ga, fd, rtol=1e-4, atol=1e-4)


def model(learnable: bool, cls=BiRealResNet):
    torch.manual_seed(0)
    if cls is BinaryDenseNet:
        return BinaryDenseNet(SteSign(t=1.3, learnable_threshold=learnable), PlainSign(), depth=28, growth=8, width=8,
                              stem="small", num_classes=10)
    return BiRealResNet(ApproxSign(learnable_threshold=learnable), MagnitudeAware(), depth=18, width=8,
                        stem="small", in_channels=3, num_classes=10)


@pytest.mark.parametrize("cls", [BiRealResNet, BinaryDenseNet])
def test_default_has_no_threshold_and_zero_thresholds_are_the_plain_sign(cls):
    plain, rsign = model(False, cls), model(True, cls)
    assert threshold_names(plain) == [] and not any("threshold" in k for k in plain.state_dict())
    convs = [m for m in rsign.modules() if isinstance(m, BinaryConv2d)]
    assert len(threshold_names(rsign)) == len(convs) > 0
    assert all(c.threshold.shape == (c.in_channels,) and not c.threshold.any() for c in convs)
    audit = transfer(plain.state_dict(), rsign)  # the twin -> binary transfer: thresholds start at 0
    assert audit["initialised"] == threshold_names(rsign) and audit["missing"] == [] and audit["strict"]
    x = torch.randn(4, 3, 8, 8)
    plain.eval(), rsign.eval()
    with torch.no_grad():
        torch.testing.assert_close(rsign(x), plain(x), rtol=0, atol=0)
        convs[0].threshold.fill_(0.3)
        assert not torch.equal(rsign(x), plain(x))


def test_transfer_still_refuses_any_other_missing_weight():
    state = model(False).state_dict()
    del state["fc.weight"]
    with pytest.raises(RuntimeError, match="fc.weight"):
        transfer(state, model(True))
    trained = model(True).state_dict()
    trained[threshold_names(model(True))[0]].fill_(0.5)  # a state that has thresholds keeps them
    target = model(True)
    assert "initialised" not in transfer(trained, target)
    assert float(target.layer1[0].conv1.threshold.detach()[0]) == 0.5


def test_thresholds_are_bn_role_without_weight_decay_and_32_bit_in_the_summary():
    plain, rsign = model(False), model(True)
    names = {id(p): n for n, p in rsign.named_parameters()}
    bn = {names[id(p)] for p in parameter_roles(rsign)["bn"]}
    assert set(threshold_names(rsign)) <= bn
    assert not set(threshold_names(rsign)) & {names[id(p)] for r in ("binary", "real") for p in
                                              parameter_roles(rsign)[r]}
    groups = {g["role"]: g for g in param_groups(rsign, {"binary": 0.0, "real": 5e-4, "bn": 0.0})}
    assert groups["bn"]["weight_decay"] == 0.0
    a, b = summarize(plain, (3, 8, 8)), summarize(rsign, (3, 8, 8))
    extra = sum(m.in_channels for m in rsign.modules() if isinstance(m, BinaryConv2d))
    assert b.real_params - a.real_params == extra and b.binary_params == a.binary_params
    assert (b.bops, b.flops) == (a.bops, a.flops)
    assert b.memory_mbit == pytest.approx(a.memory_mbit + 32 * extra / 1e6)


@pytest.mark.parametrize("name", ["ste", "approx", "swish"])
def test_every_sign_yaml_has_the_switch_off_by_default(name):
    cfg = OmegaConf.load(ROOT / "conf" / "sign" / f"{name}.yaml")
    assert cfg.learnable_threshold is False and instantiate(cfg).learnable_threshold is False
    cfg.learnable_threshold = True
    conv = BinaryConv2d(3, 4, 3, 1, 1, input_quantizer=instantiate(cfg), weight_quantizer=PlainSign())
    assert conv.threshold is not None and conv.is_binary
    twin = BinaryConv2d(3, 4, 3, 1, 1, input_quantizer=Clip())  # a real activation has no threshold
    assert twin.threshold is None


def test_a_bad_value_is_one_line_naming_it():
    with pytest.raises(ValueError, match=r"^sign\.learnable_threshold='yes' is invalid: must be true or false$"):
        ApproxSign(learnable_threshold="yes")
    r = run_train(["sign.learnable_threshold=maybe", "logger=none"])
    assert r.returncode != 0 and "sign.learnable_threshold='maybe' is invalid" in r.stderr, r.stderr[-2000:]


# ----------------------------------------------------------------------------------------------------------
# A real run on digits: the thresholds move, the net learns, and a killed run resumes to the same record
# ----------------------------------------------------------------------------------------------------------

ARGS = ["model.width=4", "logger=none", "trainer.deterministic=true", "threads=1", "epochs=3",
        "sign.learnable_threshold=true"]


def essence(rec) -> dict:
    return {n: {"status": s.status, "metrics": s.metrics, "transfer": s.transfer,
                "history": [{k: v for k, v in h.items() if k != "seconds"} for h in s.history]}
            for n, s in rec.stages.items()}


@pytest.fixture
def uninterrupted(train_once):
    return train_once(*ARGS)


def test_trains_on_digits_and_the_thresholds_move(uninterrupted):
    rec = uninterrupted
    assert rec.status == "finished" and rec.config["sign"]["learnable_threshold"] is True
    binary = rec.stages["binary"]
    assert binary.transfer["initialised"] and all(k.endswith(".threshold") for k in binary.transfer["initialised"])
    state = stage_weights(rec, "binary")
    thresholds = {k: v for k, v in state.items() if k.endswith(".threshold")}
    assert sorted(thresholds) == sorted(binary.transfer["initialised"])
    assert min(float(v.abs().max()) for v in thresholds.values()) > 1e-3  # every layer's thresholds left 0
    assert binary.metrics["test/top1"] > 0.3  # 10 classes: chance is 0.1
    assert "threshold" not in "".join(stage_weights(rec, "pretrain"))  # the twin has none


def test_killed_during_training_then_rerun_equals_uninterrupted(tmp_path, uninterrupted):
    killed = run_train([*ARGS, f"output_root={tmp_path}"], env={"ONEBIT_KILL_AT": "epoch_end:binary:1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert only_record(tmp_path).status == "running"
    again = run_train([*ARGS, f"output_root={tmp_path}"])
    assert again.returncode == 0, again.stderr[-3000:]
    after = only_record(tmp_path)
    assert after.attempts == 2 and after.stages["binary"].resumed_from.endswith("last.ckpt")  # from a checkpoint
    assert essence(after) == essence(uninterrupted)
    for k, v in stage_weights(uninterrupted, "binary").items():
        torch.testing.assert_close(stage_weights(after, "binary")[k], v, rtol=0, atol=0, msg=k)
