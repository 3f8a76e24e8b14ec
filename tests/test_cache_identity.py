"""The pretrain cache trusts an entry for its identity, not only its checksum: an intact entry of another twin, copied
or restored under this twin's key, is named in one line and retrained, never loaded (onebit.training.cache)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil

import torch
from conftest import TINY_FULL, compose_cfg, only_record, run_train

from onebit.records.identity import pretrain_key
from onebit.training.cache import PretrainCache


def test_an_entry_of_another_twin_is_retrained_not_loaded(tmp_path):
    cache = tmp_path / "cache"
    common = [*TINY_FULL, f"cache_dir={cache}"]
    a = run_train([*common, "pretrain=relu", f"output_root={tmp_path / 'a'}"])
    assert a.returncode == 0, a.stderr[-3000:]
    rec_a = only_record(tmp_path / "a")
    key_a = rec_a.stages["pretrain"].cache["key"]
    key_b = pretrain_key(compose_cfg([*common, "pretrain=clip"], tmp_path / "compose"))
    assert key_b != key_a and not (cache / "pretrain" / key_b).exists()

    # a copied (or restored) entry: intact, so its checksum alone would pass, but it is the twin of key_a
    shutil.copytree(cache / "pretrain" / key_a, cache / "pretrain" / key_b)
    meta = json.loads((cache / "pretrain" / key_b / "meta.json").read_text())
    assert meta["key"] == key_a
    assert meta["sha256"] == hashlib.sha256((cache / "pretrain" / key_b / "weights.pt").read_bytes()).hexdigest()

    b = run_train([*common, "pretrain=clip", f"output_root={tmp_path / 'b'}"])
    assert b.returncode == 0, b.stderr[-3000:]
    rec_b = only_record(tmp_path / "b")
    twin = rec_b.stages["pretrain"]
    # retrained by this job (a miss), not reused from the run that trained key_a
    assert twin.cache["key"] == key_b and twin.cache["hit"] is False and twin.cache["trained_by"] == rec_b.run_dir
    assert twin.status == "finished" and len(twin.history) == twin.epochs == 1
    lines = [line for line in (b.stdout + b.stderr).splitlines() if "pretrain cache entry" in line]
    assert len(lines) == 1, lines
    assert str(cache / "pretrain" / key_b) in lines[0] and f"twin of key '{key_a}', not '{key_b}'" in lines[0]
    assert "rebuilding it" in lines[0]

    # the entry under key_b is now key_b's own twin, and the binary net was initialised from it, not from key_a's
    entry_a, entry_b = PretrainCache(cache).load(key_a), PretrainCache(cache).load(key_b)
    assert entry_b["key"] == key_b and entry_b["trained_by"] == rec_b.run_dir
    assert entry_a["key"] == key_a and entry_a["trained_by"] == rec_a.run_dir  # the original is untouched
    assert entry_b["sha256"] != entry_a["sha256"]
    assert rec_b.stages["binary"].transfer["sha256"] != rec_a.stages["binary"].transfer["sha256"]

    # and it is trusted: the next job of that twin reuses it (a hit, trained by the job above)
    c = run_train([*common, "pretrain=clip", "sign=ste", f"output_root={tmp_path / 'c'}"])
    assert c.returncode == 0, c.stderr[-3000:]
    reused = only_record(tmp_path / "c").stages["pretrain"]
    assert reused.cache["key"] == key_b and reused.cache["hit"] is True
    assert reused.cache["trained_by"] == rec_b.run_dir and reused.metrics == twin.metrics
    assert "pretrain cache entry" not in c.stdout + c.stderr


def test_an_entry_that_names_no_key_or_another_is_not_loaded(tmp_path, caplog):
    cache = PretrainCache(tmp_path)
    weights = {"w": torch.arange(4.0)}
    cache.save("k1", weights, {"seconds": 1.0})
    assert torch.equal(cache.load("k1")["state_dict"]["w"], weights["w"])  # its own key: loaded
    meta_path = tmp_path / "pretrain" / "k1" / "meta.json"
    for claimed in ("k2", None):
        meta = {k: v for k, v in json.loads(meta_path.read_text()).items() if k != "key"}
        meta_path.write_text(json.dumps({**meta, **({"key": claimed} if claimed else {})}))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="onebit"):
            assert cache.load("k1") is None
        (line,) = [r.getMessage() for r in caplog.records if "pretrain cache entry" in r.getMessage()]
        assert f"twin of key {claimed!r}, not 'k1'" in line and str(tmp_path / "pretrain" / "k1") in line
        assert not meta_path.exists()  # invalidated, as a checksum mismatch is: the caller rebuilds it
        cache.save("k1", weights, {"seconds": 1.0})
