"""The entry points besides training: onebit-eval, onebit-export, onebit-tables, onebit-sync. One argparse style
(``--help`` returns 0 and prints the synopsis; a bad argument is one ``onebit: error:`` line, exit 2), eval's and
export's older ``key=value`` spelling translated to the flags, the console scripts of pyproject.toml, and the
wrappers ``python src/eval.py``, ``python src/export.py``, ``python analysis/tables.py``, ``python -m
onebit.cli.sync`` as real processes (their real uses: test_checkpoints_eval, test_export, test_analysis,
test_wandb)."""

from __future__ import annotations

import shutil
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, run_process

from onebit.cli import eval as eval_cli
from onebit.cli import export as export_cli
from onebit.cli import sync, tables
from onebit.cli.runs import legacy
from onebit.core.errors import ConfigError

SYNOPSIS = {
    eval_cli.main: "usage: onebit-eval RUN [--stage NAME] [--weights last|best] [--split test|val] [--out FILE]",
    export_cli.main: "usage: onebit-export RUN [--threads N] [--min-agreement X] [--out FILE]",
    tables.main: "usage: onebit-tables [-h]",
    sync.main: "usage: onebit-sync [--root DIR] [--dry-run] [-p PROJECT] [-e ENTITY]",
}


@pytest.mark.parametrize("main", list(SYNOPSIS), ids=lambda m: m.__module__)
def test_help_is_the_synopsis_and_exit_0_in_process(main):
    r = run_cli(main, ["--help"])
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith(SYNOPSIS[main]), r.stdout[:300]


@pytest.mark.parametrize("main,args,message", [
    (eval_cli.main, ["RUN", "--wieghts", "best"], ("onebit: error: unknown argument '--wieghts'; valid: RUN, --stage, "
                                                   "--weights, --split, --out (see --help)")),
    (export_cli.main, ["RUN", "--threads", "x"], ("onebit: error: argument --threads: 'x' is invalid: must be a "
                                                  "positive integer (see --help)")),
    (tables.main, ["tabel1"], "onebit: error: unknown table 'tabel1'; valid: all, table1, "),
    (tables.main, ["--study", "a", "--all-studies"], ("onebit: error: --study and --all-studies exclude each "
                                                      "other (see --help)")),
    (tables.main, ["--source", "wandb"], "onebit: error: --source wandb needs --entity and --project (see --help)"),
    (sync.main, ["--bogus"], "onebit: error: unknown argument '--bogus'; valid: --root, --dry-run, --project, "
                             "--entity (see --help)"),
])
def test_a_bad_argument_is_one_line_and_exit_2(main, args, message):
    r = run_cli(main, args)
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(message), r.stderr


def test_the_older_key_value_spelling_becomes_the_flags(tmp_path):
    keys = dict.fromkeys(("run", "stage", "weights", "split", "out", "min_agreement"), "help")
    assert legacy(["run=/r", "stage=binary", "weights=best", "out=/o.json", "min_agreement=0.5"], keys) == \
        ["/r", "--stage=binary", "--weights=best", "--out=/o.json", "--min-agreement=0.5"]
    assert legacy(["--run=/r", "--min_agreement=0.5", "--out", "f", "-o", "g", "/r2"], keys) == \
        ["/r", "--min-agreement=0.5", "--out", "f", "-o", "g", "/r2"]
    odd = tmp_path / "a=b"  # a run directory with "=" in its name is the positional RUN
    odd.mkdir()
    assert legacy([str(odd), "x/y=z"], keys) == [str(odd), "x/y=z"]
    with pytest.raises(ConfigError, match=r"^unknown argument 'foo=1'; valid: run=, stage=, weights=, split=, out=, "
                                          r"min_agreement= \(see --help\)$"):
        legacy(["foo=1"], keys)
    with pytest.raises(ConfigError, match="^weights= needs a value: help$"):
        legacy(["weights="], keys)


def test_console_scripts_are_the_mains():
    """pyproject.toml's [project.scripts] name each command's main (a console script exits with its return value);
    the installed ones match it."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"onebit-train": "onebit.cli.train:main", "onebit-eval": "onebit.cli.eval:main",
                       "onebit-export": "onebit.cli.export:main", "onebit-tables": "onebit.cli.tables:main",
                       "onebit-plots": "onebit.cli.plots:main", "onebit-sync": "onebit.cli.sync:main"}
    installed = {e.name: e.value for e in entry_points(group="console_scripts") if e.name.startswith("onebit-")}
    if not installed:
        pytest.skip("onebit is not installed (pip install -e .)")
    assert installed == scripts, "reinstall: pip install -e ."
    for name in ("onebit-eval", "onebit-export", "onebit-tables", "onebit-sync"):
        assert next(e for e in entry_points(group="console_scripts") if e.name == name).load() is \
            {"onebit-eval": eval_cli.main, "onebit-export": export_cli.main, "onebit-tables": tables.main,
             "onebit-sync": sync.main}[name]


def test_wrappers_and_a_console_script_as_real_processes():
    """The one ``--help``-level real process of each wrapper, and of one installed console script."""
    commands = {"eval": [sys.executable, str(ROOT / "src" / "eval.py")],
                "export": [sys.executable, str(ROOT / "src" / "export.py")],
                "tables": [sys.executable, str(ROOT / "analysis" / "tables.py")],
                "sync": [sys.executable, "-m", "onebit.cli.sync"]}
    for name, command in commands.items():
        r = run_process([*command, "--help"], timeout=300)
        assert r.returncode == 0 and r.stdout.startswith(f"usage: onebit-{name}"), (name, r.stderr[-2000:])
    r = run_process([*commands["eval"], "weights=bogus"], timeout=300)  # one line and exit 2 as a process too
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr == "onebit: error: unknown --weights 'bogus'; valid: last, best (see --help)\n"
    script = Path(sys.executable).with_name("onebit-eval")
    if not script.exists() and shutil.which("onebit-eval") is None:
        pytest.skip("the console scripts are not installed (pip install -e .)")
    r = run_process([str(script) if script.exists() else shutil.which("onebit-eval"), "--help"], timeout=300)
    assert r.returncode == 0 and r.stdout.startswith(SYNOPSIS[eval_cli.main]), r.stderr[-2000:]
