"""Training recipes (conf/recipe/): Bi-Real's two-step scheme, and the protocols of Bi-Real Table 1
(conf/protocol/): real Hydra compositions, real runs of src/train.py on digits, real records."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_FULL, compose_cfg, run_train
from omegaconf import OmegaConf, open_dict

from onebit.nn.summary import precision, summarize
from onebit.records.identity import job_key, pretrain_key
from onebit.records.recipe import stages_for
from onebit.records.record import read_record
from onebit.training.build import make_data, make_model
from onebit.training.checkpoints import last_checkpoint, read_checkpoint, stage_weights

TINY = [*TINY_FULL, "pretrain.epochs=1"]  # not smoke runs: the two_step table leaves them out


def _chain(stages):
    return [(s.name, s.model, s.init) for s in stages]


def test_two_step_recipe_is_a_list_of_stages(tmp_path):
    cfg = compose_cfg(["recipe=two_step", "bn_retrain=true"], tmp_path)
    assert _chain(stages_for(cfg)) == [("pretrain", "twin", None), ("binary_activations", "binary_activations",
                                                                    "pretrain"),
                                       ("binary", "binary", "binary_activations"), ("bn_retrain", "binary", "binary")]
    step1 = stages_for(cfg)[1]
    assert dict(step1.optimizer) == {"weight_decay": 1e-5} and step1.epochs == cfg.epochs
    scratch = compose_cfg(["recipe=two_step", "pretrain=none", "recipe.step1_epochs=3"], tmp_path)
    assert _chain(stages_for(scratch)) == [("binary_activations", "binary_activations", None),
                                           ("binary", "binary", "binary_activations")]
    assert stages_for(scratch)[0].epochs == 3
    one = compose_cfg([], tmp_path)
    assert _chain(stages_for(one)) == [("pretrain", "twin", None), ("binary", "binary", "pretrain")]


def test_a_config_without_recipe_is_one_step(tmp_path):
    """Records written before recipes existed have no ``recipe`` key: their recipe is Bi-Real's one step."""
    cfg = compose_cfg([], tmp_path)
    with open_dict(cfg):
        del cfg["recipe"]
    assert _chain(stages_for(cfg)) == [("pretrain", "twin", None), ("binary", "binary", "pretrain")]


def test_recipe_does_not_change_the_pretrained_twin_but_changes_the_job(tmp_path):
    one, two = compose_cfg([], tmp_path), compose_cfg(["recipe=two_step"], tmp_path)
    assert pretrain_key(one) == pretrain_key(two)
    assert job_key(one) != job_key(two)


def test_bad_recipes_are_refused_in_one_line(tmp_path):
    cfg = compose_cfg(["recipe=two_step"], tmp_path)
    with open_dict(cfg):
        cfg.bn_retrain = True
        cfg.recipe.steps = [{"name": "a", "model": "binary_activations"}]
    with pytest.raises(ValueError, match=r"bn_retrain=true needs a recipe that ends with a binary model; "
                                         r"recipe=two_step ends with 'a' \(binary_activations\)"):
        stages_for(cfg)
    with open_dict(cfg):
        cfg.bn_retrain = False
        cfg.recipe.steps = [{"name": "a", "model": "binary", "lr": 1}]
    with pytest.raises(ValueError, match="step 0 has unknown key 'lr'; valid: name, model, epochs, optimizer"):
        stages_for(cfg)
    with open_dict(cfg):
        cfg.recipe.steps = [{"name": "a", "model": "binary", "optimizer": {"nesterov": True}}]
    with pytest.raises(ValueError, match="sets optimizer.nesterov, which optimizer=Adam does not have; valid: lr"):
        stages_for(cfg)
    with open_dict(cfg):
        cfg.recipe.steps = [{"name": "a", "model": "twin"}]
    with pytest.raises(ValueError, match="a step trains a binary model: binary_activations, binary"):
        stages_for(cfg)


