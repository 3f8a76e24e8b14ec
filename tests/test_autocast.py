"""bf16 (and fp16) autocast: every binarization component under ``torch.autocast``, alone and inside a
BinaryConv2d, and a real ``python src/train.py trainer.precision=bf16-mixed`` run.

What autocast gives each component: convolutions run in bf16, so a BinaryConv2d's *input* reaches the sign
approximation in bf16 (the previous conv/BN output) while the latent weights stay float32 parameters (the conv casts
``w(W_r)`` to bf16 itself). Weights are bf16 only when a whole model is cast (Lightning's ``bf16-true``).

What is asserted, exactly (``torch.equal``, no tolerance):

- forward: ``sign(x)`` is exactly -1/+1 in the input's dtype; a weight component gives ``sign(W_r)`` times its
  per-filter scale ``mean |W_r|`` (``torch.mean`` in the weight's dtype; in bf16 it accumulates in float32 and rounds
  once, checked to one bf16 step against the float32 mean);
- backward: each component's docstring formula, evaluated in float32 on the exact float32 values of its bf16/fp16
  input and incoming gradient, rounded once to the input's dtype (float32 inputs: the float32 formula itself).
  Every bf16/fp16 number is a float32, so only the one final rounding separates it from the exact value; evaluated
  in bf16 instead, SwishSign's derivative is off by up to 1% of its peak. Thresholds ``|x| <= t`` are exact
  comparisons of real numbers (float64 here): bf16 would round ``t = 1.1`` up to 1.1015625.

The formulas below are written from the docstrings, independently of onebit's code; only the op order is the
docstring's, so that float32 rounding is the same.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import FAST, run_train

from onebit.nn import quantizers as q
from onebit.nn.layers import BinaryConv2d
from onebit.nn.models import BiRealResNet
from onebit.records.record import read_record

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
NARROW = [torch.bfloat16, torch.float16]

SIGNS = {
    "ste": lambda: q.SteSign(),
    "ste_t1.1": lambda: q.SteSign(1.1),  # 1.1 is not a bf16 number: bf16 rounds it up to 1.1015625
    "approx": lambda: q.ApproxSign(),
    "approx_t0.3": lambda: q.ApproxSign(0.3),
    "swish": lambda: q.SwishSign(),
    "swish_b2": lambda: q.SwishSign(2.0),
}
WEIGHTS = {
    "plain": lambda: q.PlainSign(),
    "plain_t1.1": lambda: q.PlainSign(1.1),
    "magnitude_aware": lambda: q.MagnitudeAware(),
    "magnitude_aware_official": lambda: q.MagnitudeAwareOfficial(),
    "xnor": lambda: q.XnorScaling(),
    "xnor_t0.7": lambda: q.XnorScaling(0.7),
}
FIXED = ("magnitude_aware", "magnitude_aware_official", "xnor")  # also tested with fixed = True (BN retraining)


def within(x: torch.Tensor, t: float) -> torch.Tensor:
    """``1{|x| <= t}`` as an exact comparison of real numbers (float64 holds every bf16/fp16/float32 exactly)."""
    return x.double().abs() <= t


def sign_of(x: torch.Tensor) -> torch.Tensor:
    """Bi-Real Eq. 1 in x's dtype: +1 for x >= 0, else -1."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def wide(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in NARROW else x


def sign_derivative(comp: q.SignApproximation, x: torch.Tensor) -> torch.Tensor:
    """The pseudo-gradient g(x) of each sign approximation's docstring, in x's dtype (float32 here)."""
    if isinstance(comp, q.SteSign):
        return within(x, comp.t).to(x.dtype)
    if isinstance(comp, q.ApproxSign):
        g = torch.clamp(2 - 2 * x.abs(), min=0)
        return g * within(x, comp.t) if comp.t is not None and comp.t < 1 else g
    if isinstance(comp, q.SwishSign):
        b = comp.beta
        return b * (2 - b * x * torch.tanh(b * x / 2)) / (1 + torch.cosh(b * x))
    raise AssertionError(comp)


