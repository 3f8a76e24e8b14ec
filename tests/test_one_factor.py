"""One factor at a time: the ``one_factor`` Hydra sweeper (src/hydra_plugins/onebit_sweeper) as a unit (its job
lists, the command line crossed with the design, its one-line refusals), a real ``sweeps=bireal_conclusions``
multirun on tiny digits (5 jobs, the base = Table 1's clip/proposed/proposed Bi-Real-18 cell), the tables of its
records (Table 1's layout, the four paired conclusions with the paper's differences at the base), and the
protocol in Table 1's titles."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, TINY_FULL, compose_cfg, run_cli, run_train
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from test_results import make_record

# the module, not its classes: Hydra's plugin scan re-executes plugin modules (and hydra's own BasicSweeper) in
# place, so a class bound at import time can be a stale copy whose super() no longer matches
from hydra_plugins.onebit_sweeper import one_factor_sweeper as ofs
from onebit.cli.tables import main as tables_main
from onebit.records.identity import cell_key
from onebit.records.record import read_record
from onebit.results import bireal
from onebit.results.load import load_records
from onebit.results.select import select

SWEEP = OmegaConf.load(ROOT / "sweeps" / "bireal_conclusions.yaml").hydra.sweeper
BASE = ["model=bireal18", "pretrain=clip", "weight=magnitude_aware", "sign=approx", "shortcut=true"]
# (pretrain, weight, sign, structure, depth): the base, then shortcut, sign, weight, pretrain changed
DESIGN = [("clip", "magnitude_aware", "approx", "bireal", 18), ("clip", "magnitude_aware", "approx", "plain", 18),
          ("clip", "magnitude_aware", "ste", "bireal", 18), ("clip", "plain", "approx", "bireal", 18),
          ("relu", "magnitude_aware", "approx", "bireal", 18)]
# tiny and not smoke runs (no Trainer limits: tables leave smoke runs out)
TINY = TINY_FULL


def sweeper(**kw) -> "ofs.OneFactorSweeper":
    conf = {"base": dict(SWEEP.base), "factors": {k: list(v) for k, v in SWEEP.factors.items()},
            "params": dict(SWEEP.params), **kw}
    return ofs.OneFactorSweeper(max_batch_size=conf.pop("max_batch_size", None), **conf)


def jobs(s: "ofs.OneFactorSweeper", argv=()) -> list[list[str]]:
    """The override lists the sweeper launches for ``argv`` (params first, then argv, as Hydra hands them)."""
    params = [f"{k}={v}" for k, v in s.params.items()]
    return s.job_overrides(OverridesParser.create().parse_overrides([*params, *argv]))


def with_(overrides: list[str], **changed) -> list[str]:
    return [f"{k}={changed.pop(k)}" if (k := o.split("=")[0]) in changed else o for o in overrides]


# ----------------------------------------------------------------------------------------------------------
# The sweeper's design
# ----------------------------------------------------------------------------------------------------------


def test_design_base_then_each_factor_for_each_seed():
    got = jobs(sweeper())
    one_seed = [BASE, with_(BASE, shortcut="false"), with_(BASE, sign="ste"), with_(BASE, weight="plain"),
                with_(BASE, pretrain="relu")]
    assert got == [[*o, f"seed={s}"] for s in (0, 1, 2) for o in one_seed]
    assert len(got) == 15
    node = ConfigStore.instance().load("hydra/sweeper/one_factor.yaml").node
    assert node._target_ == "hydra_plugins.onebit_sweeper.one_factor_sweeper.OneFactorSweeper"
    assert set(node) == {"_target_", "max_batch_size", "base", "factors", "params", *ofs.adaptive.FIELDS}
    assert node.seeds is None   # seeds chosen by the data (tests/test_adaptive_seeds.py) only when asked for


def test_command_line_sweeps_cross_the_design_and_base_keys_replace_the_base():
    # a grid key on the command line replaces params' (seed), another one is crossed (data): 5 x 2 x 2
    got = jobs(sweeper(), ["seed=0,1", "data=digits,fashion_mnist"])
    assert len(got) == 20 and got[0] == [*BASE, "seed=0", "data=digits"]
    assert got[5] == [*BASE, "seed=0", "data=fashion_mnist"] and got[19][-2:] == ["seed=1", "data=fashion_mnist"]
    # a plain value of a base key replaces it in every design point
    got = jobs(sweeper(), ["model=bireal34", "epochs=2"])
    assert len(got) == 15 and all(j[0] == "model=bireal34" and j[-1] == "epochs=2" for j in got)
    # a sweep of a base key runs the design around each value
    got = jobs(sweeper(params={}), ["model=bireal18,bireal34"])
    assert [j[0] for j in got] == ["model=bireal18"] * 5 + ["model=bireal34"] * 5
    # a factor set on the command line is the new base value; its point equal to it would repeat the base: dropped
    got = jobs(sweeper(params={}), ["sign=ste"])
    assert got == [with_(BASE, sign="ste"), with_(BASE, sign="ste", shortcut="false"),
                   with_(BASE, sign="ste", weight="plain"), with_(BASE, sign="ste", pretrain="relu")]
    got = jobs(sweeper(params={}), ["pretrain=leaky_clip"])
    assert got[0] == with_(BASE, pretrain="leaky_clip") and got[-1] == BASE[:1] + ["pretrain=relu"] + BASE[2:]


def test_batches_and_several_alternatives():
    s = sweeper(max_batch_size=5, factors={"sign": ["ste", "swish"], "shortcut": ["false"]})
    batches = s.split_arguments(OverridesParser.create().parse_overrides(["seed=0,1"]), s.max_batch_size)
    assert [len(b) for b in batches] == [5, 3]
    flat = [j for b in batches for j in b]
    assert [j[3] for j in flat[:4]] == ["sign=approx", "sign=ste", "sign=swish", "sign=approx"]
    assert flat[3] == [*with_(BASE, shortcut="false"), "seed=0"]


@pytest.mark.parametrize("change, message", [
    ({"factors": {}}, "one_factor sweeper: hydra.sweeper.factors is empty"),
    ({"factors": {"epochs": ["2"]}}, "one_factor sweeper: factor 'epochs' is not in hydra.sweeper.base"),
    ({"factors": {"sign": ["approx"]}}, "one_factor sweeper: factor sign=approx equals its base value sign=approx"),
    ({"factors": {"shortcut": ["true"]}}, "one_factor sweeper: factor shortcut=true equals its base value"),
    ({"factors": {"sign": ["ste", "ste"]}}, "one_factor sweeper: factor sign=ste is listed twice"),
    ({"factors": {"sign": []}}, "one_factor sweeper: factor 'sign' has no alternatives"),
    ({"base": {**SWEEP.base, "model": "bireal18,res18"}},
     "one_factor sweeper: hydra.sweeper.base.model=bireal18,res18 is a sweep"),
])
def test_design_refused_in_one_line(change, message):
    with pytest.raises(ofs.OneFactorDesignError) as e:
        jobs(sweeper(**change))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_refused_design_stops_the_multirun_before_any_job(tmp_path):
    r = run_train(["-m", "sweeps=bireal_conclusions", "hydra.sweeper.factors.sign=[approx]", f"output_root={tmp_path}"])
    assert r.returncode == 1
    assert ("one_factor sweeper: factor sign=approx equals its base value sign=approx; an alternative must differ "
            "from the base") in r.stderr.splitlines()
    assert not list(tmp_path.rglob("record.json"))


# ----------------------------------------------------------------------------------------------------------
# A real multirun and its tables
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conclusions_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("conclusions")
    r = run_train(["-m", "sweeps=bireal_conclusions", "seed=0", *TINY, f"output_root={root}"])
    assert r.returncode == 0, r.stderr[-3000:]
    return root, r


def test_multirun_runs_the_five_cells_base_first(conclusions_run, tmp_path):
    root, r = conclusions_run
    assert "onebit sweep: 5 finished, 0 failed" in r.stdout
    (sweep_dir,) = (root / "sweeps" / "bireal_conclusions").iterdir()
    job_dirs = sorted((d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    records = [read_record(Path(json.loads((d / "job.json").read_text())["record"]) / "record.json")
               for d in job_dirs]
    assert [tuple(rec.options[k] for k in ("pretrain", "weight", "sign", "structure", "depth"))
            for rec in records] == DESIGN
    assert all(rec.status == "finished" and not rec.smoke and rec.options["seed"] == 0 for rec in records)
    assert {rec.study for rec in records} == {"bireal_conclusions"}
    # the base is Table 1's clip / magnitude-aware / ApproxSign / Bi-Real-18 cell, shortcut=false its Plain-18
    for rec, model in ((records[0], "bireal18"), (records[1], "plain18")):
        table1 = compose_cfg(["sweeps=bireal_table1", "pretrain=clip", "weight=magnitude_aware", "sign=approx",
                              f"model={model}", "seed=0", *TINY], tmp_path)
        assert cell_key(OmegaConf.to_container(table1, resolve=True)) == cell_key(rec.config)


def test_tables_of_the_multirun(conclusions_run):
    root, _ = conclusions_run
    out = run_cli(tables_main, ["table1", "--root", root, "--format", "csv"])
    assert out.returncode == 0, out.stderr
    stream = pd.read_csv(io.StringIO(out.stdout))  # one CSV: the `table` column names each row's table
    table_rows, conclusion_rows = [rows for _, rows in stream.groupby("table", sort=False)]
    titles = [ln for ln in out.stderr.splitlines() if "Bi-Real Table 1" in ln]
    assert len(titles) == 2
    for title in titles:
        assert ("; one factor at a time around clip / magnitude-aware / ApproxSign / Bi-Real-18; protocol: paper_sgd "
                "(the paper's SGD)") in title
    t = table_rows.set_index(["init", "weight", "activation"])
    for init, weight, sign, structure, _ in DESIGN:
        column = {"bireal": "Bi-Real-18", "plain": "Plain-18"}[structure]
        assert t.loc[(init, weight, sign), column].endswith("(n=1)")
    assert t.loc[("clip", "magnitude_aware", "approx"), "Bi-Real-18 paper"] == 56.4
    assert t.loc[("clip", "magnitude_aware", "ste"), "Plain-18"] == "not in design"
    assert ("relu", "plain", "ste") not in t.index and ("clip", "plain", "ste") not in t.index
    c = conclusion_rows.set_index("conclusion")
    assert list(c.index) == ["shortcut > none", "ApproxSign > STE", "magnitude-aware > plain", "clip > ReLU init"]
    assert list(c["pairs"]) == [1, 1, 1, 1]
    assert c["paper (points)"].tolist() == pytest.approx([56.4 - 12.1, 56.4 - 53.6, 56.4 - 38.1, 56.4 - 47.5])
    records, _ = load_records(root)
    top1 = {bireal.position(r): 100 * r.final_stage.metrics["test/top1"] for r in records}
    base = top1[("clip", "proposed", "proposed", "bireal", 18)]
    assert c.loc["ApproxSign > STE", "ours (points)"] == pytest.approx(
        round(base - top1[("clip", "proposed", "original", "bireal", 18)], 2))
    assert (c["verdict"] == "inconclusive").all()  # one pair each: no interval


# ----------------------------------------------------------------------------------------------------------
# Which runs are a one-factor design; the protocol in the titles (synthetic records)
# ----------------------------------------------------------------------------------------------------------


def test_one_factor_base_only_for_a_star(tmp_path):
    def base_of(specs, base_seeds=(0, 1)):
        """one_factor_base of records at ``specs`` (the first one with ``base_seeds``, the others seeds 0, 1)"""
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        for i, (pretrain, weight, sign, structure) in enumerate(specs):
            for seed in base_seeds if i == 0 else (0, 1):
                make_record(root, f"r{i}-{seed}", pretrain=pretrain, weight=weight, sign=sign, structure=structure,
                            seed=seed)
        records, _ = load_records(root)
        return bireal.one_factor_base(records)

    star = [(p, w, s, st) for p, w, s, st, _ in DESIGN]
    assert base_of(star) == ("clip", "proposed", "proposed", "bireal", 18)
    assert base_of(star[:3]) == ("clip", "proposed", "proposed", "bireal", 18)
    assert base_of(star[:2]) is None   # a line: no base to speak of
    assert base_of(star, base_seeds=(0, 1, 2)) is None   # seed 2 of the others is missing: a design not run through
    grid = [("clip", w, s, "bireal") for w in ("plain", "magnitude_aware") for s in ("ste", "approx")]
    assert base_of(grid) is None
    assert base_of([("clip", "magnitude_aware", "approx", st) for st in ("bireal", "res", "plain")]) is None


def test_protocol_in_table1_titles(tmp_path):
    for seed in (0, 1):
        make_record(tmp_path, f"sgd{seed}", seed=seed, top1=0.8, protocol="paper_sgd",
                    optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.01})
        make_record(tmp_path, f"adam{seed}", seed=seed, top1=0.7, protocol="official_adam", optimizer__lr=0.001)
        make_record(tmp_path, f"ste{seed}", seed=seed, sign="ste", top1=0.6, protocol="official_adam",
                    optimizer__lr=0.001)
        make_record(tmp_path / "old", f"old{seed}", seed=seed, top1=0.7)
    records, _ = load_records(tmp_path)
    (sel,) = select([r for r in records if "old" not in r.run_id])
    tables = bireal.tables(sel)
    assert len(tables) == 4   # one Table 1 and its conclusions per protocol, never averaged together
    adam = [t.title for t in tables if "official_adam" in t.title]
    sgd = [t.title for t in tables if "paper_sgd" in t.title]
    assert len(adam) == 2 and len(sgd) == 2
    assert all("protocol: official_adam (the official code's Adam)" in t and "paper_sgd" not in t for t in adam)
    assert all("protocol: paper_sgd (the paper's SGD)" in t and "official_adam" not in t for t in sgd)
    assert "one factor at a time" not in " ".join(adam + sgd)
    conclusions = next(t for t in tables if t.name.endswith("_conclusions") and "official_adam" in t.title)
    assert conclusions.frame.set_index("conclusion").loc["ApproxSign > STE", "pairs"] == 2
    (old,) = select([r for r in records if "old" in r.run_id])
    assert [t.title.endswith("; protocol: not declared (optimizer: Adam)") for t in bireal.tables(old)] == [True, True]
