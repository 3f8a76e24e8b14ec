"""The typed, versioned run record: round trip, migration of every older layout (the committed example records),
field-by-field validation naming the file and field, and files created with the user's umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import ROOT

from onebit.core.files import atomic_write_json
from onebit.records.record import SCHEMA, CorruptRecordError, RunRecord, StageRecord, read_record

EXAMPLE = ROOT / "tests" / "data" / "digits_schema1"  # the founding session's bireal_table1 sweep on digits


def _record(tmp_path: Path) -> RunRecord:
    return RunRecord.start(tmp_path, job_key="k" * 16, study="s", options={"sign": "approx"},
                           config={"seed": 0, "trainer": {"limit_train_batches": 3}},
                           stages=[StageRecord("pretrain", "twin", init="cache", epochs=2),
                                   StageRecord("binary", "binary", init="pretrain", epochs=2)])


def test_round_trip_and_methods(tmp_path):
    rec = _record(tmp_path)
    assert rec.smoke == ["trainer.limit_train_batches=3"] and len(rec.run_id) == 12
    rec.update_stage("binary", status="finished", metrics={"test/top1": 0.5}, history=[{"epoch": 0, "val/top1": 0.4}])
    rec.finish("finished")
    back = read_record(tmp_path / "record.json")
    assert back == rec and back.schema == SCHEMA and list(back.stages) == ["pretrain", "binary"]
    assert back.final_stage.name == "binary" and back.final_stage.metrics == {"test/top1": 0.5}
    with pytest.raises(AttributeError, match="no field 'metric'"):
        rec.update_stage("binary", metric={})


def test_failed_run_marks_its_running_stage_failed(tmp_path):
    rec = _record(tmp_path)
    rec.update_stage("pretrain", status="running")
    rec.finish("failed", error="ValueError: boom")
    back = read_record(tmp_path / "record.json")
    assert (back.status, back.error, back.stages["pretrain"].status, back.stages["binary"].status) == \
        ("failed", "ValueError: boom", "failed", "pending")


@pytest.mark.parametrize("change,field", [
    (lambda d: d["stages"]["binary"]["metrics"].update({"test/top1": "0.9"}), "metrics"),
    (lambda d: d.update(status="done"), "status"),
    (lambda d: d.update(options=[1, 2]), "options"),
    (lambda d: d["stages"]["binary"].update(epochs="2"), "epochs"),
    (lambda d: d.pop("job_key"), "job_key"),
    (lambda d: d["stages"]["binary"]["history"].append({"val/top1": 0.1}), "history"),
])
def test_wrong_typed_fields_are_named(tmp_path, change, field):
    rec = _record(tmp_path)
    data = rec.to_dict()
    change(data)
    atomic_write_json(tmp_path / "record.json", data)
    with pytest.raises(CorruptRecordError) as e:
        read_record(tmp_path / "record.json")
    assert str(tmp_path / "record.json") in str(e.value) and repr(field) in str(e.value)


def test_truncated_and_foreign_files(tmp_path):
    (tmp_path / "a.json").write_text('{"schema": 2, "job_')
    with pytest.raises(CorruptRecordError, match="corrupt or truncated"):
        read_record(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"hello": 1}')
    with pytest.raises(CorruptRecordError, match="not a onebit record"):
        read_record(tmp_path / "b.json")
    (tmp_path / "c.json").write_text(json.dumps({"schema": SCHEMA + 1}))
    with pytest.raises(CorruptRecordError, match="newer than this onebit"):
        read_record(tmp_path / "c.json")


def test_committed_schema1_examples_migrate():
    paths = sorted(EXAMPLE.rglob("record.json"))
    assert len(paths) == 72 and json.loads(paths[0].read_text())["schema"] == 1
    records = [read_record(p) for p in paths]
    for rec in records:
        assert rec.status == "finished" and list(rec.stages) == ["pretrain", "binary"]
        assert rec.stages["binary"].init == "pretrain" and rec.stages["pretrain"].init == "cache"
        assert rec.smoke == [] and rec.final_stage.metrics["test/top1"] > 0.5
    # schema 1 stored train/* one epoch late; migrated, epoch e holds epoch e's (the last = the final metrics)
    old = json.loads(paths[0].read_text())["stages"]["binary"]
    new = read_record(paths[0]).stages["binary"]
    assert "train/loss" not in old["history"][0]
    assert new.history[0]["train/loss"] == old["history"][1]["train/loss"]
    assert new.history[-1]["train/loss"] == old["metrics"]["train/loss"]
    assert len({r.run_id for r in records}) == 72


def test_files_respect_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        rec = _record(tmp_path)
        from onebit.training.jobs import JobIndex

        JobIndex(tmp_path).set("k" * 16, tmp_path)
    finally:
        os.umask(old)
    figure, table = _figure_and_table(tmp_path, 0o002)
    for path in (rec.path, tmp_path / "index" / f"{'k' * 16}.json", figure, table):
        assert stat.S_IMODE(path.stat().st_mode) == 0o664, path


def _figure_and_table(tmp_path: Path, umask: int) -> tuple[Path, Path]:
    """A figure through analysis/plots.py and a table through analysis/tables.py, written under ``umask``."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    script = ("import os, sys; os.umask(%d); sys.argv = sys.argv[1:]; import runpy; "
              "runpy.run_path(sys.argv[0], run_name='__main__')" % umask)
    for tool, args in (("plots.py", ["signs", "--out", str(tmp_path / "fig")]),
                       ("tables.py", ["efficiency", "--format", "csv", "--out", str(tmp_path / "tab")])):
        r = subprocess.run([sys.executable, "-c", script, str(ROOT / "analysis" / tool), *args], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
    return tmp_path / "fig" / "signs.png", next((tmp_path / "tab").glob("*.csv"))
