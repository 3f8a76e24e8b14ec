"""Hydra as its users expect: onebit's ``--help`` (every group with its description and options), Hydra's own flags
passed through preflight, the standard override syntax for launchers and sweepers (``hydra/launcher=joblib`` and
``submitit_local``, ``hydra/sweeper=optuna`` with conf/hparams_search/), and the ``debug/`` group's smoke runs,
which the tables leave out. Real runs on tiny digits models (``python src/train.py`` as a subprocess)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CONF, FAST, ROOT, compose_cfg, run_cli, run_train
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from onebit.cli import preflight as P
from onebit.cli.tables import main as tables_main
from onebit.core.errors import ConfigError
from onebit.core.registry import GROUPS
from onebit.records.identity import smoke_reasons
from onebit.records.record import read_record

TINY = ["model.width=4", "epochs=1", "threads=1"]
DEBUG_OPTIONS = ["default", "fast_dev_run", "limit", "overfit", "profiler"]
# what makes each debug option a smoke run (conf/debug/*.yaml)
DEBUG_SMOKE = {
    "default": ["smoke=True"],
    "fast_dev_run": ["trainer.fast_dev_run=True", "smoke=True"],
    "limit": ["trainer.limit_train_batches=5", "trainer.limit_val_batches=3", "trainer.limit_test_batches=3",
              "smoke=True"],
    "overfit": ["trainer.overfit_batches=3", "smoke=True"],
    "profiler": ["trainer.limit_train_batches=20", "smoke=True"],
}


def records_under(root: Path) -> list:
    return sorted((read_record(p) for p in Path(root).rglob("record.json")), key=lambda r: r.run_dir)


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


# ----------------------------------------------------------------------------------------------------------
# --help and Hydra's flags
# ----------------------------------------------------------------------------------------------------------


def help_entries(text: str) -> dict[str, str]:
    """The ``== Configuration groups ==`` section of --help: group -> its description and options, one line."""
    section = text.split("== Configuration groups ==", 1)[1].split("\n== ", 1)[0].splitlines()[1:]
    entries: dict[str, list[str]] = {}
    for line in section:
        if line.startswith("  ") and not line.startswith("   "):
            name, _, rest = line.strip().partition(" ")
            entries[name] = [rest]
        elif line.strip():
            entries[list(entries)[-1]].append(line)
    return {g: " ".join(" ".join(parts).split()) for g, parts in entries.items()}


def test_help_lists_every_group_with_its_description_and_options():
    out = _ok(run_train(["--help"]))
    assert out.startswith("onebit: experiments with 1-bit (binary) CNNs")
    assert "python src/train.py -m sweeps=bireal_table1" in out and "python analysis/tables.py" in out
    assert "README.md" in out
    entries = help_entries(out)
    assert list(entries) == list(GROUPS)   # every group, including sweeps, debug and hparams_search
    for group, spec in GROUPS.items():
        description = spec.description
        text = entries[group]
        assert text.startswith(" ".join(description.split())), (group, text)
        listed = text[len(" ".join(description.split())):].replace("[", "").replace("]", "").split(", ")
        assert [o.strip() for o in listed] == P.options(group), group
    assert "[bireal18]" in entries["model"] and "[digits]" in entries["data"] and "[wandb]" in entries["logger"]
    for option in ("bireal_table1", "bireal_conclusions"):
        assert option in entries["sweeps"]
    assert "fast_dev_run" in entries["debug"] and "bireal_optuna" in entries["hparams_search"]
    # the plain settings with their current values and conf/train.yaml's comments
    assert re.search(r"^  epochs=8 +epochs of the binary stage$", out, re.MULTILINE)
    assert re.search(r"^  study=default +the study \(sweep\) name", out, re.MULTILINE)
    # Hydra's launchers and sweepers, including onebit's grid (the default) and one_factor and the optuna plugin
    assert re.search(r"^  hydra/launcher +\[basic\], joblib, submitit_local, submitit_slurm$", out, re.MULTILINE)
    assert re.search(r"^  hydra/sweeper +basic, \[grid\], one_factor, optuna$", out, re.MULTILINE)
    assert "--hydra-help" in out and "--cfg job" in out
    # the current choices follow the command line: an experiment's data and model are marked
    entries = help_entries(_ok(run_train(["--help", "experiment=bireal18_imagenet", "epochs=3"])))
    assert "[imagenet]" in entries["data"] and "[bireal18]" in entries["model"]


def test_hydra_flags_pass_through_preflight(tmp_path):
    # an unwritable output root refuses a run, never a flag that only shows something
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    env = {"ONEBIT_OUTPUTS": str(not_a_dir / "outputs")}
    assert _ok(run_train(["-h"], env=env)).startswith("onebit: experiments")
    hydra_help = _ok(run_train(["--hydra-help"], env=env))
    assert hydra_help.startswith("Hydra (1.") and "== Flags ==" in hydra_help and "hydra/launcher:" in hydra_help
    job = yaml.safe_load(_ok(run_train(["--cfg", "job", "epochs=3", "trainer.fast_dev_run=true"], env=env)))
    assert job["epochs"] == 3 and job["trainer"]["fast_dev_run"] is True   # the Trainer argument was rewritten
    launcher = yaml.safe_load(_ok(run_train(["--cfg", "hydra", "-p", "hydra.launcher",
                                              "hydra/launcher=submitit_local"], env=env)))
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    info = _ok(run_train(["--info", "defaults", "debug=limit"], env=env))
    assert "hydra/help/onebit" in info and "debug/limit" in info and "debug/default" in info
    run = run_train(["epochs=1"], env=env)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        f"onebit: error: ONEBIT_OUTPUTS='{not_a_dir / 'outputs'}' is not writable ({not_a_dir} is not a directory); "
        + "set ONEBIT_OUTPUTS to another directory, or pass output_root="]
    # the flags themselves are handed to Hydra as given
    for flags in (["--help"], ["-h"], ["--hydra-help"], ["--cfg", "job"], ["-c", "all"], ["--info"],
                  ["--info", "defaults"], ["--cfg", "hydra", "--resolve", "-p", "hydra.run"]):
        assert P.preflight(["epochs=2", *flags]) == ["epochs=2", *flags]
    assert P.preflight(["--cfg", "job", "trainer.fast_dev_run=true"]) == ["--cfg", "job", "++trainer.fast_dev_run=true"]


def test_preflight_knows_the_new_groups():
    for argv, line in [
        (["debug=nope"], "unknown option debug='nope'; valid choices: default, fast_dev_run, limit, overfit, profiler"),
        (["hparams_search=bireal_optmna"], "unknown option hparams_search='bireal_optmna'; valid choices: "
                                           + "bireal_optuna"),
        (["debug=null"], "debug=null is invalid: a config group takes an option name; valid choices: default, "
                         + "fast_dev_run, limit, overfit, profiler; omit it (or ~debug) to choose none (the default)"),
        # Hydra would crash on these (a traceback; "Could not find 'experiment/'" over many lines)
        (["-m", "debug=null,fast_dev_run"], "debug=null is invalid: a config group takes an option name; "),
        (["experiment="], "experiment='' is invalid: a config group takes an option name; valid choices: "),
        (["-m", "sign=approx,''"], "sign='' is invalid: a config group takes an option name; valid choices: approx, "
                                   + "ste, swish"),
        (["hparams_search='null'"], "hparams_search='null' is invalid: a config group takes an option name; valid "
                                    + "choices: bireal_optuna; omit it (or ~hparams_search) to choose none"),
        (["sign=null"], "sign=null is invalid: a config group takes an option name; valid choices: approx, ste, "
                        + "swish"),
        # debug's defaults choose logger=csv (through debug/default): its keys are checked against csv
        (["debug=fast_dev_run", "logger.project=x"], "logger.project is a key of logger=wandb, not of logger=csv; "
                                                     + "choose logger=wandb, or set a key of logger=csv: "),
        # the experiment chooses protocol=official_adam, whose schedule is linear
        (["experiment=bireal18_official_adam", "scheduler.gamma=0.5"],
         "scheduler.gamma is a key of scheduler=step, not of scheduler=linear; choose scheduler=step, or drop "
         + "scheduler.gamma (scheduler=linear has no keys to set)"),
    ]:
        with pytest.raises(ConfigError) as e:
            P.preflight(argv)
        assert str(e.value).startswith(line) and "\n" not in str(e.value), (argv, str(e.value))
    for argv in (["-m", "debug=limit,overfit", "epochs=2"], ["~debug"], ["debug=fast_dev_run", "logger=wandb",
                                                                        "logger.project=x"],
                 ["-m", "hparams_search=bireal_optuna", "optimizer.lr=tag(log, interval(1e-4, 1e-1))"],
                 ["-m", "hydra/sweeper=optuna", "sign.t=interval(0.5, 1.5)"],
                 ["protocol=paper_sgd", "optimizer.momentum=0.8"],   # protocol's override /optimizer: sgd
                 ["sweeps=bireal_table1", "optimizer.momentum=0.8"]):   # the sweep's override /protocol: paper_sgd
        assert P.preflight(argv) == argv
    run = run_train(["debug=nope"])
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        "onebit: error: unknown option debug='nope'; valid choices: default, fast_dev_run, limit, overfit, profiler"]


# ----------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------


def test_joblib_launcher_with_hydra_syntax_runs_a_multirun(tmp_path):
    proc = run_train(["-m", "hydra/launcher=joblib", "seed=0,1", f"output_root={tmp_path}", *FAST])
    _ok(proc)
    assert "Joblib.Parallel(n_jobs=-1" in proc.stderr + proc.stdout
    records = records_under(tmp_path)
    assert sorted(r.config["seed"] for r in records) == [0, 1] and all(r.status == "finished" for r in records)
    multirun = OmegaConf.load(next(tmp_path.rglob("multirun.yaml")))
    assert multirun.hydra.launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    # threads=null: torch keeps the threads joblib gave its worker (OMP_NUM_THREADS = cores // workers, n_jobs=-1: a
    # worker per core, so 1, unless the user set OMP_NUM_THREADS), and torch's own default without joblib
    for r in records:
        assert _threads_line(r) == int(os.environ.get("OMP_NUM_THREADS", 1)), r.run_dir
    _ok(run_train([f"output_root={tmp_path / 'basic'}", *FAST]))
    default = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             capture_output=True, text=True, check=True)
    assert [_threads_line(r) for r in records_under(tmp_path / "basic")] == [int(default.stdout)]


def _threads_line(record) -> int:
    """The torch threads a job's train.log reports (``torch threads: N``, once per job)."""
    found = re.findall(r"\] - torch threads: (\d+)$", (Path(record.run_dir) / "train.log").read_text(), re.MULTILINE)
    assert len(found) == 1, found
    return int(found[0])


