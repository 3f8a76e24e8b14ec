"""Faults injected for real: a SIGKILLed run resumed to identical metrics, idempotent sweeps (skip / resume /
retry), DDP on 2 CPU processes, parallel launchers, determinism, unreachable W&B."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path


from conftest import ROOT, run_train
from onebit.records import read_record

# small but long enough to be killed mid-training: full digits epochs, 8-wide Bi-Real-18, deterministic
STEADY = ["model.width=8", "logger=none", "pretrain=none", "trainer.deterministic=true", "threads=1"]


def records(root: Path) -> list[dict]:
    return [read_record(p) for p in sorted(root.rglob("record.json"))]


def metrics(rec: dict, stage: str = "binary") -> dict:
    m = rec["stages"][stage]["metrics"]
    return {k: v for k, v in m.items() if not k.startswith("lr-")}


def test_sigkill_then_same_command_resumes_to_identical_metrics(tmp_path):
    args = [*STEADY, "epochs=6"]
    ref = run_train([*args, f"output_root={tmp_path / 'a'}"])
    assert ref.returncode == 0, ref.stderr[-2000:]
    (expected,) = records(tmp_path / "a")

    root = tmp_path / "b"
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), *args, f"output_root={root}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(root.glob("runs/*/*/checkpoints/binary/last.ckpt")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (killed,) = records(root)
    assert killed["status"] == "running"  # really interrupted mid-training
    import torch
    ckpt = Path(killed["run_dir"]) / "checkpoints" / "binary" / "last.ckpt"
    done_epochs = torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"] + 1

    again = run_train([*args, f"output_root={root}"])
    assert again.returncode == 0, again.stderr[-2000:]
    (resumed,) = records(root)
    assert resumed["run_dir"] == killed["run_dir"] and resumed["attempts"] == 2
    assert resumed["stages"]["binary"]["resumed_from"].endswith("checkpoints/binary/last.ckpt")
    assert 1 <= done_epochs < 6  # the resumed run really had epochs left to train
    assert metrics(resumed) == metrics(expected)  # exactly, not approximately
    assert [h["val/top1"] for h in resumed["stages"]["binary"]["history"]] == \
        [h["val/top1"] for h in expected["stages"]["binary"]["history"]]


def _image_folder(root: Path) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (40, 40), (i * 40, 80 if c == "a" else 200, 0)).save(root / split / c / f"{i}.png")


def test_sweep_is_idempotent_skips_finished_and_retries_failed(tmp_path):
    good, missing = tmp_path / "good", tmp_path / "missing"
    _image_folder(good)
    common = ["-m", "data=folder", f"data.root={good},{missing}", "model.width=4", "epochs=1", "logger=none",
              "pretrain=none", f"output_root={tmp_path}", "study=idem"]
    first = run_train(common)
    assert first.returncode == 1 and "onebit sweep: 1 finished, 1 failed" in first.stdout, first.stderr[-2000:]
    assert "does not exist" in first.stdout + first.stderr or str(missing) in first.stdout + first.stderr
    _image_folder(missing)  # fix the cause of the failure
    second = run_train(common)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "onebit sweep: 2 finished (1 skipped: finished before), 0 failed" in second.stdout
    recs = records(tmp_path)
    assert len(recs) == 2 and all(r["status"] == "finished" for r in recs)
    retried = next(r for r in recs if r["config"]["data"]["root"] == str(missing))
    assert retried["attempts"] == 2
    third = run_train(common)
    assert "onebit sweep: 2 finished (2 skipped: finished before), 0 failed" in third.stdout


def test_ddp_two_cpu_processes_one_record(tmp_path):
    r = run_train(["trainer=ddp", "trainer.devices=2", "model.width=4", "epochs=1", "pretrain=clip",
                   "logger=wandb", "logger.mode=offline", "+trainer.limit_train_batches=4",
                   "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2", f"output_root={tmp_path}"],
                  timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = records(tmp_path)
    assert len(recs) == 1 and recs[0]["status"] == "finished"
    assert list(recs[0]["stages"]) == ["pretrain", "binary"]
    assert recs[0]["config"]["trainer"]["strategy"] == "ddp"
    run_dirs = [p for p in (tmp_path / "runs").glob("*/*") if p.is_dir()]
    assert len(run_dirs) == 1  # one output directory
    wandb_runs = sorted(p.name for p in (run_dirs[0] / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2  # one W&B run per stage, from rank zero only


def _sweep(tmp_path: Path, launcher: str) -> dict:
    r = run_train(["-m", "sign=approx,ste", f"launcher={launcher}", *STEADY, "epochs=2",
                   "+trainer.limit_train_batches=5", f"output_root={tmp_path / launcher}"], timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "onebit sweep: 2 finished, 0 failed" in r.stdout
    return {rec["options"]["sign"]: metrics(rec) for rec in records(tmp_path / launcher)}


def test_joblib_launcher_matches_sequential(tmp_path):
    assert _sweep(tmp_path, "joblib") == _sweep(tmp_path, "basic")


def test_submitit_local_launcher(tmp_path):
    out = _sweep(tmp_path, "submitit_local")
    assert set(out) == {"approx", "ste"}


def test_same_seed_same_metrics(tmp_path):
    args = [*STEADY, "epochs=1", "+trainer.limit_train_batches=5", "resume=false", f"output_root={tmp_path}"]
    for _ in range(2):
        assert run_train(args).returncode == 0
    a, b = records(tmp_path)
    assert metrics(a) == metrics(b)


def test_wandb_online_without_network_goes_on_offline(tmp_path):
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    r = run_train(["logger=wandb", "logger.mode=online", "logger.init_timeout=5", "model.width=4", "epochs=1",
                   "pretrain=none", "+trainer.limit_train_batches=2", f"output_root={tmp_path}"], env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "logging offline" in r.stderr
    (rec,) = records(tmp_path)
    assert rec["status"] == "finished" and rec["wandb"]["binary"]["mode"] == "offline"


def test_wandb_online_without_credentials_never_prompts(tmp_path):
    env = {"WANDB_MODE": "online", "HOME": str(tmp_path), "WANDB_API_KEY": ""}
    r = run_train(["logger=wandb", "logger.mode=online", "model.width=4", "epochs=1", "pretrain=none",
                   "+trainer.limit_train_batches=2", f"output_root={tmp_path / 'o'}"], env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no W&B API key" in r.stderr
