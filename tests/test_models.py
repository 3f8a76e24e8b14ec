"""Every model family builds and runs for both shortcut settings; twin -> binary transfer is strict; the
Bi-Real-18 equals the official PyTorch code layer for layer."""


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onebit.nn import quantizers as q
from onebit.nn.layers import BinaryConv2d, FPReLU, RPReLU
from onebit.nn.models import BinaryDenseNet, BiRealResNet

SIGNS = [q.SteSign, q.ApproxSign, q.SwishSign]
WEIGHTS = [q.PlainSign, q.MagnitudeAware, q.MagnitudeAwareOfficial]


def small(cls=BiRealResNet, sign=None, weight=None, **kw):
    kw = {"stem": "small", "in_channels": 1, "num_classes": 10, "width": 8, **kw}
    return cls(sign or q.ApproxSign(), weight if weight is not None else q.MagnitudeAware(), **kw)


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
@pytest.mark.parametrize("structure", ["bireal", "res"])
@pytest.mark.parametrize("shortcut", [True, False])
def test_resnet_family_forward_backward(depth, structure, shortcut):
    model = small(depth=depth, structure=structure, shortcut=shortcut, width=4 if depth > 50 else 8)
    x = torch.randn(2, 1, 8, 8)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert all(c.weight.grad is not None for c in convs)
    shortcuts = [m.downsample for m in model.modules() if hasattr(m, "downsample")]
    assert all(s is None for s in shortcuts) if not shortcut else all(s is not None for s in shortcuts)


def test_structures_share_the_same_binary_convs():
    shapes = {}
    for structure in ("bireal", "res"):
        for shortcut in (True, False):
            m = small(depth=18, structure=structure, shortcut=shortcut)
            shapes[structure, shortcut] = [tuple(c.weight.shape) for c in m.modules() if isinstance(c, BinaryConv2d)]
    first = shapes["bireal", True]
    assert len(first) == 16 and all(v == first for v in shapes.values())
    bireal, res = small(structure="bireal"), small(structure="res")
    assert len([b for b in bireal.layer1]) == 4 and len([b for b in res.layer1]) == 2


@pytest.mark.parametrize("depth", [28, 37])
def test_binarydensenet(depth):
    model = small(BinaryDenseNet, q.SteSign(1.3), q.PlainSign(1.3), depth=depth, width=16, growth=8)
    out = model(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)
    n_dense = sum(isinstance(m, BinaryConv2d) for m in model.modules())
    assert n_dense == {28: 23, 37: 32}[depth]
    with pytest.raises(ValueError, match="shortcut=false"):
        small(BinaryDenseNet, depth=depth, shortcut=False)


def test_binarydensenet_channels_follow_larq_zoo():
    m = BinaryDenseNet(q.SteSign(1.3), q.PlainSign(1.3), depth=28)
    transitions = [mod[-1].out_channels for mod in m.features if isinstance(mod, nn.Sequential)]
    # (64 + 6*64) // 2.7 / 32 -> 160; (160 + 384) // 2.7 / 32 -> 192 ; (192 + 384) // 2.2 / 32 -> 256
    assert transitions == [160, 192, 256]
    assert m.fc.in_features == 256 + 5 * 64


@pytest.mark.parametrize("name,cls", [("prelu", nn.PReLU), ("rprelu", RPReLU), ("fprelu", FPReLU)])
def test_ftbnn_nonlinearity_after_addition(name, cls):
    model = small(nonlinearity=name)
    mods = [b.nonlinearity for b in model.layer1]
    assert all(isinstance(m, cls) for m in mods)
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    with pytest.raises(ValueError, match="model.nonlinearity='relu6'.*none, prelu, rprelu, fprelu"):
        small(nonlinearity="relu6")


def test_fprelu_formula():
    m = FPReLU(2)
    with torch.no_grad():
        m.pos.copy_(torch.tensor([2.0, 3.0]).view(1, 2, 1, 1))
        m.neg.copy_(torch.tensor([0.5, 0.1]).view(1, 2, 1, 1))
    x = torch.tensor([[[[1.0, -2.0]], [[-1.0, 4.0]]]])
    assert m(x).flatten().tolist() == pytest.approx([2.0, -1.0, -0.1, 12.0])