def test_step_one_has_binary_activations_and_real_weights(tmp_path):
    """The efficiency summary comes from each layer's declared precision: step 1 has no BOPs (its convs multiply
    1-bit activations by real weights) and every conv weight is real."""
    cfg = compose_cfg(["recipe=two_step", "model.width=8"], tmp_path)
    data = make_data(cfg)
    kinds = {k: make_model(cfg, data, k) for k in ("twin", "binary_activations", "binary")}
    assert {k: precision(m) for k, m in kinds.items()} == {
        "twin": {"activations": 32, "weights": 32}, "binary_activations": {"activations": 1, "weights": 32},
        "binary": {"activations": 1, "weights": 1}}
    step1, binary = (summarize(kinds[k], tuple(data.input_size)) for k in ("binary_activations", "binary"))
    assert step1.bops == 0 and step1.binary_params == 0
    assert binary.bops > 0 and step1.flops == binary.flops + binary.bops
    assert step1.real_params == binary.real_params + binary.binary_params


def test_two_step_run_records_each_step(tmp_path):
    """A real run of `python src/train.py recipe=two_step`: the record has the three stages in order, each with
    its precision; step 2 starts from step 1's final weights (strict, audited transfer); step 1 decays every real
    weight by 1e-5 (ReActNet's step 1), step 2 uses the optimizer's own decays (0)."""
    r = run_train(["recipe=two_step", *TINY, f"output_root={tmp_path}", f"hydra.run.dir={tmp_path}/run"])
    assert r.returncode == 0, r.stderr[-2000:]
    rec = read_record(tmp_path / "run" / "record.json")
    assert rec.status == "finished" and list(rec.stages) == ["pretrain", "binary_activations", "binary"]
    bits = {n: (s.efficiency["activations"], s.efficiency["weights"]) for n, s in rec.stages.items()}
    assert bits == {"pretrain": (32, 32), "binary_activations": (1, 32), "binary": (1, 1)}
    assert rec.stages["binary_activations"].efficiency["bops"] == 0 < rec.stages["binary"].efficiency["bops"]
    assert rec.efficiency == rec.stages["binary"].efficiency
    assert [s.init for s in rec.stages.values()] == ["cache", "pretrain", "binary_activations"]
    step1 = stage_weights(rec, "binary_activations")
    transfer = rec.stages["binary"].transfer
    assert transfer["strict"] and transfer["tensors"] == len(step1) and not transfer["missing"]
    pre = stage_weights(rec, "pretrain")
    assert rec.stages["binary_activations"].transfer["sha256"] != transfer["sha256"]  # trained in between
    assert any(not torch.equal(pre[k], step1[k]) for k in pre if k.endswith("conv1.weight"))
    decays = {}
    for stage in ("binary_activations", "binary"):
        groups = read_checkpoint(last_checkpoint(rec.run_dir, stage))["optimizer_states"][0]["param_groups"]
        decays[stage] = {g["role"]: g["weight_decay"] for g in groups}
    assert decays["binary_activations"] == {"real": 1e-5, "bn": 0.0}   # no 1-bit weights in step 1
    assert decays["binary"] == {"binary": 0.0, "real": 0.0, "bn": 0.0}
    assert "A1/W32" in r.stdout and "A1/W1" in r.stdout and "A32/W32" in r.stdout


def test_recipe_is_refused_for_a_real_valued_model(tmp_path):
    r = run_train(["model=resnet18", "recipe=two_step", "epochs=1", "logger=none", f"output_root={tmp_path}"])
    assert r.returncode != 0
    assert "recipe=two_step does not apply to model=resnet18, a real-valued model" in r.stderr


# ----------------------------------------------------------------------------------------------------------
# Protocols of Bi-Real Table 1
# ----------------------------------------------------------------------------------------------------------


