"""Your own callbacks (the ``callbacks`` group, onebit.tracking.callbacks): the options compose, a user's callback
runs beside onebit's (an early stop stops, a user's ModelCheckpoint writes beside onebit's last.ckpt / best.ckpt),
a user's progress bar takes the bar's place, what would break onebit is refused in one line, and the job identity
keeps exactly the callbacks that can change a result."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_cfg, run_train
from omegaconf import OmegaConf

from onebit.core.errors import ConfigError
from onebit.records import identity as I
from onebit.training import jobs

RUN = ["model.width=4", "logger=none", "threads=1", "pretrain=none"]


def test_options_compose_alone_and_together(tmp_path):
    assert OmegaConf.to_container(compose_cfg([], tmp_path).callbacks) == {}
    both = compose_cfg(["callbacks=[early_stopping,rich_progress]"], tmp_path).callbacks
    assert both.early_stopping._target_ == "pytorch_lightning.callbacks.EarlyStopping"
    assert both.rich_progress._target_ == "pytorch_lightning.callbacks.RichProgressBar"
    mine = compose_cfg(["+callbacks.mine._target_=pytorch_lightning.callbacks.Timer"], tmp_path).callbacks
    assert list(mine) == ["mine"]


def test_identity_keeps_the_callbacks_that_can_change_a_result(tmp_path):
    key = lambda *o: I.job_key(compose_cfg(list(o), tmp_path))  # noqa: E731
    plain = key()
    without = OmegaConf.to_container(compose_cfg([], tmp_path), resolve=True)
    del without["callbacks"]
    assert I.job_key(without) == plain  # runs recorded before the group keep their key
    assert key("callbacks=rich_progress") == plain
    assert key("+callbacks.ck._target_=pytorch_lightning.callbacks.ModelCheckpoint", "+callbacks.ck.dirpath=x") == plain
    assert key("+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor") == plain
    assert key("callbacks=early_stopping") != plain
    assert key("callbacks=early_stopping") != key("callbacks=early_stopping", "callbacks.early_stopping.patience=9")
    assert key("+callbacks.t._target_=pytorch_lightning.callbacks.Timer") != plain  # a Timer can stop training
    assert key("+callbacks.p._target_=test_diagnostics.Probe") != plain  # a class of your own: in the identity
    assert I.neutral_callback("pytorch_lightning.callbacks.progress.rich_progress.RichProgressBar")
    assert not I.neutral_callback("mypackage.callbacks.RichProgressBar")


@pytest.mark.slow
def test_early_stop_and_a_user_checkpoint_run_beside_onebits(tmp_path):
    mine = tmp_path / "mine"
    cfg = compose_cfg([*RUN, "epochs=4", "callbacks=early_stopping", "callbacks.early_stopping.patience=1",
                       "callbacks.early_stopping.min_delta=1.0",  # no epoch after the first counts as better
                       "+callbacks.ck._target_=pytorch_lightning.callbacks.ModelCheckpoint",
                       f"+callbacks.ck.dirpath={mine}", "+callbacks.ck.filename=mine"], tmp_path)
    rec, _ = jobs.run(cfg, tmp_path / "run", set())
    binary = rec.stages["binary"]
    assert binary.status == "finished" and len(binary.history) == 2  # stopped after 2 of 4 epochs
    assert (mine / "mine.ckpt").is_file()
    ckpts = {p.name for p in (Path(rec.run_dir) / "checkpoints" / "binary").glob("*.ckpt")}
    assert {"last.ckpt", "best.ckpt"} <= ckpts  # onebit's own are still written


@pytest.mark.slow
def test_a_users_progress_bar_takes_the_bars_place(tmp_path):
    r = run_train([*RUN, "epochs=1", "callbacks=rich_progress", f"output_root={tmp_path}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "binary epoch 1/1" not in r.stdout + r.stderr  # the per-epoch lines went to the log file only
    (log,) = list(tmp_path.rglob("train.log"))[:1]
    assert "binary epoch 1/1" in log.read_text()


@pytest.mark.parametrize("overrides,line", [
    (["callbacks=rich_progress", "+trainer.enable_progress_bar=false"],
     "callbacks.rich_progress is a progress bar but trainer.enable_progress_bar=false"),
    (["callbacks=rich_progress", "+callbacks.bar._target_=pytorch_lightning.callbacks.TQDMProgressBar"],
     "callbacks.rich_progress, callbacks.bar are all progress bars"),
    (["+callbacks.x._target_=collections.OrderedDict"],
     "callbacks.x: collections.OrderedDict is not a Lightning Callback"),
    (["callbacks=early_stopping", "callbacks.early_stopping.mode=sideways"],
     "callbacks.early_stopping is refused by pytorch_lightning.callbacks.EarlyStopping: "),
    (["+callbacks.x=3"], "callbacks.x=3 is invalid: a callback is a _target_"),
])
def test_what_would_break_onebit_is_refused_in_one_line(tmp_path, overrides, line):
    cfg = compose_cfg([*RUN, "epochs=1", *overrides], tmp_path)
    with pytest.raises(ConfigError) as e:
        jobs.run(cfg, tmp_path / "run", set())
    assert line in str(e.value) and "\n" not in str(e.value)
    assert not list(tmp_path.rglob("record.json"))


@pytest.mark.slow
def test_help_lists_the_group():
    r = run_train(["--help"])
    assert r.returncode == 0
    line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("callbacks"))
    assert "early_stopping" in line or "early_stopping" in r.stdout
