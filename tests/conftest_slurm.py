"""The ``slurm_cluster`` fixture: a real single-node SLURM cluster (tests/cluster/start_slurm.sh: Debian's slurm-wlm
and munge, installed with apt-get if missing), started once per test session and stopped at its end, for the tests
marked ``slurm`` (tests/test_slurm.py imports it).

The cluster lives in one state directory (``$ONEBIT_SLURM_STATE``, default /tmp/onebit-slurm, the scripts'
default). Under ``pytest -n auto`` every xdist worker uses the fixture: a lock serializes start and stop, each
worker registers itself in ``<state>/users/``, and the daemons are stopped by the last worker of the session that
started them; daemons that were already running (a developer's ``start_slurm.sh``) are used and left running.
If the cluster cannot start, every test that needs it fails with the script's one line (never a skip)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from filelock import FileLock

CLUSTER = Path(__file__).resolve().parent / "cluster"
STATE = Path(os.environ.get("ONEBIT_SLURM_STATE", "/tmp/onebit-slurm"))
DAEMONS = ("munged", "slurmctld", "slurmd")
START_TIMEOUT_S = 600  # apt-get install of slurm-wlm and munge on a bare machine: ~1 min; the daemons: seconds


def _running(daemon: str) -> bool:
    try:
        pid = int((STATE / f"{daemon}.pid").read_text())
        return Path(f"/proc/{pid}/comm").read_text().strip() == daemon
    except (OSError, ValueError):
        return False


def _live_users() -> list[Path]:
    users = []
    for f in (STATE / "users").glob("*"):
        if Path(f"/proc/{f.name}").exists():
            users.append(f)
        else:
            f.unlink(missing_ok=True)  # a worker that died without its teardown
    return users


@pytest.fixture(scope="session")
def slurm_cluster():
    """``SLURM_CONF`` of the running test cluster, set in this process's environment for the session."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())  # this pytest session, all of its workers
    (STATE / "users").mkdir(parents=True, exist_ok=True)
    lock, me, owner = FileLock(str(STATE) + ".lock"), STATE / "users" / str(os.getpid()), STATE / "owner"
    with lock:
        before = all(_running(d) for d in DAEMONS)
        r = subprocess.run([str(CLUSTER / "start_slurm.sh"), str(STATE)], capture_output=True, text=True,
                           timeout=START_TIMEOUT_S, check=False)
        if r.returncode != 0:
            lines = r.stderr.strip().splitlines() or [f"exit status {r.returncode}"]
            pytest.fail(f"SLURM test cluster did not start: {lines[-1]}", pytrace=False)
        if not before:
            owner.write_text(run)  # this session started the daemons: its last worker stops them
        me.touch()
    conf = r.stdout.strip().splitlines()[-1].removeprefix("export SLURM_CONF=")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    try:
        yield conf
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        with lock:
            me.unlink(missing_ok=True)
            if not _live_users() and owner.exists() and owner.read_text() == run:
                subprocess.run([str(CLUSTER / "stop_slurm.sh"), str(STATE)], check=False, timeout=60)
                owner.unlink()
