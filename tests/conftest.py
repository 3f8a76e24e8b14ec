"""Shared fixtures: compose onebit's real Hydra config (no mocks) with small, fast settings."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
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


def run_train(args: list[str], cwd: Path = ROOT, env: dict | None = None, timeout: float = 600):
    """Run `python src/train.py args` as a user would; returns the CompletedProcess."""
    e = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "src" / "train.py"), *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=timeout)


def only_record(root: Path):
    """The record of the one run under ``root`` (fails if there is not exactly one)."""
    from onebit.records.record import read_record

    (path,) = root.rglob("record.json")
    return read_record(path)


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
