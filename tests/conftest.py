"""Shared fixtures: compose onebit's real Hydra config (no mocks) with small, fast settings."""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import sys
import time
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from onebit.cli.resolvers import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
register_resolvers()

# tiny and fast: width-4 models, 1 epoch, 3 train / 2 val / 2 test batches, no W&B
FAST = ["model.width=4", "epochs=1", "logger=none", "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2"]
# tiny but not a smoke run (no Trainer limits: full digits epochs), for tests of tables, which leave smoke runs out
TINY_FULL = ["model.width=4", "epochs=1", "logger=none", "threads=1"]

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def compose_cfg(overrides: list[str], tmp_path: Path):
    """Compose conf/train.yaml like `python src/train.py <overrides>` would, with outputs under tmp_path."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"output_root={tmp_path}", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):  # the task function sees the config without its `hydra` node (HydraConfig has it)
        del cfg["hydra"]
    return cfg


class TrainResult:
    """What a test reads of a run: like subprocess.CompletedProcess (returncode, stdout, stderr, args)."""

    def __init__(self, args, returncode, stdout, stderr):
        self.args, self.returncode, self.stdout, self.stderr = args, returncode, stdout, stderr

    def __repr__(self):
        return f"TrainResult(returncode={self.returncode!r}, args={self.args!r})"


# what needs a real process: a kill point SIGKILLs the process; a parallel launcher's workers and DDP's ranks are
# processes of their own (and, in-process, would inherit the test session's state)
PROCESS_ENV = ("ONEBIT_KILL_AT",)
PROCESS_ARGS = re.compile(r"^trainer=ddp|^[+~]*trainer\.strategy=ddp")
LAUNCHER_ARGS = re.compile(r"^(hydra/)?launcher=(?!basic)")  # in a multirun (-m): a launcher's workers
PROCESSES: list[str] = []  # node ids of tests that started a real process of an entry point (see the hooks below)


def needs_process(args: list[str], env: dict | None = None) -> bool:
    """Whether ``python src/train.py args`` must run as a real process (see PROCESS_ENV, PROCESS_ARGS)."""
    multirun = "-m" in args or "--multirun" in args
    return (any(k in (env or {}) for k in PROCESS_ENV) or any(PROCESS_ARGS.search(a) for a in args)
            or (multirun and any(LAUNCHER_ARGS.search(a) for a in args)))


@contextlib.contextmanager
def as_a_process(env: dict | None = None, cwd: Path | None = None):
    """What a shell gives a new process, for a call in this one: ``env`` added to the environment (a value of None
    unsets the variable), ``cwd`` as the working directory, Python's warnings off (``PYTHONWARNINGS=ignore``),
    stdout and stderr captured; yields the two StringIO and restores everything after."""
    environ, old_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    try:
        for k, v in (env or {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        if cwd is not None:
            os.chdir(cwd)
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("ignore")
            yield out, err
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(environ)


def run_train(args: list[str], cwd: Path = ROOT, env: dict | None = None, timeout: float = 600,
              subprocess: bool | None = None):
    """Run ``python src/train.py args`` as a user would: in this process (``onebit.cli.train.main``, ~1 s instead
    of the ~10 s a new process spends importing torch and Lightning), or as a real process where a test needs one
    (:func:`needs_process`, or ``subprocess=True``). Returns an object with returncode, stdout and stderr; ``env``
    is added to this process's environment for the run (a value of None unsets the variable); Python's warnings
    are off, as ``PYTHONWARNINGS=ignore`` turns them off in the process."""
    if subprocess is None:
        subprocess = needs_process(args, env)
    if subprocess:
        return run_process([sys.executable, str(ROOT / "src" / "train.py"), *args], cwd=cwd, env=env,
                           timeout=timeout)
    return _run_in_process(args, cwd, env)


def run_process(cmd: list[str], cwd: Path = ROOT, env: dict | None = None, timeout: float = 600):
    """A real process (``PYTHONWARNINGS=ignore``, env added; a value of None unsets a variable)."""
    import subprocess as sp

    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    if test and test not in PROCESSES:
        PROCESSES.append(test)
    e = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return sp.run(cmd, cwd=cwd, env={k: v for k, v in e.items() if v is not None}, capture_output=True, text=True,
                  timeout=timeout, check=False)


def _run_in_process(args: list[str], cwd: Path, env: dict | None):
    import logging
    import random

    import numpy as np
    import torch

    from onebit.cli.train import main

    argv = list(sys.argv)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    rng = random.getstate(), np.random.get_state(), torch.get_rng_state()
    root = logging.getLogger()
    loggers = {name: (lg.level, list(lg.handlers), lg.propagate, lg.disabled)
               for name, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    root_state = (root.level, list(root.handlers))
    # Hydra's logging setup (logging.config.dictConfig) closes every handler that exists (logging._handlerList); in
    # a new process there are none, in this one there are the session's: absl's (TensorFlow, the export tests)
    # closes its stream on close(), which is pytest's capture file. Hide them from dictConfig for the run.
    existing = list(logging._handlerList)
    logging._handlerList[:] = []
    GlobalHydra.instance().clear()
    try:
        with as_a_process(env, cwd) as (out, err):
            try:
                code = main(list(args))
            except SystemExit as e:  # as the process would exit
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001 (a crashing process: a traceback and exit status 1)
                import traceback

                traceback.print_exc()  # to the captured stderr, as a crashing process would
                code = 1
    finally:
        GlobalHydra.instance().clear()
        sys.argv[:] = argv
        logging._handlerList[:] = existing + logging._handlerList
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        # logging as before: Hydra configured the root logger (handlers onto the captured stdout, a train.log)
        for h in root.handlers:
            if h not in root_state[1]:
                h.close()
        root.setLevel(root_state[0])
        root.handlers[:] = root_state[1]
        for name, lg in logging.Logger.manager.loggerDict.items():
            if not isinstance(lg, logging.Logger):
                continue
            level, handlers, propagate, disabled = loggers.get(name, (lg.level, [], lg.propagate, lg.disabled))
            for h in lg.handlers:
                if h not in handlers and isinstance(h, logging.FileHandler):
                    h.close()
            if name in loggers:
                lg.level, lg.handlers[:], lg.propagate, lg.disabled = level, handlers, propagate, disabled
            else:
                lg.handlers[:] = [h for h in lg.handlers if getattr(h, "stream", None) not in (out, err)
                                  and not isinstance(h, logging.FileHandler)]
    return TrainResult(list(args), code, out.getvalue(), err.getvalue())


def only_record(root: Path):
    """The record of the one run under ``root`` (fails if there is not exactly one)."""
    from onebit.records.record import read_record

    (path,) = root.rglob("record.json")
    return read_record(path)


def image_folder(root: Path, splits=("train", "val"), classes=("cat", "dog"), n: int = 3, size=(30, 40),
                 ext: str = "png", seed: int = 0) -> Path:
    """An image tree ``root/<split>/<class>/<i>.<ext>`` (data=folder, data=imagenet) of ``n`` random RGB images per
    class, each ``size`` = (height, width)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / split / c / f"{i}.{ext}")
    return root


