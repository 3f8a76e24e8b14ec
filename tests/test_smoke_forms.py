"""Smoke detection against Lightning's own reading of every form of every Trainer argument that can cut a run short.

For each documented form, a real ``pytorch_lightning.Trainer(**{key: value})`` is built (no fit) and what Lightning
parsed is turned into what its loops would run, with Lightning's own helpers: the number of batches of each loop for
a data loader of n batches (``_parse_num_batches``), whether ``max_steps`` stops the fit loop
(``_is_max_limit_reached``), whether a ``Timer`` callback was added (``max_time``), whether overfitting is on. A run
is cut short when some loop runs fewer batches than its data loader for some n, or training can stop on a step
count or the clock, or it overfits; onebit's ``smoke_reasons`` must say smoke exactly then.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import compose_cfg
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks.timer import Timer
from pytorch_lightning.loops.utilities import _is_max_limit_reached
from pytorch_lightning.trainer.connectors.data_connector import _parse_num_batches
from pytorch_lightning.trainer.states import RunningStage

from onebit.core.errors import ConfigError
from onebit.records.identity import SMOKE_TRAINER_KEYS, cuts_short, job_key, smoke_reasons
from onebit.training.checks import check_training

LOOPS = {"train": RunningStage.TRAINING, "val": RunningStage.VALIDATING, "test": RunningStage.TESTING,
         "predict": RunningStage.PREDICTING}
SIZES = (10, 10**12)  # data loaders of n batches: a small data set, and one larger than any form below

# Lightning's documented forms (Trainer docstring, trainer/setup.py), each of which Lightning accepts
LIMIT_FORMS = (None, 1.0, 1, 0, 0.0, 0.5, 0.99, 2, 2.0, 3.0, 10, 1000, 1_000_000, True, False)
FORMS: dict[str, tuple] = {
    **{f"limit_{loop}_batches": LIMIT_FORMS for loop in LOOPS},
    "fast_dev_run": (False, True, 0, 1, 3, None),
    "max_steps": (-1, -1.0, 0, 1, 100, 10**9),
    "max_time": (None, "00:00:00:01", "01:00:00:00", "30:00:00:00", {"hours": 1}, {}, timedelta(days=1)),
    "overfit_batches": (0, 0.0, False, 1, 3, 0.5, 1.0, 2.0, True),
    # not smoke: they cannot shorten what a stage trains or evaluates (onebit.records.identity: SMOKE_TRAINER_KEYS)
    "num_sanity_val_steps": (0, 2, -1),
    "val_check_interval": (0.25, 1.0, 3, "00:00:01:00", {"minutes": 1}),
    "check_val_every_n_epoch": (1, 3),
    "min_epochs": (1, 50),
    "min_steps": (5, 10**6),
    "max_epochs": (1, 3),
}


def _trainer(tmp_path, **kwargs) -> Trainer:
    return Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=str(tmp_path), **kwargs)


def lightning_cuts_short(trainer: Trainer) -> dict[str, bool]:
    """What Lightning's loops would do with this Trainer, in its own terms."""
    batches = {loop: [_parse_num_batches(stage, n, getattr(trainer, f"limit_{loop}_batches")) for n in SIZES]
               for loop, stage in LOOPS.items()}
    return {
        **{f"{loop}: fewer batches": any(b < n for b, n in zip(bs, SIZES)) for loop, bs in batches.items()},
        "max_steps stops it": _is_max_limit_reached(10**12, trainer.max_steps),
        "a Timer stops it": any(isinstance(cb, Timer) and cb._duration is not None for cb in trainer.callbacks),
        "overfits": trainer.overfit_batches > 0,
    }


@pytest.mark.parametrize("key", list(FORMS))
def test_smoke_iff_lightning_runs_less(tmp_path, key):
    for value in FORMS[key]:
        cut = lightning_cuts_short(_trainer(tmp_path, **{key: value}))
        reasons = smoke_reasons({"trainer": {key: value}})
        assert bool(reasons) == any(cut.values()), (key, value, reasons, cut)
        assert reasons == ([f"trainer.{key}={value!r}"] if any(cut.values()) else []), (key, value)


