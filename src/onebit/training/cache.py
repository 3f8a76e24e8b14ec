"""The pretrain cache: each real-valued twin is trained once per content hash (``onebit.records.identity.pretrain_key``)
and shared by every job, sweep and study that needs it.

``<cache_dir>/pretrain/<key>/{weights.pt, meta.json}``: ``meta.json`` is written last and holds the weights'
sha256 and the key they were trained for, so an entry is either complete and verified or treated as absent (and
rebuilt). Verified means intact (the checksum) and the right twin: an entry whose ``meta.json`` names another key
(a cache directory copied or restored under another twin's name) or none is damaged like a torn one, named in one
line and rebuilt. A file lock per key makes concurrent jobs that need the same twin train it once.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import torch
from filelock import FileLock

from onebit.core.files import atomic_write, atomic_write_json
from onebit.core.killpoints import kill_point

log = logging.getLogger("onebit")


class PretrainCache:
    def __init__(self, root: Path | str):
        self.root = Path(root) / "pretrain"

    def lock(self, key: str):
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / f"{key}.lock"))

    def load(self, key: str) -> dict | None:
        """``{"state_dict": ..., **meta}`` of a complete, verified entry of this ``key``; ``None`` if absent,
        corrupt or another twin's (a damaged entry is reported in one line and invalidated, so the caller rebuilds
        it)."""
        entry = self.root / key
        meta_path = entry / "meta.json"
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("key") != key:  # the weights are intact, but another twin's: never load them for this one
                raise ValueError(f"it holds the twin of key {meta.get('key')!r}, not {key!r}: copied or restored "
                                 "under another twin's name")
            blob = (entry / "weights.pt").read_bytes()
            digest = hashlib.sha256(blob).hexdigest()
            if digest != meta["sha256"]:
                raise ValueError(f"sha256 mismatch ({digest[:12]} != {meta['sha256'][:12]})")
            state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception as e:
            log.warning("pretrain cache entry %s is damaged (%s); rebuilding it", entry, e)
            meta_path.unlink(missing_ok=True)
            return None
        return {"state_dict": state, **meta}

    def save(self, key: str, state_dict: dict, meta: dict) -> Path:
        """Write the weights, then the metadata with their checksum (the entry exists once meta.json does)."""
        entry = self.root / key
        (entry / "meta.json").unlink(missing_ok=True)
        buffer = io.BytesIO()
        torch.save(state_dict, buffer)
        blob = buffer.getvalue()
        atomic_write(entry / "weights.pt", lambda f: f.write(blob))
        kill_point("cache_save")
        atomic_write_json(entry / "meta.json", {**meta, "sha256": hashlib.sha256(blob).hexdigest(), "key": key})
        return entry
