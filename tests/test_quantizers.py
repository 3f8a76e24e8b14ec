"""Every pseudo-gradient equals its formula (a NumPy re-implementation) on a dense grid with the boundaries."""

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from onebit.nn import quantizers as q

T_VALUES = (0.5, 1.0, 1.3, 2.0)


def grid(extra=()):
    pts = np.concatenate([np.linspace(-3, 3, 6001), [0.0, -1.0, 1.0, -0.0], np.asarray(extra, float)])
    return np.unique(pts).astype(np.float32)


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def np_ste(x, t):
    return (np.abs(x) <= t).astype(np.float64)


def np_approx(x):
    return np.where((x >= -1) & (x < 0), 2 + 2 * x, np.where((x >= 0) & (x < 1), 2 - 2 * x, 0.0))


def np_swish(x, b=5.0):
    return b * (2 - b * x * np.tanh(b * x / 2)) / (1 + np.cosh(b * x))


def backward(module, x_np, upstream=None):
    x = torch.tensor(x_np, requires_grad=True)
    y = module(x)
    g = torch.ones_like(y) if upstream is None else torch.tensor(upstream)
    y.backward(g)
    return y.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("t", T_VALUES)
def test_ste_forward_and_gradient(t):
    x = grid([t, -t, np.nextafter(t, 9), -np.nextafter(t, 9)])
    up = np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
    y, g = backward(q.SteSign(t=t), x, up)
    np.testing.assert_array_equal(y, np_sign(x))
    np.testing.assert_allclose(g, up * np_ste(x, t), rtol=0, atol=0)
    assert g[x == np.float32(t)][0] == up[x == np.float32(t)][0]  # |x| = t passes the gradient


def test_approx_sign_gradient_matches_eq3():
    x = grid()
    up = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    y, g = backward(q.ApproxSign(), x, up)
    np.testing.assert_array_equal(y, np_sign(x))
    np.testing.assert_allclose(g, up * np_approx(x), rtol=1e-6, atol=1e-6)
    _, g1 = backward(q.ApproxSign(), np.array([-1.0, 0.0, 1.0, -0.5, 0.5], np.float32))
    np.testing.assert_array_equal(g1, [0.0, 2.0, 0.0, 1.0, 1.0])


def test_approx_sign_is_derivative_of_F():
    """ApproxSign's g is the derivative of F (reference section 1): compare with finite differences."""
    def F(x):
        return np.where(x < -1, -1, np.where(x < 0, 2 * x + x**2, np.where(x < 1, 2 * x - x**2, 1)))
    x = np.linspace(-2, 2, 4001)[1:-1].astype(np.float64)
    x = x[np.min(np.abs(x[:, None] - np.array([-1, 0, 1])), axis=1) > 1e-3]
    h = 1e-6
    np.testing.assert_allclose((F(x + h) - F(x - h)) / (2 * h), np_approx(x), atol=1e-5)


def test_approx_sign_with_gradient_cancelling():
    x = grid()
    _, g = backward(q.ApproxSign(t=0.5), x)
    np.testing.assert_allclose(g, np_approx(x) * (np.abs(x) <= 0.5), atol=1e-6)


def test_swish_sign_gradient():
    x = grid()
    y, g = backward(q.SwishSign(beta=5.0), x)
    np.testing.assert_array_equal(y, np_sign(x))
    np.testing.assert_allclose(g, np_swish(x.astype(np.float64)), rtol=1e-5, atol=1e-6)
    assert g[x == 0][0] == pytest.approx(5.0)  # b * 2 / (1 + 1) = b at 0


@pytest.mark.parametrize("cls", [q.SteSign, q.ApproxSign, q.SwishSign])
def test_sign_outputs_exactly_pm1_and_zero_maps_to_plus_one(cls):
    x = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 5.0, -5.0])
    y = cls()(x)
    assert y.tolist() == [1.0, 1.0, 1.0, -1.0, 1.0, -1.0]
    assert torch.sign(torch.tensor(0.0)) == 0  # why onebit does not use torch.sign


def test_real_activations():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0], requires_grad=True)
    assert q.ReLU()(x).tolist() == [0, 0, 0, 0, 0.5, 1.0, 3.0]
    assert q.Clip()(x).tolist() == [-1, -1, -0.5, 0, 0.5, 1, 1]
    y = q.LeakyClip(0.1)(x)
    np.testing.assert_allclose(y.detach().numpy(), [-1.2, -1, -0.5, 0, 0.5, 1, 1.2], atol=1e-6)
    z = torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0], requires_grad=True)
    q.LeakyClip(0.1)(z).sum().backward()
    np.testing.assert_allclose(z.grad.numpy(), [0.1, 1, 1, 1, 0.1], atol=1e-6)