# ----------------------------------------------------------------------------------------------------------
# hydra/sweeper=optuna and conf/hparams_search/
# ----------------------------------------------------------------------------------------------------------


def test_hparams_search_config():
    search = OmegaConf.load(CONF / "hparams_search" / "bireal_optuna.yaml")
    assert {"override /hydra/sweeper": "optuna"} in search.defaults and search.study == "hparams_search"
    sweeper = search.hydra.sweeper
    assert sweeper.direction == "maximize" and sweeper.sampler.seed == 0
    assert set(sweeper.params) == {"optimizer.lr", "sign", "sign.t"}
    for sign in ("approx", "ste"):   # sign.t composes with every sign the search chooses
        assert "t" in OmegaConf.load(CONF / "sign" / f"{sign}.yaml")


def _optuna_results(root: Path) -> dict:
    return yaml.safe_load(next(root.rglob("optimization_results.yaml")).read_text())


def test_optuna_search_runs_trials_and_writes_the_best(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra: pip install -e '.[optuna]'")
    proc = run_train(["-m", "hparams_search=bireal_optuna", "hydra.sweeper.n_trials=2", f"output_root={tmp_path}",
                      *FAST, "threads=1"])
    _ok(proc)
    records = records_under(tmp_path)
    assert len(records) == 2 and all(r.status == "finished" and r.study == "hparams_search" for r in records)
    assert all(Path(r.run_dir).parent.parent.name == "hparams_search" for r in records)   # sweeps/hparams_search/
    lrs = [r.config["optimizer"]["lr"] for r in records]
    assert lrs[0] != lrs[1] and all(1e-4 <= lr <= 1e-1 for lr in lrs)
    values = {r.config["optimizer"]["lr"]: r.final_stage.metrics["val/top1_best"] for r in records}
    results = _optuna_results(tmp_path)
    assert set(results["best_params"]) == {"optimizer.lr", "sign", "sign.t"}
    assert results["best_value"] == pytest.approx(max(values.values()))   # the objective: final val/top1_best
    assert values[results["best_params"]["optimizer.lr"]] == pytest.approx(results["best_value"])
    best = next(r for r in records if r.config["optimizer"]["lr"] == results["best_params"]["optimizer.lr"])
    assert best.config["sign"]["t"] == pytest.approx(results["best_params"]["sign.t"])


def test_optuna_failed_trial_does_not_stop_the_study(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra: pip install -e '.[optuna]'")
    # lr=-1 is refused (the job returns no value): Optuna marks the trial failed and goes on
    proc = run_train(["-m", "hparams_search=bireal_optuna", "hydra/sweeper/sampler=random", "hydra.sweeper.n_trials=3",
                      "optimizer.lr=choice(0.002,-1.0)", "sign=approx", "sign.t=1.0", f"output_root={tmp_path}",
                      *FAST, "threads=1"])
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]   # the sweep summary names the failure
    assert "REFUSED" in proc.stdout and "optimizer.lr=-1.0 is invalid" in proc.stdout
    records = records_under(tmp_path)
    assert [r.config["optimizer"]["lr"] for r in records] == [0.002] and records[0].status == "finished"
    results = _optuna_results(tmp_path)
    assert results["best_params"] == {"optimizer.lr": 0.002}
    assert results["best_value"] == pytest.approx(records[0].final_stage.metrics["val/top1_best"])


# ----------------------------------------------------------------------------------------------------------
# debug/
# ----------------------------------------------------------------------------------------------------------


def test_debug_options_compose_as_smoke_runs(tmp_path):
    assert P.options("debug") == DEBUG_OPTIONS
    full = OmegaConf.to_container(compose_cfg([], tmp_path), resolve=True)
    assert smoke_reasons(full) == []
    for option in DEBUG_OPTIONS:
        cfg = compose_cfg([f"debug={option}"], tmp_path)
        assert cfg.study == "debug" and cfg.resume is False and cfg.epochs >= 1
        assert HydraConfig.get().runtime.choices["logger"] == "csv"
        assert cfg.cache_dir == str(tmp_path / "run" / "cache")   # a cache of its own
        assert smoke_reasons(OmegaConf.to_container(cfg, resolve=True)) == DEBUG_SMOKE[option], option
    # the command line still wins over a debug option (it is last in the defaults list, before the command line)
    assert compose_cfg(["debug=overfit", "epochs=2"], tmp_path).epochs == 2
    # smoke is the debug options' own key, not their study: any study name keeps it, and study=debug alone is no smoke
    renamed = compose_cfg(["debug=default", "study=mine"], tmp_path)
    assert smoke_reasons(OmegaConf.to_container(renamed, resolve=True)) == ["smoke=True"]
    assert smoke_reasons(OmegaConf.to_container(compose_cfg(["study=debug"], tmp_path), resolve=True)) == []
    assert "smoke" not in full   # a key of debug runs only: the job keys of all other runs stay as they were
    # Lightning's "off" values are no smoke, whatever their type
    assert smoke_reasons({"trainer": {"fast_dev_run": 0, "overfit_batches": 0, "max_steps": -1}}) == []


def test_debug_runs_are_marked_smoke_and_left_out_of_tables(tmp_path):
    args = [f"output_root={tmp_path}", *TINY, "data.batch_size=256"]
    proc = run_train(["-m", f"debug={','.join(DEBUG_OPTIONS)}", *args])
    # the jobs' study (debug) differs from the sweep's (default): their directories are under sweeps/debug/, and
    # the closing summary still finds every one of them
    assert f"onebit sweep: {len(DEBUG_OPTIONS)} finished, 0 failed" in _ok(proc)
    records = records_under(tmp_path)
    assert len(records) == len(DEBUG_OPTIONS)
    for record in records:
        option = DEBUG_OPTIONS[int(Path(record.run_dir).name)]   # job i of the sweep = the i-th option
        assert record.status == "finished" and record.study == "debug"
        assert record.smoke == DEBUG_SMOKE[option], option
        assert record.final_stage.metrics["val/top1_best"] is not None
        assert (Path(record.run_dir) / "cache").is_dir()   # the twin trained in the run's own cache
        if option == "profiler":
            profile = (Path(record.run_dir) / "fit-profile.txt").read_text()
            assert "FIT Profiler Report" in profile and "run_training_batch" in profile
    assert not (tmp_path / "cache").exists()   # the shared pretrain cache is untouched
    # resume=false: the same debug run again runs again, and says it is a smoke run
    again = _ok(run_train(["debug=fast_dev_run", *args]))
    assert "SMOKE RUN (trainer.fast_dev_run=True, smoke=True): not counted in tables" in again
    assert "skipped" not in again and len(records_under(tmp_path)) == len(DEBUG_OPTIONS) + 1
    tables = run_cli(tables_main, ["--root", tmp_path], cwd=ROOT)
    assert tables.returncode == 0, tables.stderr
    assert "study debug" not in tables.stdout and "Table 1" not in tables.stdout
    assert f"left out: {len(DEBUG_OPTIONS) + 1} smoke runs" in tables.stderr


def test_which_multiruns_get_a_study_of_their_own(tmp_path):
    """own_study: a multirun with the default study and no study= is named by its swept keys (seeds left out); an
    explicit study=, a sweep of seeds alone, and every overlay whose options name their own study
    (registry.study_overlays, read from conf/ and sweeps/) keep theirs."""
    from hydra_plugins.onebit_sweeper.grid_sweeper import own_study
    from onebit.core.registry import study_overlays

    assert set(study_overlays()) == {"debug", "experiment", "sweeps", "hparams_search"}

    def named(args, params=(), study="default"):
        cfg = OmegaConf.create({"study": study})
        return own_study(cfg, list(args), list(params))[len(args):], cfg.study

    assert named(["sign=approx,ste", "shortcut=true,false", "seed=0,1"]) == (["study=sweep-shortcut-sign"],
                                                                             "sweep-shortcut-sign")
    assert named(["seed=0,1,2"]) == ([], "default")
    assert named(["sign=approx,ste", "study=mine"]) == ([], "default")
    assert named(["sign=approx,ste"], study="bireal_table1") == ([], "bireal_table1")
    assert named(["hydra/launcher=joblib"], params=["optimizer.lr=0.1,0.01"]) == (["study=sweep-optimizer.lr"],
                                                                                  "sweep-optimizer.lr")
    for overlay in study_overlays():
        assert named([f"{overlay}=x", "sign=approx,ste"]) == ([], "default"), overlay
    assert named(["protocol=paper_sgd", "sign=approx,ste"])[0] == ["study=sweep-sign"]  # protocol names no study
    # a new overlay option that names a study is found from its file
    conf = tmp_path / "conf"
    (conf / "protocol").mkdir(parents=True)
    (conf / "protocol" / "mine.yaml").write_text("# @package _global_\nstudy: mine\n")
    assert "protocol" in study_overlays(conf) and "protocol" not in study_overlays()
