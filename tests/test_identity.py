"""One job identity, derived from the whole config: every Trainer argument is in it or on a named list with a
reason; smoke runs, studies and configs never share an identity; twins and cells are derived the same way."""

from __future__ import annotations

import copy
import inspect

import pytest
import pytorch_lightning as pl
from omegaconf import OmegaConf

from onebit.records import identity as I


@pytest.fixture
def config(compose_fn):
    return OmegaConf.to_container(compose_fn([]), resolve=True)


def _with(config: dict, dotted: str, value) -> dict:
    c = copy.deepcopy(config)
    *parents, last = dotted.split(".")
    node = c
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return c


def test_every_trainer_argument_is_in_the_identity_or_named_with_a_reason(config):
    arguments = [p for p in inspect.signature(pl.Trainer.__init__).parameters if p != "self"]
    assert len(arguments) > 30
    key = I.job_key(config)
    for arg in arguments:
        changed = I.job_key(_with(config, f"trainer.{arg}", "<changed>"))
        if arg in I.TRAINER_NOT_IN_IDENTITY:
            assert changed == key, arg
            assert len(I.TRAINER_NOT_IN_IDENTITY[arg]) > 10  # a reason, not a placeholder
        else:
            assert changed != key, f"trainer.{arg} must change the job identity"
    assert set(I.TRAINER_NOT_IN_IDENTITY) <= set(arguments)  # the list names real arguments only


def test_only_the_named_keys_leave_the_identity(config):
    key = I.job_key(config)
    for dotted, reason in I.NOT_IN_IDENTITY.items():
        assert I.job_key(_with(config, dotted, "<changed>")) == key, dotted
        assert len(reason) > 10
    for leaf in I.flatten(I.job_identity(config)):  # every other leaf changes the key
        assert I.job_key(_with(config, leaf, "<changed>")) != key, leaf


def test_smoke_runs_and_studies_are_separate_jobs(config):
    smoke = _with(config, "trainer.limit_train_batches", 2)
    assert I.job_key(smoke) != I.job_key(config) and I.pretrain_key(smoke) != I.pretrain_key(config)
    assert I.smoke_reasons(smoke) == ["trainer.limit_train_batches=2"] and I.smoke_reasons(config) == []
    assert I.smoke_reasons(_with(config, "trainer.limit_val_batches", 1)) == ["trainer.limit_val_batches=1"]
    assert I.smoke_reasons(_with(config, "trainer.limit_val_batches", 1.0)) == []  # 1.0 = all batches
    assert I.smoke_reasons(_with(config, "trainer.fast_dev_run", True)) == ["trainer.fast_dev_run=True"]
    other = _with(config, "study", "probe")
    assert I.job_key(other) != I.job_key(config)
    assert I.cell_key(other) == I.cell_key(config) and I.pretrain_key(other) == I.pretrain_key(config)


def test_twin_identity_drops_only_later_stage_keys(config):
    key = I.pretrain_key(config)
    for dotted in ("sign.t", "weight._target_", "epochs", "bn_retrain", "optimizer.latent_weight_clip"):
        assert I.pretrain_key(_with(config, dotted, "<changed>")) == key, dotted
    for dotted in ("pretrain.epochs", "model.shortcut", "seed", "optimizer.lr", "data.batch_size",
                   "trainer.precision", "trainer.limit_train_batches"):
        assert I.pretrain_key(_with(config, dotted, "<changed>")) != key, dotted


def test_cells_differ_in_everything_but_the_seed(config):
    cell = I.cell_key(config)
    assert I.cell_key(_with(_with(config, "seed", 7), "data.seed", 7)) == cell
    for dotted in ("epochs", "optimizer.lr", "trainer.limit_train_batches", "model.width", "sign._target_"):
        assert I.cell_key(_with(config, dotted, "<changed>")) != cell, dotted
    assert "seed" not in I.cell_items(config) and "model.depth" in I.cell_items(config)


def test_identity_from_the_shell_config_equals_the_records(tmp_path, compose_fn):
    """The key is the same whether computed from the DictConfig or from the resolved dict a record stores."""
    cfg = compose_fn(["sign=ste"])
    assert I.job_key(cfg) == I.job_key(OmegaConf.to_container(cfg, resolve=True))


def test_a_key_added_later_leaves_the_identity_only_at_its_default(config):
    """``DEFAULT_NOT_IN_IDENTITY``: a config with ``sign.learnable_threshold=false`` (the default) has the job, pretrain
    and cell keys of the same config without the key (as every earlier record stores it); true is another job and
    cell, the same twin (only the binary stages read ``sign``); a value of another type (0) is in the identity."""
    assert config["sign"]["learnable_threshold"] is False
    earlier = copy.deepcopy(config)
    del earlier["sign"]["learnable_threshold"]
    for key in (I.job_key, I.pretrain_key, I.cell_key):
        assert key(config) == key(earlier), key.__name__
    # labels say what ran: the default is shown (not an absent key), the same for a record without the key
    assert I.cell_items(config)["sign.learnable_threshold"] is False and I.cell_items(earlier) == I.cell_items(config)
    assert I.cell_items(config)["distill.name"] == "none" and "callbacks" not in I.cell_items(config)
    on = _with(config, "sign.learnable_threshold", True)
    assert I.job_key(on) != I.job_key(config) and I.cell_key(on) != I.cell_key(config)
    assert I.pretrain_key(on) == I.pretrain_key(config) and I.cell_items(on)["sign.learnable_threshold"] is True
    assert I.job_key(_with(config, "sign.learnable_threshold", 0)) != I.job_key(config)
    for dotted, (default, reason) in I.DEFAULT_NOT_IN_IDENTITY.items():
        assert len(reason) > 10, dotted