# ----------------------------------------------------------------------------------------------------------
# Trained runs, shared by the session: tests that only read a run share one; a test that changes it (trains
# again into its outputs root, edits its files) works on a copy (copy_run), never on the shared one
# ----------------------------------------------------------------------------------------------------------

# a full (non-smoke) run whose validation top-1 peaks before its last epoch: deterministic, full digits epochs,
# a constant learning rate high enough to overshoot (val top-1 per epoch on the development machine: 0.14, 0.45,
# 0.62, 0.60, 0.75, 0.70: the best epoch beats the last by 14 of 270 images; at lr 0.02 and 4 epochs the curve
# rose to its last epoch on one machine and not on another)
TRAINED = ["model.width=4", "epochs=6", "logger=none", "pretrain=none", "trainer.deterministic=true", "threads=1",
           "optimizer.lr=0.1", "scheduler=constant"]


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Every test leaves torch's thread count as it found it: a test that runs a job in this process
    (``jobs.run`` sets torch's threads from ``threads``) would otherwise change it for the tests after it in the
    same worker (one of them compares a job's threads with torch's default)."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def train_once(tmp_path_factory):
    """``train_once(*overrides)``: the record of one run of ``python src/train.py overrides`` (in-process), trained
    once per session for each distinct list of overrides, under its own outputs root in a session tmp dir."""
    done: dict[tuple, object] = {}

    def train(*overrides: str):
        if overrides not in done:
            root = tmp_path_factory.mktemp("trained")
            r = run_train([*overrides, f"output_root={root}"])
            assert r.returncode == 0, r.stderr[-3000:]
            done[overrides] = only_record(root)
        return done[overrides]

    return train


@pytest.fixture(scope="session")
def trained_run(train_once):
    """The shared finished run of TRAINED (read it only; copy_run it to change it)."""
    rec = train_once(*TRAINED)
    assert rec.smoke == [] and rec.status == "finished"
    return rec


def copy_run(rec, dest: Path):
    """A copy of a shared run's whole outputs root (``<output_root>/runs/<date>/<time-uid>``: record, checkpoints,
    index, job folders) at ``dest``, its JSON files' absolute paths moved there; returns the copy's record."""
    import shutil

    from onebit.records.record import read_record

    root = Path(rec.run_dir).parents[2]
    shutil.copytree(root, dest)
    for path in dest.rglob("*.json"):
        text = path.read_text()
        if str(root) in text:
            path.write_text(text.replace(str(root), str(dest)))
    return read_record(dest / Path(rec.run_dir).relative_to(root) / "record.json")


@pytest.fixture
def compose_fn(tmp_path):
    return lambda overrides: compose_cfg(overrides, tmp_path)


def wandb_records(path: Path) -> list:
    """The protobuf Records of a ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks
    of chunks (crc32 4 bytes, length 2, type 1: full, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, out, buf = path.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
    return out


def complete_wandb_log(path: Path, timeout: float = 60) -> list:
    """The records of a ``.wandb`` file once it holds its run's exit record. In-process, ``run.finish()`` can return
    before wandb-core has written the file (wandb 0.31: the 7-byte header right after, the whole file up to a second
    later on a loaded machine); a process that exits has it complete (wandb's exit hook waits for its service)."""
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_records(path) if path.stat().st_size > 7 else []
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"{path} has no exit record {timeout:.0f} s after its run finished"
        time.sleep(0.05)


# ----------------------------------------------------------------------------------------------------------
# Tiers: `pytest -m "not slow"` (a few minutes) and `pytest` (everything, what CI runs)
# ----------------------------------------------------------------------------------------------------------

# a test is slow when it starts a real process (its source, a helper of its module it calls, or a fixture it uses
# runs one: the import of torch + Lightning alone costs ~10 s per process), when it is marked slow, or when it is
# one of these, each measured at over ~5 s (pytest --durations) on a 2-core machine
PROCESS_SOURCE = re.compile(r"\bsubprocess\.(run|Popen|check_output|check_call|call)\b|\bPopen\(|ONEBIT_KILL_AT"
                            r"|subprocess=True|\brun_process\(")
DEF = re.compile(r"^\s*(async\s+)?def\s", re.MULTILINE)
SLOW_TESTS = {
    # launchers and DDP: real worker processes (run_train starts them as a real process, needs_process)
    "test_reliability.py::test_joblib_launcher_matches_sequential", "test_reliability.py::test_submitit_local_launcher",
    "test_reliability.py::test_ddp_two_cpu_processes_one_record",
    "test_bad_input.py::test_valid_hydra_and_lightning_syntax_end_to_end",
    # W&B online without a network: waits out W&B's init timeout
    "test_reliability.py::test_wandb_online_without_network_goes_on_offline",
    "test_reliability.py::test_wandb_online_without_credentials_never_prompts",
    # multiruns of several jobs, full digits epochs, profiler, optuna studies
    "test_reliability.py::test_sweep_is_idempotent_skips_finished_and_retries_failed",
    "test_hydra_cli.py::test_hydra_flags_pass_through_preflight",
    "test_hydra_cli.py::test_optuna_search_runs_trials_and_writes_the_best",
    "test_hydra_cli.py::test_optuna_failed_trial_does_not_stop_the_study",
    "test_hydra_cli.py::test_debug_runs_are_marked_smoke_and_left_out_of_tables",
    "test_one_factor.py::test_multirun_runs_the_five_cells_base_first", "test_one_factor.py::test_tables_of_the_multirun",
    "test_bethge.py::test_tiny_real_multirun_to_table", "test_bethge.py::test_sweep_runs_on_cifar10_files",
    "test_recipes.py::test_two_step_sweep_and_table",
    "test_analysis.py::test_tiny_real_multirun_to_table",
    # measured (--durations, 2 cores shared with other jobs: >= ~7 s there, ~> 3-5 s on an idle machine)
    "test_speed.py::test_compile_matches_plain", "test_speed.py::test_channels_last_every_model",
    "test_speed.py::test_channels_last_matches_plain",
    "test_pipeline.py::test_model_families_train", "test_pipeline.py::test_each_component_combination_trains",
    "test_pipeline.py::test_smoke_run_then_full_run_trains_the_full_run", "test_pipeline.py::test_multirun_from_the_shell",
    "test_pipeline.py::test_wandb_offline_run_config", "test_pipeline.py::test_pretrain_cache_reuse_and_corruption",
    "test_pipeline.py::test_staged_pipeline_pretrain_binary_bn_retrain",
    "test_pipeline.py::test_model_from_record_of_every_stage_including_a_cache_hit",
    "test_data_mnist.py::test_train_script_end_to_end",
    "test_checkpoints_eval.py::test_eval_of_a_cached_twin", "test_checkpoints_eval.py::test_smoke_run_without_validation",
    "test_checkpoints_eval.py::test_eval_best_on_val_from_a_hydra_job_folder",
    "test_reliability.py::test_index_entry_of_another_job_is_ignored",
    "test_reliability.py::test_sweep_summary_tells_states_apart",
    "test_architecture.py::test_a_sign_approximation_is_one_class_and_one_yaml_file",
    "test_efficiency.py::test_exact_counts", "test_efficiency.py::test_cli_efficiency_csv",
    "test_table_formats.py::test_to_wandb_one_offline_run_per_study_with_its_tables",
    "test_table_formats.py::test_markdown_every_table_titled_separated_valid",
    "test_autocast.py::test_train_bf16_mixed", "test_autocast.py::test_bireal18_step_under_autocast",
    "test_export.py::test_measured_table_of_a_run_that_was_not_exported_is_one_line",
    "test_bad_input.py::test_corrupt_checkpoint_on_resume", "test_bethge.py::test_cli_bethge_and_all",
    "test_models.py::test_bireal18_matches_official_code_end_to_end",
    "test_models.py::test_bireal_matches_official_code_block_for_block",
    "test_inference_speedups.py::test_deferred_nonfinite_check_names_the_first_bad_batch_within_its_bound",
    "test_inference_speedups.py::test_cached_weights_follow_every_change_of_the_latent_weights_or_the_component",
    "test_inference_speedups.py::test_nonfinite_loss_on_cpu_stops_at_its_batch",
}


def _source_starts_process(func, module, seen: set, depth: int = 0) -> bool:
    import inspect

    func = inspect.unwrap(func)
    if func in seen:
        return False
    seen.add(func)
    try:
        src = inspect.getsource(func)
        m = DEF.search(src)  # the body, without decorators (parameters naming a launcher start nothing)
        if PROCESS_SOURCE.search(src[m.start():] if m else src):
            return True
    except (OSError, TypeError):
        return False
    if depth >= 3 or module is None:
        return False
    code, names = getattr(func, "__code__", None), set()
    stack = [code] if code else []
    while stack:  # the names it uses, nested functions and comprehensions included
        c = stack.pop()
        names.update(c.co_names)
        stack.extend(k for k in c.co_consts if hasattr(k, "co_names"))
    for name in names:
        obj = getattr(module, name, None)
        if callable(obj) and getattr(obj, "__module__", None) == module.__name__ and hasattr(obj, "__code__"):
            if _source_starts_process(obj, module, seen, depth + 1):
                return True
    return False


def starts_process(item) -> bool:
    """Whether the test (or a fixture it uses) starts a real process, read from the source."""
    seen: set = set()
    if _source_starts_process(item.function, item.module, seen):
        return True
    for name in item.fixturenames:
        for fd in item._fixtureinfo.name2fixturedefs.get(name, ()):
            mod = sys.modules.get(getattr(fd.func, "__module__", ""))
            if mod is not None and mod.__name__ != __name__ and _source_starts_process(fd.func, mod, seen):
                return True
    return False


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") or item.get_closest_marker("fast"):  # decided by the test itself
            continue
        base = item.nodeid.split("[", 1)[0].split("/")[-1]
        if base in SLOW_TESTS or item.nodeid.split("/")[-1] in SLOW_TESTS or starts_process(item):
            item.add_marker(pytest.mark.slow)
    config._onebit_items = [item for item in items if not item.get_closest_marker("slow")]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Name any test that ran a real process of an entry point through run_train/run_process without being
    marked slow (it belongs to the slow tier: add @pytest.mark.slow or name it in SLOW_TESTS)."""
    fast = {item.nodeid for item in getattr(config, "_onebit_items", [])}
    missed = [t for t in PROCESSES if t in fast]
    if missed:
        terminalreporter.write_line("real processes in tests not marked slow: " + ", ".join(missed), yellow=True)


# ----------------------------------------------------------------------------------------------------------
# The other entry points in-process: onebit-eval, onebit-export, onebit-tables, onebit-sync (onebit.cli.*.main)
# ----------------------------------------------------------------------------------------------------------


class CliResult:
    """What a test reads of a command: like subprocess.CompletedProcess (args, returncode, stdout, stderr)."""

    def __init__(self, args, returncode, stdout, stderr):
        self.args, self.returncode, self.stdout, self.stderr = args, returncode, stdout, stderr

    def __repr__(self):
        return f"CliResult(returncode={self.returncode!r}, args={self.args!r})"


def run_cli(main, args, env: dict | None = None, cwd: Path | None = None) -> CliResult:
    """Call a command's ``main(argv)`` (``onebit.cli.eval.main``, ...) in this process as a user's shell would run
    it: ``args`` as strings, stdout and stderr captured, Python's warnings off (as ``PYTHONWARNINGS=ignore``).
    ``env`` is added to the environment for the call (a value of None unsets the variable) and ``cwd`` is the
    working directory during it; both are restored after. An exception escaping ``main`` is a failed test."""
    argv = [str(a) for a in args]
    with as_a_process(env, cwd) as (out, err):
        code = main(argv)
    assert isinstance(code, int), f"main returned {code!r}, not an exit status"
    return CliResult(argv, code, out.getvalue(), err.getvalue())
