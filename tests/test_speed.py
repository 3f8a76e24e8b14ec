"""Speed options (onebit.speed): a channels_last or torch.compile'd model computes what the plain model computes,
keeps its state_dict keys, and bad values are refused.

Equality is checked in float64 to ``1e-10`` of each tensor's largest entry: the options reorder float sums (an NHWC
convolution, Inductor's fused kernels), and a binary network's sign turns a rounding difference in a pre-activation
within a few ulps of zero into a different +-1, an O(1) change. In float32 that happens at random; in float64 a flip
needs a pre-activation within ~1e-16 of zero, and the differences seen here are ~1e-15 (outputs) to ~1e-13
(gradients). A wrong graph (a stale binarized weight, a dropped gradient term) differs at O(1). One case no float
type avoids: a scaled binary weight (``alpha * sign``) whose conv sum is exactly 0 in one order is ``+-1e-17`` in
another, and with no shortcut (``shortcut=false``) nothing continuous is added before the next sign; such models are
tested here with PlainSign, whose integer sums are exact in any order.

One model is compiled in this file (Inductor, float64; about 30 s on 2 idle cores, minutes on a busy machine or with
Inductor's cache cold), the others only traced (``torch._dynamo.explain``).
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from onebit.nn import quantizers as q
from onebit.nn.layers import BinaryConv2d
from onebit.nn.models import BinaryDenseNet, BiRealResNet, TorchvisionResNet
from onebit.nn.speed import apply_speed_options, compile_modes

TOL = 1e-10


def mixed_bireal18(dtype=torch.float64) -> torch.nn.Module:
    """Bi-Real-18 (small stem, width 16) with every autograd Function of onebit.nn.quantizers: ApproxSign +
    MagnitudeAware in layer1, SteSign(1.3) + XnorScaling in layer2, SwishSign + PlainSign in layer3, ApproxSign(0.5)
    + MagnitudeAwareOfficial in layer4."""
    torch.manual_seed(0)
    model = BiRealResNet(q.ApproxSign(), q.MagnitudeAware(), depth=18, stem="small", width=16, num_classes=10)
    parts = [(q.SteSign(1.3), q.XnorScaling()), (q.SwishSign(), q.PlainSign()),
             (q.ApproxSign(0.5), q.MagnitudeAwareOfficial())]
    for layer, (sign, weight) in zip((model.layer2, model.layer3, model.layer4), parts):
        for conv in layer.modules():
            if isinstance(conv, BinaryConv2d) and conv.is_binary:
                conv.input_quantizer, conv.weight_quantizer = copy.deepcopy(sign), copy.deepcopy(weight)
    return model.to(dtype)


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, what
    err = (got - want).abs().max().item()
    assert err <= TOL * max(want.abs().max().item(), 1e-30), f"{what}: max difference {err:.3g}"


def same_training(plain: torch.nn.Module, fast: torch.nn.Module, x: torch.Tensor, steps: int = 2,
                  later=contextlib.nullcontext) -> None:
    """Train mode forward/backward (outputs and every gradient), an SGD step on both, then eval-mode inference
    (``torch.inference_mode``, two batches as in validation: BinaryConv2d reuses its binarized weights) after each
    step: all equal. Everything after the first inference call runs inside ``later()``."""
    torch.manual_seed(1)
    r = torch.randn(x.shape[0], 10, dtype=x.dtype)
    opts = [torch.optim.SGD(m.parameters(), lr=0.01) for m in (plain, fast)]
    with contextlib.ExitStack() as after_first:
        for step in range(steps):
            outs = []
            for m, opt in zip((plain, fast), opts):
                m.train()
                opt.zero_grad()
                y = m(x)
                (y * r).sum().backward()
                outs.append(y)
            assert_close(outs[1], outs[0], f"step {step}: train-mode output")
            for (name, p), p2 in zip(plain.named_parameters(), fast.parameters()):
                assert p2.grad is not None, name
                assert_close(p2.grad, p.grad, f"step {step}: gradient of {name}")
            for opt in opts:
                opt.step()
            for m in (plain, fast):
                m.eval()
            for call in range(2):
                with torch.inference_mode():
                    evals = [m(x.roll(call, 0)) for m in (plain, fast)]
                assert_close(evals[1], evals[0], f"after step {step}: eval-mode output {call}")
                if step == call == 0:
                    after_first.enter_context(later())
    for (name, p), p2 in zip(plain.named_parameters(), fast.parameters()):
        assert_close(p2.detach(), p.detach(), f"{name} after training")


def test_channels_last_matches_plain():
    plain = mixed_bireal18()
    fast = apply_speed_options(copy.deepcopy(plain), channels_last=True, compile=False)
    assert fast.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    fast.layer3[1].conv1.register_forward_hook(lambda m, a, out: seen.append(out.is_contiguous()))
    same_training(plain, fast, torch.randn(4, 3, 32, 32, dtype=torch.float64), steps=1)
    assert seen and not any(seen)  # the activations inside the network are NHWC, not NCHW
    assert list(fast.state_dict()) == list(plain.state_dict())


@pytest.mark.parametrize("name,build", [
    ("bireal50", lambda: BiRealResNet(q.ApproxSign(), q.MagnitudeAware(), depth=50, stem="small", width=8,
                                      num_classes=10)),  # ChannelShortcut's view across channel groups
    # no shortcut: PlainSign, whose conv outputs are integers, exact in any summation order (see the docstring)
    ("res18_plain_rprelu", lambda: BiRealResNet(q.SteSign(), q.PlainSign(), depth=18, structure="res",
                                                shortcut=False, stem="small", width=8, num_classes=10,
                                                nonlinearity="rprelu", downsample="binary", pad_value=-1.0)),
    ("densenet28", lambda: BinaryDenseNet(q.ApproxSign(), q.PlainSign(), depth=28, growth=8, width=8,
                                          stem="small", num_classes=10)),
    ("resnet18", lambda: TorchvisionResNet(depth=18, num_classes=10)),
])
def test_channels_last_every_model(name, build):
    torch.manual_seed(0)
    plain = build().double()
    fast = apply_speed_options(copy.deepcopy(plain), channels_last=True, compile=False)
    same_training(plain, fast, torch.randn(4, 3, 16, 16, dtype=torch.float64), steps=1)


def test_compile_matches_plain():
    """The one Inductor compile of this file: ``compile=True``, train and eval mode, weights changing between
    inference calls. Once one graph for training and one for inference exist nothing recompiles (a guard on a
    cached weight's version or address would recompile at every batch and step, then fall back to eager).
    state_dict keys unchanged (no ``_orig_mod.``) and loadable both ways."""
    plain = mixed_bireal18()
    fast = apply_speed_options(copy.deepcopy(plain), channels_last=False, compile=True)
    assert list(fast.state_dict()) == list(plain.state_dict())
    torch._dynamo.reset()
    same_training(plain, fast, torch.randn(4, 3, 32, 32, dtype=torch.float64), steps=3,
                  later=lambda: torch.compiler.set_stance("fail_on_recompile"))
    assert list(fast.state_dict()) == list(plain.state_dict())
    fresh = mixed_bireal18()
    fresh.load_state_dict(fast.state_dict())  # strict: same keys
    fast.load_state_dict(plain.state_dict())


@pytest.mark.parametrize("mode", ["train", "eval_no_grad"])
def test_compiles_to_one_graph(mode):
    """Dynamo traces the whole model (every custom autograd Function, BinaryConv2d's inference weight reuse) into
    one graph: no graph breaks, which would split the compiled model and cost a Python round trip each."""
    model = mixed_bireal18(torch.float32)
    model.train(mode == "train")
    torch._dynamo.reset()
    with torch.set_grad_enabled(mode == "train"):
        explained = torch._dynamo.explain(model)(torch.randn(2, 3, 16, 16))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_state_dict_keys_and_values_unchanged():
    plain = mixed_bireal18()
    fast = apply_speed_options(copy.deepcopy(plain), channels_last=True, compile="max-autotune")
    assert list(fast.state_dict()) == list(plain.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), plain.state_dict().values()))
    assert not hasattr(fast, "_orig_mod") and type(fast) is type(plain)


def test_compile_modes_are_torchs():
    assert {"default", "reduce-overhead", "max-autotune"} <= set(compile_modes())


@pytest.mark.parametrize("channels_last,compile,message", [
    ("yes", False, "channels_last='yes' is invalid: choose one of true, false"),
    (1, False, "channels_last=1 is invalid: choose one of true, false"),
    (None, False, "channels_last=None is invalid: choose one of true, false"),
    (True, "fast", "compile='fast' is invalid: choose one of false, true, default, "),
    (False, "true", "compile='true' is invalid: choose one of false, true, default, "),
    (False, 1, "compile=1 is invalid: choose one of false, true, default, "),
    (False, None, "compile=None is invalid: choose one of false, true, default, "),
])
def test_bad_values_refused(channels_last, compile, message):
    model = mixed_bireal18(torch.float32)
    with pytest.raises(ValueError) as info:
        apply_speed_options(model, channels_last=channels_last, compile=compile)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text
    if isinstance(compile, str):
        assert "max-autotune" in text
    # nothing changed before the error
    assert model.conv1.weight.is_contiguous() and model._compiled_call_impl is None