def test_table1_sweep_declares_the_papers_protocol(tmp_path):
    cfg = compose_cfg(["sweeps=bireal_table1"], tmp_path)
    assert cfg.protocol == "paper_sgd"
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.momentum == 0.9
    assert cfg.optimizer.weight_decay == 0 and cfg.optimizer.lr == 0.01
    assert cfg.scheduler._target_ == "onebit.nn.optim.step" and list(cfg.scheduler.milestones) == [0.5, 0.75]
    assert cfg.bn_retrain is True
    adam = compose_cfg(["sweeps=bireal_table1", "protocol=official_adam"], tmp_path)
    assert adam.protocol == "official_adam" and adam.optimizer._target_ == "torch.optim.Adam"
    assert adam.optimizer.lr == 0.001 and adam.scheduler._target_ == "onebit.nn.optim.linear"
    assert adam.label_smoothing == 0.1 and adam.bn_retrain is False
    assert job_key(cfg) != job_key(adam)
    # a user's own value still wins over the protocol's
    assert compose_cfg(["sweeps=bireal_table1", "optimizer.lr=0.05"], tmp_path).optimizer.lr == 0.05
    # without a protocol there is no key: the identity of runs made before protocols is unchanged
    assert "protocol" not in compose_cfg([], tmp_path)


def test_official_experiment_uses_the_official_protocol(tmp_path):
    cfg = compose_cfg(["experiment=bireal18_official_adam", "data=digits"], tmp_path)
    assert cfg.protocol == "official_adam" and cfg.pretrain.name == "none" and cfg.epochs == 256
    assert OmegaConf.select(cfg, "optimizer.lr") == 0.001 and cfg.label_smoothing == 0.1


def test_protocol_is_recorded(tmp_path):
    r = run_train(["protocol=paper_sgd", *TINY, f"output_root={tmp_path}", f"hydra.run.dir={tmp_path}/run"])
    assert r.returncode == 0, r.stderr[-2000:]
    rec = read_record(tmp_path / "run" / "record.json")
    assert rec.options["protocol"] == "paper_sgd" and rec.config["protocol"] == "paper_sgd"
    assert list(rec.stages) == ["pretrain", "binary", "bn_retrain"]


def test_two_step_sweep_and_table(tmp_path):
    """A real multirun of both recipes (2 seeds), then `tables.py two_step`: one row per model with both cells,
    paired differences over the 2 seeds; Table 1 keeps only the paper's one-step runs."""
    from conftest import run_cli

    from onebit.cli.tables import main as tables

    r = run_train(["-m", "sweeps=bireal_two_step", "model=bireal18", "seed=0,1", *TINY, f"output_root={tmp_path}"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "onebit sweep: 4 finished, 0 failed" in r.stdout
    t = run_cli(tables, ["two_step", "--root", tmp_path, "--format", "csv"])
    assert t.returncode == 0, t.stderr
    import io

    import pandas as pd

    stream = pd.read_csv(io.StringIO(t.stdout))   # one csv: a `table` column names each row's table
    cells, paired = (stream[stream.table == name].dropna(axis=1, how="all") for name in stream.table.unique())
    assert list(cells.columns) == ["table", "model", "one-step", "two-step"]
    assert cells.model.tolist() == ["bireal18"] and all("(n=2)" in cells[c].iloc[0] for c in ("one-step", "two-step"))
    assert list(paired.columns) == ["table", "model", "two-step - one-step (points)", "95% CI", "bootstrap 95% CI",
                                    "pairs", "P(better > worse)", "p (Holm)", "verdict"]
    assert paired.verdict.iloc[0] in ("supported", "contradicted", "inconclusive")
    assert paired.pairs.tolist() == [2]
    assert "each step its own epochs" in t.stderr
    t1 = run_cli(tables, ["table1", "--root", tmp_path, "--format", "csv"])
    assert t1.returncode == 0 and "(n=2)" in t1.stdout
    assert "recipe" not in t1.stderr  # not split by recipe: the two-step runs are not Table 1 cells