def expected_sign_grad(comp, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``dL/dx = dL/dy * g(x)`` in float32, rounded once to x's dtype."""
    return (wide(g) * sign_derivative(comp, wide(x))).to(x.dtype)


def filter_mean(w: torch.Tensor) -> torch.Tensor:
    """Bi-Real Eq. 6, ``||W_r||_1 / n`` per output filter, in w's dtype."""
    return w.abs().mean(dim=(1, 2, 3), keepdim=True)


def expected_weight(comp, w: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward, dL/dW_r) of each weight component's docstring, given ``g = dL/dW_b``; in w's dtype."""
    s, scale, fixed = sign_of(w), filter_mean(w), getattr(comp, "fixed", False)
    if isinstance(comp, q.PlainSign):
        return s, g * within(w, comp.t)
    if isinstance(comp, q.MagnitudeAware):  # Eq. 7: dL/dW_b * scale * 1{|W_r| < 1}
        return (s if fixed else s * scale), (wide(g) * wide(scale)).to(w.dtype) * (w.double().abs() < 1)
    if isinstance(comp, q.MagnitudeAwareOfficial):  # clamp's gradient: 1{|W_r| < 1}, no scale
        return (s if fixed else s * scale), g * (w.double().abs() < 1)
    if isinstance(comp, q.XnorScaling):  # g alpha 1{|W| <= t} + sign(W)/n sum_k g_k sign(W_k)
        mask = within(w, comp.t)
        if fixed:
            return s, g * mask
        g32, s32, a32 = wide(g), wide(s), wide(scale)
        n = w[0].numel()
        through_scale = (g32 * s32).sum(dim=(1, 2, 3), keepdim=True) * s32 / n
        return s * scale, (g32 * a32 * mask + through_scale).to(w.dtype)
    raise AssertionError(comp)


def make_weight(name: str, fixed: bool):
    comp = WEIGHTS[name]()
    comp.fixed = fixed
    return comp


def weight_cases():
    return [pytest.param(n, f, id=f"{n}{'_fixed' if f else ''}") for n in WEIGHTS
            for f in ((False, True) if n.split("_t")[0] in FIXED else (False,))]


def inputs(dtype: torch.dtype, device: str, cuts=(1.0, 1.1, 0.3, 0.7)) -> torch.Tensor:
    """Random values plus, for each threshold t, the representable numbers next to t and -t (where bf16's
    round-to-nearest of t decides the mask), and 0; shaped (4, 4, 3, 3) like a conv weight."""
    torch.manual_seed(0)
    x = torch.randn(4 * 4 * 3 * 3 - 5 * len(cuts) - 1, dtype=torch.float64) * 1.2
    edges = []
    for t in cuts:
        r = torch.tensor(t, dtype=dtype)
        up = torch.nextafter(r, torch.tensor(math.inf, dtype=dtype))
        down = torch.nextafter(r, torch.tensor(0, dtype=dtype))
        edges += [r, up, down, -r, -up]
    x = torch.cat([x.to(dtype), torch.stack(edges), torch.zeros(1, dtype=dtype)])
    return x.reshape(4, 4, 3, 3).to(device)


# ------------------------------------------------------------------------------------------------------------
# each component alone on a bf16 / fp16 input (Lightning's *-true precisions; and what autocast feeds the sign)
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", NARROW, ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", SIGNS)
def test_sign_alone_in_narrow_dtype(name, dtype, device):
    comp = SIGNS[name]()
    x = inputs(dtype, device).requires_grad_()
    g = torch.randn(x.shape, device=device).to(dtype)
    y = comp(x)
    assert y.dtype == dtype and torch.equal(y, sign_of(x.detach())) and set(y.unique().tolist()) == {-1.0, 1.0}
    y.backward(g)
    assert x.grad.dtype == dtype
    assert torch.equal(x.grad, expected_sign_grad(comp, x.detach(), g))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", NARROW, ids=["bf16", "fp16"])
@pytest.mark.parametrize("name,fixed", weight_cases())
def test_weight_alone_in_narrow_dtype(name, fixed, dtype, device):
    comp = make_weight(name, fixed)
    w = inputs(dtype, device).requires_grad_()
    g = torch.randn(w.shape, device=device).to(dtype)
    out = comp(w)
    want_out, want_grad = expected_weight(comp, w.detach(), g)
    assert out.dtype == dtype and torch.equal(out, want_out)
    if not (isinstance(comp, q.PlainSign) or fixed):  # the scale: float32 accumulation, one rounding
        scale = out.abs().amax(dim=(1, 2, 3), keepdim=True)
        assert torch.equal(out.abs(), scale.expand_as(out))
        torch.testing.assert_close(scale.float(), filter_mean(w.detach().float()), rtol=2.0 ** -8, atol=0)
    out.backward(g)
    assert w.grad.dtype == dtype and torch.equal(w.grad, want_grad)


# ------------------------------------------------------------------------------------------------------------
# inside a BinaryConv2d under torch.autocast
# ------------------------------------------------------------------------------------------------------------


def _capture(module: torch.nn.Module, store: dict, name: str):
    """Keep the component's input and output (with its gradient) for the checks."""
    def hook(mod, args, out):
        out.retain_grad()
        store[name] = (args[0], out)
    return module.register_forward_hook(hook)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float32], ids=["x_bf16", "x_fp32"])