@pytest.mark.parametrize("model_fn", [
    lambda s, w: small(sign=s, weight=w, depth=18),
    lambda s, w: small(sign=s, weight=w, depth=18, structure="res", shortcut=False),
    lambda s, w: small(sign=s, weight=w, depth=50, width=4, nonlinearity="rprelu"),
    lambda s, w: small(BinaryDenseNet, sign=s, weight=w, depth=28, width=16, growth=8),
])
@pytest.mark.parametrize("act", [q.Clip, q.ReLU, q.LeakyClip])
def test_real_twin_state_dict_loads_strictly(model_fn, act):
    twin = model_fn(act(), None)
    binary = model_fn(q.ApproxSign(), q.MagnitudeAware())
    result = binary.load_state_dict(twin.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for (k, a), b in zip(twin.state_dict().items(), binary.state_dict().values()):
        assert torch.equal(a, b), k
    assert not any(isinstance(m, BinaryConv2d) and m.is_binary for m in twin.modules())
    assert all(m.is_binary for m in binary.modules() if isinstance(m, BinaryConv2d))


@pytest.mark.parametrize("weight_cls", WEIGHTS)
def test_forward_uses_pm1_weights_times_scale(weight_cls):
    model = small(weight=weight_cls(), depth=18)
    seen = []
    for conv in (m for m in model.modules() if isinstance(m, BinaryConv2d)):
        conv.register_forward_hook(lambda mod, inp, out: seen.append(
            (mod.weight_quantizer(mod.weight).detach(), mod.weight.detach(), mod.input_quantizer(inp[0]).detach())))
    model(torch.randn(2, 1, 8, 8))
    for w_used, w_latent, x_bin in seen:
        assert set(x_bin.unique().tolist()) <= {-1.0, 1.0}
        scale = w_latent.abs().mean(dim=(1, 2, 3), keepdim=True) if weight_cls is not q.PlainSign else 1.0
        torch.testing.assert_close(w_used, scale * torch.where(w_latent >= 0, 1.0, -1.0))


def test_binary_conv_pad_value():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 5, 5)
    for pad in (0.0, -1.0, 1.0):
        conv = BinaryConv2d(2, 3, 3, 1, 1, input_quantizer=q.SteSign(), weight_quantizer=q.PlainSign(), pad_value=pad)
        xb = torch.where(x >= 0, 1.0, -1.0)
        expected = F.conv2d(F.pad(xb, (1, 1, 1, 1), value=pad), torch.where(conv.weight >= 0, 1.0, -1.0))
        torch.testing.assert_close(conv(x), expected)
    with pytest.raises(ValueError, match="pad_value=0.5"):
        BinaryConv2d(2, 3, 3, 1, 1, input_quantizer=q.SteSign(), pad_value=0.5)


def test_invalid_model_arguments_name_the_value():
    with pytest.raises(ValueError, match=r"model.width=0 is invalid"):
        small(width=0)
    with pytest.raises(ValueError, match=r"model.depth=20 is invalid: choose one of 18, 34, 50, 101, 152"):
        small(depth=20)
    with pytest.raises(ValueError, match=r"model.structure='dense'"):
        small(structure="dense")


# --- the official Bi-Real PyTorch code (liuzechun/Bi-Real-net, pytorch_implementation/BiReal18_34/birealnet.py),
# --- transcribed for comparison; onebit's Bi-Real-18 must compute exactly the same function.

class OfficialBinaryActivation(nn.Module):
    def forward(self, x):
        out_forward = torch.sign(x)
        mask1, mask2, mask3 = x < -1, x < 0, x < 1
        out1 = (-1) * mask1.float() + (x * x + 2 * x) * (1 - mask1.float())
        out2 = out1 * mask2.float() + (-x * x + 2 * x) * (1 - mask2.float())
        out3 = out2 * mask3.float() + 1 * (1 - mask3.float())
        return out_forward.detach() - out3.detach() + out3


