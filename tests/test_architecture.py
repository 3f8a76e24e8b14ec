"""The house rules, checked: packages import only downward (import-linter's contracts in pyproject.toml), no onebit
import hidden inside a function to dodge a circle, no module over ~400 lines without a reason at its top, and the
extension points a newcomer uses (a sign approximation = one class + one YAML file) work from outside the tree."""

from __future__ import annotations

import ast
import os
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "onebit"
MAX_LINES = 400
# entry points may import the layers below lazily: `--help` and one-line errors must not wait for torch
LAZY_IMPORTS_ALLOWED = ("cli",)


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def lint_imports(cwd: Path, env: dict | None = None):
    """``lint-imports`` (import-linter's command) over ``cwd``'s pyproject.toml, as a process: in this one its
    logging setup would disable every logger that exists (``logging.config.dictConfig``'s default)."""
    import subprocess
    import sys

    return subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache", "pyproject.toml"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.fast  # lint-imports: a process of ~1 s
def test_import_linter_contracts_hold():
    r = lint_imports(ROOT)
    assert r.returncode == 0 and "0 broken" in r.stdout, r.stdout[-3000:]


@pytest.mark.fast
def test_import_linter_would_catch_an_upward_import(tmp_path):
    """The contract can fail: the same configuration over a copy of the package with one upward import."""
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "onebit", ignore=shutil.ignore_patterns("__pycache__"))
    files = copy / "onebit" / "core" / "files.py"
    files.write_text(files.read_text() + "\nfrom onebit.training import jobs  # upward\n")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    r = lint_imports(tmp_path, env={**os.environ, "PYTHONPATH": str(copy)})
    assert r.returncode != 0 and "onebit.core.files -> onebit.training.jobs" in r.stdout, r.stdout[-2000:]


def test_no_onebit_import_inside_a_function():
    """An import placed inside a function to dodge a circle is a sign the code is in the wrong layer."""
    found = []
    for path in _modules():
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in LAZY_IMPORTS_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    names = ([a.name for a in inner.names] if isinstance(inner, ast.Import)
                             else [inner.module or ""] if isinstance(inner, ast.ImportFrom) else [])
                    if any(n == "onebit" or n.startswith("onebit.") for n in names):
                        found.append(f"{rel}:{inner.lineno}")
    assert found == []


def test_modules_stay_small_or_say_why():
    too_long = []
    for path in _modules():
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        if text.count("\n") > MAX_LINES and "Over 400 lines" not in doc:
            too_long.append(f"{path.relative_to(PACKAGE)} ({text.count(chr(10))} lines)")
    assert too_long == []


def test_every_module_says_what_it_is():
    """A file is one concept that a newcomer can read top to bottom: it starts by saying which."""
    assert [str(p.relative_to(PACKAGE)) for p in _modules() if not ast.get_docstring(ast.parse(p.read_text()))] == []


SIGN = '''
"""A sign approximation added from outside the tree: the piecewise-quadratic ApproxSign at half width."""
import torch
from onebit.nn.quantizers import SignApproximation


class HalfApproxSign(SignApproximation):
    """g(x) = 4 - 8|x| on |x| < 1/2, else 0 (ApproxSign, Bi-Real Eq. 3, squeezed to [-1/2, 1/2])."""

    def derivative(self, x):
        return torch.clamp(4 - 8 * x.abs(), min=0)
'''


def test_a_sign_approximation_is_one_class_and_one_yaml_file(tmp_path, monkeypatch):
    """One class (a module on sys.path) + one YAML file (a config dir on Hydra's search path) = a new option of
    the ``sign`` group: composed, trained, recorded by name, its gradient the one its class states."""
    import torch
    from conftest import only_record, run_train

    (tmp_path / "mysigns.py").write_text(textwrap.dedent(SIGN))
    (tmp_path / "conf" / "sign").mkdir(parents=True)
    (tmp_path / "conf" / "sign" / "half_approx.yaml").write_text("_target_: mysigns.HalfApproxSign\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import mysigns

    x = torch.tensor([-0.6, -0.25, 0.0, 0.25, 0.6], requires_grad=True)
    mysigns.HalfApproxSign()(x).sum().backward()
    assert x.grad.tolist() == pytest.approx([0.0, 2.0, 4.0, 2.0, 0.0])
    r = run_train(["sign=half_approx", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "model.width=4", "epochs=1",
                   "pretrain=none", "logger=none", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
                   "+trainer.limit_test_batches=1", f"output_root={tmp_path / 'out'}"], env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    rec = only_record(tmp_path / "out")
    assert rec.options["sign"] == "half_approx" and rec.config["sign"]["_target_"] == "mysigns.HalfApproxSign"
    assert rec.status == "finished"


TABLE = '''
"""A paper table added from outside the tree: the sign approximations, one row per cell, and one conclusion."""
from onebit.results import study
from onebit.results.registry import PaperTable, register

AXES = {"sign": ("ste", "approx")}


def in_table(rec):
    return rec.options.get("sign") in AXES["sign"]


def tables(sel, metric):
    return study.tables(sel, metric) if any(map(in_table, sel.records)) else []


register(PaperTable("toy_signs", "the toy sign table", "toy_signs", AXES, tables, in_table,
                    (("approx > ste", "sign", "approx", "ste"),)))
'''
SWEEP = """# @package _global_
study: toy_signs
hydra:
  sweeper:
    params:
      sign: ${onebit_axis:toy_signs,sign}
"""


@pytest.mark.slow  # a real two-job multirun
def test_a_paper_table_is_one_module_and_one_sweep_file(tmp_path, monkeypatch):
    """One module in onebit.results (here: a folder added to the package's search path) that registers the table,
    plus one sweep file that reads its axis from the registry: the sweep runs the registered grid, tables.py gains
    the subcommand, and its "no runs" line names its axes and sweep."""
    import onebit.results
    from conftest import TINY_FULL, run_cli, run_train

    from onebit.cli.tables import main as tables_main
    from onebit.results.registry import TABLES, paper_tables

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "toy_signs.py").write_text(textwrap.dedent(TABLE))
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "toy_signs.yaml").write_text(SWEEP)
    monkeypatch.setattr(onebit.results, "__path__", [*onebit.results.__path__, str(tmp_path / "results")])
    monkeypatch.setattr("onebit.results.registry.TABLES", dict(TABLES))  # the registration ends with the test
    assert paper_tables()["toy_signs"].axis("sign") == "ste,approx"

    assert paper_tables()["toy_signs"].missing() == ("no runs for the toy sign table (sign ste|approx: "
                                                       "python src/train.py -m sweeps=toy_signs)")
    out = tmp_path / "out"
    r = run_train(["-m", "sweeps=toy_signs", f"hydra.searchpath=[file://{ROOT},file://{tmp_path}]", *TINY_FULL,
                   "pretrain.epochs=1", f"output_root={out}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sign=ste" in r.stdout and "sign=approx" in r.stdout and "2 finished" in r.stdout
    shown = run_cli(tables_main, ["toy_signs", "--root", str(out), "--format", "csv"])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("toy_signs") >= 2 and ",ste," in shown.stdout and ",approx," in shown.stdout