@pytest.mark.parametrize("weight,fixed", weight_cases())
@pytest.mark.parametrize("sign", SIGNS)
def test_binary_conv_under_autocast(sign, weight, fixed, x_dtype, device):
    torch.manual_seed(1)
    conv = BinaryConv2d(4, 4, 3, padding=1, input_quantizer=SIGNS[sign](), weight_quantizer=make_weight(weight, fixed),
                        pad_value=-1.0).to(device)
    with torch.no_grad():
        conv.weight.copy_(inputs(torch.float32, device))
    x = (torch.randn(2, 4, 5, 5, device=device) * 1.2).to(x_dtype)
    x[0, 0, 0, :4] = torch.tensor([1.1, -1.1, 0.3, 0.0])
    x.requires_grad_()
    seen = {}
    _capture(conv.input_quantizer, seen, "a")
    _capture(conv.weight_quantizer, seen, "w")
    with torch.autocast(device, dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16  # autocast ran the conv in bf16
    (y.float() * torch.randn(y.shape, device=device)).sum().backward()

    a_in, a_out = seen["a"]
    assert a_out.dtype == x_dtype and torch.equal(a_out, sign_of(x.detach()))
    assert torch.equal(x.grad, expected_sign_grad(conv.input_quantizer, x.detach(), a_out.grad))

    w_in, w_out = seen["w"]
    assert w_in is conv.weight and w_out.dtype == torch.float32 and w_out.grad.dtype == torch.float32
    want_out, want_grad = expected_weight(conv.weight_quantizer, conv.weight.detach(), w_out.grad)
    assert torch.equal(w_out, want_out)
    assert conv.weight.grad.dtype == torch.float32 and torch.equal(conv.weight.grad, want_grad)


@pytest.mark.parametrize("device", DEVICES)
def test_bireal18_step_under_autocast(device):
    """A whole Bi-Real-18 (small stem, width 16, 32x32): the signs see bf16, the parameters and their gradients stay
    float32, the loss and every gradient are finite, and autocast really changed the numbers."""
    torch.manual_seed(0)
    model = BiRealResNet(q.ApproxSign(), q.MagnitudeAware(), depth=18, stem="small", width=16, num_classes=10)
    model.to(device)
    x, y = torch.randn(8, 3, 32, 32, device=device), torch.randint(0, 10, (8,), device=device)
    sign_dtypes = set()
    for m in model.modules():
        if isinstance(m, q.SignApproximation):
            m.register_forward_pre_hook(lambda mod, args: sign_dtypes.add(args[0].dtype))
    with torch.autocast(device, dtype=torch.bfloat16):
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    assert sign_dtypes == {torch.bfloat16} and logits.dtype == torch.bfloat16
    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads.values())
    with torch.no_grad():
        full = model(x)
    assert not torch.equal(logits.float(), full)


def test_train_bf16_mixed(tmp_path):
    """`python src/train.py trainer.precision=bf16-mixed` (Lightning's autocast) trains and evaluates to finite
    losses."""
    r = run_train(["trainer.precision=bf16-mixed", "pretrain=none", *FAST, f"output_root={tmp_path}"])
    assert r.returncode == 0, r.stderr[-3000:]
    (path,) = tmp_path.rglob("record.json")
    rec = read_record(path)
    assert rec.status == "finished" and rec.config["trainer"]["precision"] == "bf16-mixed"
    metrics = rec.stages["binary"].metrics
    for key in ("train/loss", "val/loss", "test/loss"):
        assert math.isfinite(metrics[key]), (key, metrics)
