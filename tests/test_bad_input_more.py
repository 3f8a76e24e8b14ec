"""More of the bad-input table (issue 22): each bad value is one ``onebit: error:`` line naming the value typed and
the valid choices, a non-zero exit, nothing written, before any job starts; valid syntax still passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CONF, FAST, compose_cfg, run_cli, run_train
from pytorch_lightning.accelerators import AcceleratorRegistry
from test_bad_input import _nothing_recorded
from test_bad_input import _one_error_line as _line

from onebit.cli import eval as eval_cli
from onebit.cli import export as export_cli
from onebit.cli import plots, sync, tables
from onebit.cli import preflight as P
from onebit.core.errors import ConfigError
from onebit.core.registry import METRICS
from onebit.records.recipe import epochs_key


def _available(name: str) -> bool:
    try:
        return bool(AcceleratorRegistry[name]["accelerator"].is_available())
    except Exception:  # noqa: BLE001
        return False


REGISTERED = sorted(AcceleratorRegistry.available_accelerators())
HERE = [n for n in REGISTERED if _available(n)]


# ------------------------------------------------------------------------------------------- 1. accelerators
@pytest.mark.parametrize("argv", [["trainer.accelerator=bogus"], ["-m", "trainer.accelerator=cpu,bogus"]])
def test_unknown_accelerator_names_the_value_and_lightnings_accelerators(tmp_path, argv):
    line = _line(run_train([*argv, *FAST, f"output_root={tmp_path}"]))
    assert line == ("onebit: error: trainer.accelerator='bogus' is unknown; valid accelerators (Lightning's "
                    f"AcceleratorRegistry): {', '.join(['auto', 'gpu', *REGISTERED])}")
    assert list(tmp_path.iterdir()) == []  # refused before Hydra: no job folder


@pytest.mark.parametrize("name,cause", [("tpu", "torch_xla"), ("mps", "`MPSAccelerator` can not run on your system"),
                                        ("cuda", "`CUDAAccelerator` can not run on your system")])
def test_unavailable_accelerator_says_so_with_lightnings_reason(tmp_path, name, cause):
    if _available(name):
        pytest.skip(f"this machine has {name}")
    line = _line(run_train([f"trainer.accelerator={name}", *FAST, f"output_root={tmp_path}"]))
    assert line.startswith(f"onebit: error: trainer.accelerator='{name}' is not available on this machine ("), line
    assert cause in line and "\n" not in line
    assert line.endswith(f"); available here: {', '.join(HERE)}; use trainer=cpu"), line
    _nothing_recorded(tmp_path)
    assert not list(tmp_path.rglob("job.json")) and not list(tmp_path.rglob(".hydra"))  # no directory left


@pytest.mark.parametrize("argv", [["trainer.accelerator=cpu"], ["-m", "trainer.accelerator=auto,cpu"],
                                  ["trainer.accelerator=gpu", "--cfg", "job"]])
def test_known_accelerator_names_pass_preflight(argv):
    assert P.preflight(argv, CONF) == argv


# ------------------------------------------------------------------------------------------------- 2. threads
def test_negative_threads_is_refused_before_torch_sees_it(tmp_path):
    line = _line(run_train(["threads=-1", *FAST, f"output_root={tmp_path}"]))
    assert line == "onebit: error: threads=-1 is invalid: must be a positive integer, or null for torch's default"
    _nothing_recorded(tmp_path)


# ----------------------------------------------------------------------------------------------- 3. recipe steps
@pytest.mark.parametrize("argv,message", [
    (["recipe=two_step", "recipe.step1_epochs=-1"],
     "recipe.step1_epochs=-1 is invalid: must be a positive integer (the epochs of step 'binary_activations' of "
     "recipe=two_step)"),
    (["recipe=two_step", "recipe.step1_epochs=abc"],
     "recipe.step1_epochs='abc' is invalid: must be a positive integer (the epochs of step 'binary_activations' of "
     "recipe=two_step)"),
    (["recipe.steps.0.epochs=0"],
     "recipe.steps.0.epochs=0 is invalid: must be a positive integer (the epochs of step 'binary' of recipe=one_step)"),
])
def test_recipe_step_epochs_name_the_key_typed(tmp_path, argv, message):
    line = _line(run_train([*argv, *FAST, f"output_root={tmp_path}"]))
    assert line == f"onebit: error: {message}"
    _nothing_recorded(tmp_path)


def test_epochs_key_follows_interpolations(tmp_path):
    cfg = compose_cfg(["recipe=two_step"], tmp_path)  # step1_epochs: ${epochs} -> the value is epochs'
    assert [epochs_key(cfg, i) for i in range(2)] == ["epochs", "epochs"]
    cfg = compose_cfg(["recipe=two_step", "recipe.step1_epochs=3"], tmp_path)
    assert [epochs_key(cfg, i) for i in range(2)] == ["recipe.step1_epochs", "epochs"]
    cfg = compose_cfg(["recipe=two_step", "recipe.steps.1.epochs=3"], tmp_path)
    assert epochs_key(cfg, 1) == "recipe.steps.1.epochs"


# ----------------------------------------------------------------------------------- 4. Hydra's own groups
@pytest.mark.parametrize("argv,message", [
    (["--config-name", "train", "hydra/launcher=nope"],
     "unknown option hydra/launcher='nope'; valid choices: basic, joblib, submitit_local, submitit_slurm"),
    (["-cn", "train", "-m", "hydra/sweeper=nope"],
     "unknown option hydra/sweeper='nope'; valid choices: basic, grid, one_factor, optuna"),
    (["--config-path", str(CONF), "hydra/sweeper=nope"],
     "unknown option hydra/sweeper='nope'; valid choices: basic, grid, one_factor, optuna"),
    (["--config-dir", "/nonexistent/conf", "epochs=1"], "--config-dir '/nonexistent/conf': no such directory"),
    (["--config-name", "nope"], "Cannot find primary config 'nope'"),
])
def test_hydra_groups_with_another_primary_config_are_one_line(tmp_path, argv, message):
    line = _line(run_train([*argv, f"output_root={tmp_path}"]))
    assert line.startswith(f"onebit: error: {message}"), line
    assert list(tmp_path.iterdir()) == []


def test_primary_config_flags_with_valid_choices_pass():
    for argv in (["-cn", "train", "hydra/launcher=joblib"], ["--config-path", str(CONF), "hydra/sweeper=basic"]):
        assert P.preflight(argv, CONF) == argv


# -------------------------------------------------------------------------------------------------- 5. cache_dir
def test_unwritable_cache_dir_is_refused_before_the_job(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = tmp_path / "out"
    line = _line(run_train([f"cache_dir={blocker / 'cache'}", *FAST, f"output_root={out}"]))
    assert line == (f"onebit: error: cache_dir='{blocker / 'cache'}' is not writable ({blocker} is not a directory); "
                    "choose another directory (or set ONEBIT_CACHE)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no job folder, no record
    line = _line(run_train([*FAST, f"output_root={out}"], env={"ONEBIT_CACHE": str(blocker / "c")}))
    assert line == (f"onebit: error: ONEBIT_CACHE='{blocker / 'c'}' is not writable ({blocker} is not a directory); "
                    "set ONEBIT_CACHE to another directory, or pass cache_dir=")
    # a job that does not pretrain never uses the cache: not refused
    argv = [f"cache_dir={blocker / 'cache'}", "pretrain=none"]
    assert P.preflight(argv, CONF) == argv


# ------------------------------------------------------------------------------- 6. one argument-error formatter
ARGUMENT_CASES = [
    (tables.main, ["--metric", "test/top9"], f"unknown --metric 'test/top9'; valid: {', '.join(METRICS)} (see --help)"),
    (tables.main, ["table1", "--format", "html"], "unknown --format 'html'; valid: text, markdown, csv, latex "
                                                  "(see --help)"),
    (plots.main, ["--band", "wide"], "unknown --band 'wide'; valid: minmax, std (see --help)"),
    (plots.main, ["bogus"], f"unknown command 'bogus'; valid: {', '.join(plots.COMMANDS)} (see --help)"),
    (plots.main, ["signs", "--root", "x"], "unknown argument '--root'; valid: --out, --beta (see --help)"),
    (eval_cli.main, ["RUN", "--split", "train"], "unknown --split 'train'; valid: test, val (see --help)"),
    (export_cli.main, ["RUN", "--bogus"], "unknown argument '--bogus'; valid: RUN, --threads, --min-agreement, --out "
                                          "(see --help)"),
    (sync.main, ["--bogus"], "unknown argument '--bogus'; valid: --root, --dry-run, --project, --entity (see --help)"),
]


@pytest.mark.parametrize("main,args,message", ARGUMENT_CASES,
                         ids=[f"{m.__module__.rsplit('.', 1)[-1]} {' '.join(a)}" for m, a, _ in ARGUMENT_CASES])
def test_every_entry_point_formats_argument_errors_alike(main, args, message):
    r = run_cli(main, args)
    assert _line(r) == f"onebit: error: {message}" and r.stdout == ""


# ------------------------------------------------------------------------------------------------ 7. missing root
@pytest.mark.parametrize("main,args", [(tables.main, []), (tables.main, ["study"]), (plots.main, []),
                                       (plots.main, ["curves"])])
def test_missing_root_is_one_line_exit_1(tmp_path, main, args):
    missing = tmp_path / "nope"
    r = run_cli(main, [*args, "--root", missing])
    assert _line(r, 1) == (f"onebit: error: no run records: {missing} does not exist (run python src/train.py "
                           "first, or --root)")
    assert r.stdout == "" and list(tmp_path.iterdir()) == []


@pytest.mark.slow  # Bi-Real Table 3 counts ResNet-18/34 at 224x224: ~15 s
def test_existing_root_without_runs_still_prints_the_tables_that_need_none(tmp_path):
    r = run_cli(tables.main, ["--root", tmp_path])
    assert r.returncode == 0 and "Bi-Real Table 3" in r.stdout
    assert r.stderr == f"onebit: no run records under {tmp_path}; printing the tables that need no runs\n"


# ------------------------------------------------------------------------------------ 8. ONEBIT_OUTPUTS, system
@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("args", [[], ["model.width=4"]])
def test_outputs_in_a_system_folder_is_one_line_before_hydra(args):
    line = _line(run_train(args, env={"ONEBIT_OUTPUTS": "/proc/onebit"}))
    assert line.startswith("onebit: error: ONEBIT_OUTPUTS='/proc/onebit' is not writable ("), line
    assert "/proc" in line.split(" is not writable (", 1)[1]  # the cause names where it could not write
    assert line.endswith("); set ONEBIT_OUTPUTS to another directory, or pass output_root="), line
    assert not Path("/proc/onebit").exists()


def test_writability_is_tried_not_assumed(tmp_path):
    """What ``os.access`` cannot tell (root in /proc): a real directory is created and removed at once."""
    P.check_writable(str(tmp_path / "a" / "b"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match=r"^output_root='/proc/onebit/x' is not writable \(.*/proc"):
        P.check_writable("/proc/onebit/x")
