"""Issue 4/5's exactness guarantees: weights binarized once in inference (same outputs as recomputing them), and
the non-finite-loss check that needs no host synchronisation per step (same stop, at a bounded delay)."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from onebit.nn import quantizers as q
from onebit.nn.layers import BinaryConv2d
from onebit.nn.models import BiRealResNet


def _bireal(weight=None):
    torch.manual_seed(0)
    return BiRealResNet(q.ApproxSign(), weight or q.MagnitudeAware(), depth=18, stem="small", width=16,
                        in_channels=3, num_classes=10)


def _recomputed(model, x):
    """The output with every cached binarized weight thrown away first (what a forward without the cache gives)."""
    for m in model.modules():
        if isinstance(m, BinaryConv2d):
            m._inference_weight = None
    with torch.inference_mode():
        return model(x)


def _calls(model) -> list[int]:
    """Counts the weight component's calls per binary conv."""
    counts = []
    for m in model.modules():
        if isinstance(m, BinaryConv2d) and m.is_binary:
            counts.append(0)
            i = len(counts) - 1
            m.weight_quantizer.register_forward_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
    return counts


@pytest.mark.parametrize("weight", [q.MagnitudeAware, q.PlainSign, q.XnorScaling, q.MagnitudeAwareOfficial])
def test_inference_binarizes_weights_once_with_identical_outputs(weight):
    model, x = _bireal(weight()).eval(), torch.randn(4, 3, 32, 32)
    calls = _calls(model)
    with torch.inference_mode():
        first = model(x)
        second = model(x)
    with torch.no_grad():
        third = model(x)
    assert len(calls) == 16 and set(calls) == {1}  # once per conv for three forwards
    assert torch.equal(first, second) and torch.equal(first, third)
    assert torch.equal(first, _recomputed(model, x))


def test_cached_weights_follow_every_change_of_the_latent_weights_or_the_component():
    model, x = _bireal().eval(), torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        before = model(x)
    # load_state_dict: new values, same tensors
    state = {k: v * 1.5 if k.endswith("conv.weight") or ".conv" in k and k.endswith("weight") else v
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    with torch.inference_mode():
        loaded = model(x)
    assert not torch.equal(loaded, before) and torch.equal(loaded, _recomputed(model, x))
    # an optimizer step in training mode, then eval again
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(x).sum().backward()
    opt.step()
    model.eval()
    with torch.inference_mode():
        stepped = model(x)
    assert not torch.equal(stepped, loaded) and torch.equal(stepped, _recomputed(model, x))
    # an in-place write through the parameter in eval mode (version counter)
    conv = next(m for m in model.modules() if isinstance(m, BinaryConv2d) and m.is_binary)
    with torch.no_grad():
        conv.weight.mul_(-1)
    with torch.inference_mode():
        flipped = model(x)
    assert not torch.equal(flipped, stepped) and torch.equal(flipped, _recomputed(model, x))
    # the component's state: BN retraining fixes the weights to +-1 without the scale
    for m in model.modules():
        if hasattr(m, "fixed"):
            m.fixed = True
    with torch.inference_mode():
        fixed = model(x)
    assert not torch.equal(fixed, flipped) and torch.equal(fixed, _recomputed(model, x))
    # another dtype: a new tensor
    model.double()
    with torch.inference_mode():
        as_double = model(x.double())
    assert as_double.dtype == torch.float64 and torch.allclose(as_double.float(), fixed, atol=1e-4)
    # copies do not carry the cache, and compute the same
    clone = copy.deepcopy(model)
    assert all(m._inference_weight is None for m in clone.modules() if isinstance(m, BinaryConv2d))
    with torch.inference_mode():
        assert torch.equal(clone(x.double()), as_double)


def test_training_and_gradients_never_use_the_cache():
    model, x = _bireal().eval(), torch.randn(2, 3, 32, 32, requires_grad=True)
    with torch.inference_mode():
        model(x)
    calls = _calls(model)
    out = model(x)  # eval mode with gradients (e.g. saliency): recomputed, differentiable w.r.t. the weights
    out.sum().backward()
    conv = next(m for m in model.modules() if isinstance(m, BinaryConv2d) and m.is_binary)
    assert set(calls) == {1} and conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert conv._inference_weight is None


def _module_and_loader(tmp_path, nan_batch: int, batches: int = 8):
    """A real Classifier on digits-shaped data whose batch ``nan_batch`` holds a NaN pixel (no shuffling)."""
    from conftest import compose_cfg
    from omegaconf import OmegaConf

    from onebit.records.recipe import stages_for
    from onebit.training.module import Classifier

    cfg = compose_cfg(["pretrain=none", "model.width=8"], tmp_path)
    stage = stages_for(cfg)[0]
    data = type("Shape", (), {"in_channels": 1, "num_classes": 10, "default_width": 8})()
    module = Classifier.for_stage(OmegaConf.to_container(cfg, resolve=True), stage, data)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batches * 4, 1, 8, 8, generator=g), torch.randint(0, 10, (batches * 4,), generator=g)
    x[nan_batch * 4] = float("nan")
    return module, DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False)


def _fit(module, loader):
    from onebit.training.module import NonFiniteLossError

    seen = []

    class Steps(pl.Callback):  # which training steps ran
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch_idx)

    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=[Steps()])
    with pytest.raises(NonFiniteLossError) as e:
        trainer.fit(module, train_dataloaders=loader)
    return str(e.value), seen


def test_nonfinite_loss_on_cpu_stops_at_its_batch(tmp_path):
    msg, seen = _fit(*_module_and_loader(tmp_path, nan_batch=2))
    assert "batch 2" in msg and "nan" in msg and seen == [0, 1, 2]


@pytest.mark.parametrize("every, stops_after", [(4, 3), (3, 2), (100, 7)])
def test_deferred_nonfinite_check_names_the_first_bad_batch_within_its_bound(tmp_path, every, stops_after):
    """The accelerator's path (no sync per step), run on the CPU: it stops at the next check (every ``every`` steps,
    and at the epoch's last batch, 7), and still names batch 2, where the loss first became NaN."""
    module, loader = _module_and_loader(tmp_path, nan_batch=2)
    module.deferred_nonfinite_check, module.nonfinite_check_every = True, every
    msg, seen = _fit(module, loader)
    assert "batch 2" in msg and "nan" in msg and seen[-1] == stops_after