def test_the_forms_that_matter(tmp_path):
    """Lightning's rule, spelled out: the float 1.0 is all batches, the int 1 one batch, 0.5 half (rounded down), a
    whole float above 1 a number of batches, a float that is neither is refused."""
    forms = (1.0, 1, 0.5, 2.0, 3.0)
    parsed = [_trainer(tmp_path, limit_train_batches=v).limit_train_batches for v in forms]
    assert [(p, type(p)) for p in parsed] == [(1.0, float), (1, int), (0.5, float), (2, int), (3, int)]
    assert [_parse_num_batches(RunningStage.TRAINING, 10, p) for p in parsed] == [10, 1, 5, 2, 3]
    assert [cuts_short("limit_train_batches", v) for v in forms] == [False, True, True, True, True]
    # a 2-batch run given as a float is a smoke run, and never the full run's job (nor its cached twin)
    full, two = {"trainer": {"limit_train_batches": 1.0}}, {"trainer": {"limit_train_batches": 2.0}}
    assert smoke_reasons(two) == ["trainer.limit_train_batches=2.0"] and smoke_reasons(full) == []
    assert job_key(two) != job_key(full)
    assert smoke_reasons({"trainer": {"limit_val_batches": 0}}) == ["trainer.limit_val_batches=0"]  # no validation
    assert smoke_reasons({"trainer": {"limit_test_batches": 3.0, "max_steps": -1, "max_time": None}}) == [
        "trainer.limit_test_batches=3.0"]


def test_every_smoke_key_is_a_trainer_argument_with_its_forms_walked():
    import inspect

    params = inspect.signature(Trainer.__init__).parameters
    assert set(SMOKE_TRAINER_KEYS) <= set(params) and set(SMOKE_TRAINER_KEYS) <= set(FORMS)
    for key, doc in SMOKE_TRAINER_KEYS.items():  # the default is off, and each entry says which forms are
        assert not cuts_short(key, params[key].default), key
        assert len(doc) > 20, key
    with pytest.raises(KeyError, match="val_check_interval is not a Trainer argument that can cut a run short"):
        cuts_short("val_check_interval", 0.5)


def test_onebit_sets_max_epochs_per_stage_over_the_trainer_config():
    """trainer.max_epochs is no smoke: onebit.training.loop passes each stage's epochs, which win."""
    cfg = OmegaConf.create({"_target_": "pytorch_lightning.Trainer", "accelerator": "cpu", "devices": 1,
                            "max_epochs": 1, "logger": False, "enable_checkpointing": False})
    assert instantiate(cfg, max_epochs=4).max_epochs == 4
    assert smoke_reasons({"trainer": {"max_epochs": 1}}) == []


@pytest.mark.parametrize("override, named", [
    ("+trainer.limit_train_batches=1.5", "1.5"),     # a float that is neither a fraction nor whole: Lightning refuses
    ("+trainer.limit_val_batches=-1", "-1"),
    ("+trainer.limit_test_batches='2.0'", "str"),     # a string from a YAML file: not a number
    ("+trainer.max_steps=null", "NoneType"),
    ("+trainer.max_time=1h", "1h"),
    ("+trainer.fast_dev_run=-1", "-1"),
])
def test_forms_lightning_refuses_are_refused_before_a_run_and_never_full(tmp_path, override, named):
    cfg = compose_cfg(["logger=none", override], tmp_path)
    key = override.split("=")[0].split(".")[-1]
    value = OmegaConf.to_container(cfg.trainer)[key]
    assert cuts_short(key, value)  # not provably off: counted as cutting short
    with pytest.raises(ConfigError) as e:
        check_training(cfg)
    line = str(e.value)
    assert "\n" not in line and "refused by pytorch_lightning.Trainer" in line and named in line, line