class OfficialHardBinaryConv(nn.Module):
    def __init__(self, in_chn, out_chn, kernel_size=3, stride=1, padding=1):
        super().__init__()
        self.stride, self.padding = stride, padding
        self.shape = (out_chn, in_chn, kernel_size, kernel_size)
        self.weights = nn.Parameter(torch.rand((out_chn * in_chn * kernel_size * kernel_size, 1)) * 0.001)

    def forward(self, x):
        real_weights = self.weights.view(self.shape)
        scaling_factor = torch.mean(torch.mean(torch.mean(abs(real_weights), dim=3, keepdim=True), dim=2,
                                               keepdim=True), dim=1, keepdim=True).detach()
        binary_weights_no_grad = scaling_factor * torch.sign(real_weights)
        cliped_weights = torch.clamp(real_weights, -1.0, 1.0)
        binary_weights = binary_weights_no_grad.detach() - cliped_weights.detach() + cliped_weights
        return F.conv2d(x, binary_weights, stride=self.stride, padding=self.padding)


class OfficialBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.binary_activation = OfficialBinaryActivation()
        self.binary_conv = OfficialHardBinaryConv(inplanes, planes, stride=stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        residual = x
        out = self.bn1(self.binary_conv(self.binary_activation(x)))
        if self.downsample is not None:
            residual = self.downsample(x)
        return out + residual


class OfficialBiRealNet(nn.Module):
    def __init__(self, layers=(4, 4, 4, 4), num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.AvgPool2d(kernel_size=2, stride=stride),
                                       nn.Conv2d(self.inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes))
        layers = [OfficialBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [OfficialBasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def official_pair(depth, layers):
    torch.manual_seed(0)
    official = OfficialBiRealNet(layers, num_classes=10)
    ours = BiRealResNet(q.ApproxSign(), q.MagnitudeAwareOfficial(), depth=depth, num_classes=10)
    # randomise BN statistics / affine and the latent weights so that the comparison is not trivial
    for m in official.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5), nn.init.uniform_(m.bias, -0.5, 0.5)
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2)
        if isinstance(m, OfficialHardBinaryConv):
            nn.init.uniform_(m.weights, -1.2, 1.2)
            # the only intended difference: torch.sign(0) = 0 in the official code, sign(0) = +1 (Eq. 1) here
            m.weights.data[m.weights.data == 0] = 0.5
    mapped = {}
    for k, v in official.state_dict().items():
        if k.endswith("binary_conv.weights"):
            mod = official.get_submodule(k.rsplit(".", 1)[0])
            mapped[k.replace("binary_conv.weights", "conv1.weight")] = v.view(mod.shape)
        else:
            mapped[k] = v
    ours.load_state_dict(mapped, strict=True)  # same module tree, key for key
    # float64: the official idiom detach(sign) - detach(f) + f is +-1 only up to rounding, and deep nets amplify
    # rounding differences into sign flips; in float64 the two agree to ~1e-12
    return official.double(), ours.double()


def run_both(official, ours, x, train):
    official.train(train), ours.train(train)
    xo, xu = x.clone().requires_grad_(), x.clone().requires_grad_()
    yo, yu = official(xo), ours(xu)
    torch.testing.assert_close(yu, yo, rtol=1e-9, atol=1e-9)
    up = torch.randn_like(yo)
    yo.backward(up)
    yu.backward(up)
    torch.testing.assert_close(xu.grad, xo.grad, rtol=1e-7, atol=1e-9)


def test_bireal18_matches_official_code_end_to_end():
    official, ours = official_pair(18, (4, 4, 4, 4))
    x = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    for train in (False, True):
        run_both(official, ours, x, train)
    g_official = official.layer2[1].binary_conv.weights.grad.view(128, 128, 3, 3)
    torch.testing.assert_close(ours.layer2[1].conv1.weight.grad, g_official, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("depth,layers", [(18, (4, 4, 4, 4)), (34, (6, 8, 12, 6))])
def test_bireal_matches_official_code_block_for_block(depth, layers):
    official, ours = official_pair(depth, layers)
    for stage in range(1, 5):
        for b_off, b_ours in zip(getattr(official, f"layer{stage}"), getattr(ours, f"layer{stage}"), strict=True):
            c = b_off.binary_conv.shape[1]
            x = torch.randn(2, c, 8, 8, dtype=torch.float64)
            run_both(b_off, b_ours, x, train=True)
