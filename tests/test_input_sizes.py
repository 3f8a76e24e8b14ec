"""Every model of conf/model/*.yaml runs forward and backward at any input size, odd sizes included.

The official Bi-Real code's downsampling shortcut ``AvgPool2d(2)`` floors an odd size while the strided 3x3 conv
beside it ceils it, so a 28x28 input crashed Bi-Real-18 with the small stem (28 -> 14 -> 7 -> 3 vs 4). onebit
pools with ``ceil_mode=True`` (``onebit.nn.models.resnet.shortcut_pool``), which equals ``AvgPool2d(2)`` at even
sizes; BinaryDenseNet's transition max-pool likewise.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import CONF, compose_cfg
from torch import nn

from onebit.nn import quantizers as q
from onebit.nn.models import BinaryDenseNet, BiRealResNet, TorchvisionResNet
from onebit.nn.models.resnet import shortcut_pool
from onebit.training.build import make_model

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
REAL = {"resnet18", "resnet34"}
DEEP = {"bireal101", "bireal152"}
SMALL_SIZES = [7, 8, 13, 28, 32, 33]
IMAGENET_SIZES = [28, 112, 200, 57]
DATA = SimpleNamespace(in_channels=1, num_classes=10, default_width=8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these small convolutions gain nothing from more, and on a busy 2-core machine
    spinning OpenMP threads made this file 8x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _build(name: str, stem: str, tmp_path: Path) -> nn.Module:
    extra = ["model.growth=4"] if name.startswith("binarydensenet") else []
    width = [] if name in REAL else ["model.width=4"]
    cfg = compose_cfg([f"model={name}", f"data.stem={stem}", *width, *extra], tmp_path)
    return make_model(cfg, DATA, "real" if name in REAL else "binary")


def _stem_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))  # conv1 / stem[0]: registered first


def _forward_backward(model: nn.Module, size: int, n: int = 2) -> None:
    torch.manual_seed(0)
    model.train()
    out = model(torch.randn(n, 1, size, size))
    assert out.shape == (n, 10), size
    F.cross_entropy(out, torch.arange(n) % 10).backward()
    grad = _stem_conv(model).weight.grad
    assert grad is not None and torch.isfinite(grad).all(), size
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", [m for m in MODELS if m not in REAL])
@pytest.mark.parametrize("stem", ["small", "imagenet"])
def test_binary_models_run_at_any_size(name, stem, tmp_path):
    model = _build(name, stem, tmp_path)
    if name in DEEP:  # 101/152 layers: a couple of sizes keep the file fast
        sizes = [7, 28] if stem == "small" else [57]
    else:
        sizes = SMALL_SIZES if stem == "small" else IMAGENET_SIZES
    for size in sizes:
        _forward_backward(model, size)


@pytest.mark.parametrize("name", sorted(REAL))
def test_torchvision_resnets_run_at_any_size(name, tmp_path):
    model = _build(name, "imagenet", tmp_path)  # 64 wide (torchvision's)
    for size in [7, 13, *IMAGENET_SIZES]:
        _forward_backward(model, size)


def test_bireal18_at_28x28_failed_with_the_official_pool():
    """The old ``AvgPool2d(2)`` gives 3x3 where the strided conv gives 4x4 (layer 3 of a 28x28 small-stem net)."""
    x = torch.randn(1, 8, 7, 7)
    conv = nn.Conv2d(8, 8, 3, 2, 1)
    assert conv(x).shape[-2:] == (4, 4)
    assert nn.AvgPool2d(2, 2)(x).shape[-2:] == (3, 3)       # official: mismatch
    assert shortcut_pool(2)(x).shape[-2:] == (4, 4)         # onebit: matches

    model = BiRealResNet(q.ApproxSign(), q.MagnitudeAware(), depth=18, stem="small", in_channels=1,
                         num_classes=10, width=8)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    _use_official_pool(model)
    with pytest.raises(RuntimeError, match="size of tensor"):
        model(torch.randn(2, 1, 28, 28))


def _use_official_pool(model: nn.Module) -> int:
    """Swap every shortcut pool of ``model`` for the official ``AvgPool2d(2, stride)``; returns how many."""
    n = 0
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.AvgPool2d):
                setattr(module, name, nn.AvgPool2d(2, child.stride))
                n += 1
    return n


@pytest.mark.parametrize("size", [2, 4, 8, 14, 28, 56, 64])
def test_shortcut_pool_equals_avgpool2_at_even_sizes(size):
    x = torch.randn(3, 5, size, size, dtype=torch.float64)
    assert torch.equal(shortcut_pool(2)(x), nn.AvgPool2d(2, 2)(x))
    y = torch.randn(2, 3, size, size + 2)
    assert torch.equal(shortcut_pool(2)(y), nn.AvgPool2d(2)(y))


def test_shortcut_pool_averages_only_valid_pixels_at_odd_sizes():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    out = shortcut_pool(2)(x)
    # windows: [[0,1],[3,4]] -> 2; [[2],[5]] -> 3.5; [[6,7]] -> 6.5; [[8]] -> 8
    assert out.flatten().tolist() == [2.0, 3.5, 6.5, 8.0]


@pytest.mark.parametrize("structure,depth", [("bireal", 18), ("res", 18), ("bireal", 50), ("res", 50)])
def test_whole_models_unchanged_at_even_sizes(structure, depth):
    torch.manual_seed(0)
    model = BiRealResNet(q.ApproxSign(), q.MagnitudeAware(), depth=depth, structure=structure, stem="small",
                         in_channels=1, num_classes=10, width=4).double().eval()
    x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    new = model(x)
    assert _use_official_pool(model) == 3
    assert torch.equal(model(x), new)


def test_densenet_transition_unchanged_at_even_sizes_and_keeps_odd_ones():
    torch.manual_seed(0)
    model = BinaryDenseNet(q.SteSign(1.3), q.PlainSign(1.3), depth=28, stem="small", in_channels=1,
                           num_classes=10, width=8, growth=8).eval()
    x = torch.randn(2, 1, 32, 32)
    new = model(x)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.ceil_mode for p in pools)
    for p in pools:
        p.ceil_mode = False  # larq-zoo's MaxPool2D(2): floor
    assert torch.equal(model(x), new)
    with pytest.raises(RuntimeError):  # floor: 7 -> 3 -> 1 -> 0
        model(torch.randn(2, 1, 7, 7))


def test_torchvision_resnet_is_unchanged():
    model = TorchvisionResNet(18, num_classes=10, in_channels=1)
    assert not any(isinstance(m, nn.AvgPool2d) for m in model.modules())  # strided 1x1 convs: no pool to fix