def weight_grid():
    w = np.linspace(-1.5, 1.5, 4 * 3 * 3 * 3, dtype=np.float32)
    w[::7] = 1.0
    w[3::11] = -1.0
    w[5] = 0.0
    rng = np.random.default_rng(2)
    return rng.permutation(w).reshape(4, 3, 3, 3)


def test_plain_weight_eq4():
    w = weight_grid()
    up = np.random.default_rng(3).normal(size=w.shape).astype(np.float32)
    y, g = backward(q.PlainSign(), w, up)
    np.testing.assert_array_equal(y, np_sign(w))
    np.testing.assert_array_equal(g, up * (np.abs(w) <= 1))


def test_magnitude_aware_eq6_eq7():
    w = weight_grid()
    up = np.random.default_rng(4).normal(size=w.shape).astype(np.float32)
    y, g = backward(q.MagnitudeAware(), w, up)
    scale = np.abs(w).reshape(4, -1).mean(1).reshape(4, 1, 1, 1)  # ||W||_1 / n per output filter
    np.testing.assert_allclose(y, scale * np_sign(w), rtol=1e-6)
    np.testing.assert_allclose(g, up * scale * (np.abs(w) < 1), rtol=1e-6, atol=1e-7)
    assert np.all(g[np.abs(w) == 1] == 0)  # strict inequality of Eq. 7
    # after BN retraining the forward is sign(W) (the scale is absorbed by BN)
    m = q.MagnitudeAware()
    m.fixed = True
    np.testing.assert_array_equal(m(torch.tensor(w)).numpy(), np_sign(w))


def test_magnitude_aware_official_code_variant():
    w = weight_grid()
    up = np.random.default_rng(5).normal(size=w.shape).astype(np.float32)
    y, g = backward(q.MagnitudeAwareOfficial(), w, up)
    scale = np.abs(w).reshape(4, -1).mean(1).reshape(4, 1, 1, 1)
    np.testing.assert_allclose(y, scale * np_sign(w), rtol=1e-6)
    np.testing.assert_array_equal(g, up * (np.abs(w) < 1))  # plain gradient, no scale (torch.clamp: 0 at +-1)
    # equals the official HardBinaryConv idiom: detach(scale*sign(W)) - detach(clamp(W)) + clamp(W)
    wt = torch.tensor(w, requires_grad=True)
    s = wt.abs().mean(dim=(1, 2, 3), keepdim=True).detach()
    clipped = torch.clamp(wt, -1.0, 1.0)
    official = (s * torch.sign(wt)).detach() - clipped.detach() + clipped
    official.backward(torch.tensor(up))
    np.testing.assert_array_equal(g, wt.grad.numpy())


@pytest.mark.parametrize("group,name,cls,precision", [
    ("sign", "ste", q.SteSign, 1), ("sign", "approx", q.ApproxSign, 1), ("sign", "swish", q.SwishSign, 1),
    ("weight", "plain", q.PlainSign, 1), ("weight", "magnitude_aware", q.MagnitudeAware, 1),
    ("weight", "magnitude_aware_official", q.MagnitudeAwareOfficial, 1),
])
def test_yaml_instantiates_component(group, name, cls, precision):
    from pathlib import Path
    cfg = OmegaConf.load(Path(__file__).parents[1] / "conf" / group / f"{name}.yaml")
    module = instantiate(cfg)
    assert type(module) is cls and isinstance(module, torch.nn.Module) and module.precision == precision


def test_ste_threshold_is_a_config_field():
    module = instantiate({"_target_": "onebit.nn.quantizers.SteSign", "t": 1.3})
    assert module.t == 1.3


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_invalid_threshold_names_the_value(bad):
    with pytest.raises(ValueError, match=r"sign\.t="):
        q.SteSign(t=bad)


def test_new_sign_approximation_is_one_small_class():
    """The README's extension example: only `derivative` is needed."""
    class TanhSign(q.SignApproximation):
        def derivative(self, x):
            return 1 - torch.tanh(x) ** 2

    x = torch.linspace(-2, 2, 9, requires_grad=True)
    y = TanhSign()(x)
    y.sum().backward()
    assert set(y.tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(x.grad, 1 - torch.tanh(x.detach()) ** 2)
