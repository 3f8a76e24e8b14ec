"""``hydra.job.chdir=true`` (issue 22): Hydra runs each job inside its own job directory, yet every relative path a
job reads or writes (the default output root, ``output_root=``, ``cache_dir=``, ``data.root=``) is the directory's the
command was started in: the job index, resume ("skipped: finished before") and the pretrain cache keep working."""

from __future__ import annotations

from pathlib import Path

from conftest import TINY_FULL, image_folder, run_train

from onebit.records.record import read_record

CHDIR = [*TINY_FULL, "hydra.job.chdir=true"]


def _records(root: Path) -> list:
    return [read_record(p) for p in sorted(root.rglob("record.json"))]


def _index(root: Path) -> list[Path]:
    """The job index's entries (``<key>.json``; not its lock holders)."""
    return [p for p in (root / "index").glob("*.json") if not p.name.endswith(".holder.json")]


def _ok(r) -> None:
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])


def test_relative_output_root_with_chdir_is_the_launch_directorys_and_resumes(tmp_path):
    args = [*CHDIR, "pretrain=none", "output_root=rel_out"]
    first = run_train(args, cwd=tmp_path)
    _ok(first)
    root = tmp_path / "rel_out"
    (rec,) = _records(root)
    assert rec.status == "finished" and rec.config["output_root"] == str(root)
    assert Path(rec.run_dir).is_relative_to(root)
    assert len(_index(root)) == 1
    assert [p for p in root.rglob("rel_out")] == []  # nothing written under a job's own directory
    again = run_train(args, cwd=tmp_path)
    _ok(again)
    assert "skipped: this job finished before" in again.stdout
    assert len(_records(root)) == 1  # trained nothing


def test_default_output_root_with_chdir_is_outputs_of_the_launch_directory(tmp_path):
    args = [*CHDIR, "pretrain=none"]
    env = {"ONEBIT_OUTPUTS": None, "ONEBIT_CACHE": None}
    _ok(run_train(args, cwd=tmp_path, env=env))
    root = tmp_path / "outputs"
    (rec,) = _records(root)
    assert rec.config["output_root"] == str(root) and rec.config["cache_dir"] == str(root / "cache")
    assert [p for p in root.rglob("outputs")] == [] and sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]
    again = run_train(args, cwd=tmp_path, env=env)
    _ok(again)
    assert "skipped: this job finished before" in again.stdout and len(_records(root)) == 1


def test_relative_cache_dir_with_chdir_is_shared_by_the_jobs_of_a_sweep(tmp_path):
    """Two jobs that differ in ``sign`` share one pretrained twin: the second one's pretraining is a cache hit."""
    out = tmp_path / "out"
    r = run_train(["-m", *CHDIR, "pretrain.epochs=1", "sign=approx,ste", f"output_root={out}", "cache_dir=rel_cache"],
                  cwd=tmp_path)
    _ok(r)
    records = _records(out)
    assert len(records) == 2 and {rec.config["cache_dir"] for rec in records} == {str(tmp_path / "rel_cache")}
    hits = sorted(s.cache["hit"] for rec in records for s in rec.stages.values() if s.cache)
    assert hits == [False, True]
    assert len([p for p in (tmp_path / "rel_cache" / "pretrain").iterdir() if p.is_dir()]) == 1
    assert [p for p in out.rglob("rel_cache")] == []


def test_relative_data_root_with_chdir_is_read_from_the_launch_directory(tmp_path):
    image_folder(tmp_path / "imgs")
    args = [*CHDIR, "pretrain=none", "data=folder", "data.root=imgs", "data.num_workers=0", "data.image_size=8",
            f"output_root={tmp_path / 'out'}"]
    _ok(run_train(args, cwd=tmp_path))
    (rec,) = _records(tmp_path / "out")
    assert rec.status == "finished" and rec.config["data"]["root"] == "imgs"  # as typed: the job's identity
    assert 0.0 <= rec.final_stage.metrics["val/top1_best"] <= 1.0


def test_joblib_workers_with_chdir_share_the_relative_output_root(tmp_path):
    """A launcher whose jobs run in other processes (joblib's workers) sees the same absolute paths."""
    args = ["-m", *CHDIR, "pretrain=none", "launcher=joblib", "sign=approx,ste", "output_root=rel_out"]
    _ok(run_train(args, cwd=tmp_path))
    root = tmp_path / "rel_out"
    records = _records(root)
    assert len(records) == 2 and {rec.config["output_root"] for rec in records} == {str(root)}
    assert len(_index(root)) == 2 and [p for p in root.rglob("rel_out")] == []
    again = run_train(args, cwd=tmp_path)
    _ok(again)
    assert len(_records(root)) == 2
