"""The per-layer diagnostics of a binary net (onebit.tracking.diagnostics): each value equals an independent count
made by a callback of the test's own (through the callbacks group), they reach the record's history and the
loggers, parameter groups are named by role, and diagnostics=false changes neither the result nor the job."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import compose_cfg
from pytorch_lightning.callbacks import Callback

from onebit.nn.layers import BinaryConv2d
from onebit.records.identity import job_key
from onebit.training import jobs

RUN = ["model.width=4", "epochs=2", "pretrain=none", "threads=1", "trainer.deterministic=true"]
CLIP = 0.05  # small: many latent weights sit at the bound


class Probe(Callback):
    """The test's own count (``+callbacks.probe._target_=test_diagnostics.Probe``), independent of the
    implementation: weights copied at the epoch's start and compared at its end; after validation, the
    validation set run again through the model with pre-hooks counting inputs ``x >= 0`` (sign(0) = +1)."""

    def __init__(self, out: str, clip: float):
        self.out, self.clip, self.epochs, self.plus = Path(out), clip, [], {}

    @staticmethod
    def _layers(pl_module):
        return [(n, m) for n, m in pl_module.model.named_modules() if isinstance(m, BinaryConv2d)]

    def on_train_epoch_start(self, trainer, pl_module):
        self.start = {n: m.weight.detach().clone() for n, m in self._layers(pl_module)}

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        counts: dict[str, list[int]] = {}

        def count(name):
            def hook(module, args):
                c = counts.setdefault(name, [0, 0])
                c[0], c[1] = c[0] + int((args[0] >= 0).sum()), c[1] + args[0].numel()
            return hook

        hooks = [m.register_forward_pre_hook(count(n)) for n, m in self._layers(pl_module)]
        try:
            for x, _ in trainer.val_dataloaders:
                pl_module.model(x.to(pl_module.device))
        finally:
            for h in hooks:
                h.remove()
        self.plus = {n: p / t for n, (p, t) in counts.items()}

    def on_train_epoch_end(self, trainer, pl_module):
        layers = self._layers(pl_module)
        flip = {n: float(((m.weight >= 0) != (self.start[n] >= 0)).double().mean()) for n, m in layers}
        clip = {n: float((m.weight.abs() >= self.clip).double().mean()) for n, m in layers}
        self.epochs.append({"flip": flip, "clip": clip, "plus": self.plus})
        self.out.write_text(json.dumps(self.epochs))


@pytest.mark.slow
def test_every_value_equals_an_independent_count_and_reaches_history_and_logger(tmp_path):
    out = tmp_path / "probe.json"
    cfg = compose_cfg([*RUN, "logger=csv", f"optimizer.latent_weight_clip={CLIP}", "+callbacks.probe._target_="
                       "test_diagnostics.Probe", f"+callbacks.probe.out={out}", f"+callbacks.probe.clip={CLIP}"],
                      tmp_path)
    rec, _ = jobs.run(cfg, tmp_path / "run", set())
    history, probe = rec.stages["binary"].history, json.loads(out.read_text())
    assert len(history) == len(probe) == 2
    for entry, expected in zip(history, probe):
        for kind in ("flip", "clip", "plus"):
            assert len(expected[kind]) == 16  # Bi-Real-18: 16 binary convs
            for layer, value in expected[kind].items():
                assert entry[f"diag/{kind}/{layer}"] == pytest.approx(value, abs=1e-12), (kind, layer)
            mean = sum(expected[kind].values()) / len(expected[kind])
            assert entry[f"diag/{kind}/mean"] == pytest.approx(mean, abs=1e-12)
        assert all(isinstance(v, (int, float)) for v in entry.values())
    assert history[0]["diag/flip/mean"] > 0 and history[0]["diag/clip/mean"] > 0  # the counts can tell
    assert 0.2 < history[-1]["diag/plus/mean"] < 0.8
    (metrics,) = [p for p in tmp_path.rglob("metrics.csv") if p.parent.name == "binary"]
    rows = list(csv.DictReader(metrics.open()))
    logged = [float(r["diag/flip/mean"]) for r in rows if r.get("diag/flip/mean")]
    assert logged == pytest.approx([h["diag/flip/mean"] for h in history])
    assert any(r.get("lr-Adam/binary") for r in rows) and not any("pg1" in k for k in rows[0])  # groups by role



@pytest.mark.slow
def test_without_clip_there_is_no_clip_share(tmp_path):
    rec, _ = jobs.run(compose_cfg([*RUN, "logger=none", "epochs=1"], tmp_path), tmp_path / "run", set())
    keys = set(rec.stages["binary"].history[0])
    assert "diag/flip/mean" in keys and "diag/plus/mean" in keys
    assert not any(k.startswith("diag/clip/") for k in keys)


@pytest.mark.slow
def test_diagnostics_off_changes_neither_the_result_nor_the_job(tmp_path):
    runs = {}
    for on in (True, False):
        cfg = compose_cfg([*RUN, "logger=none", f"diagnostics={str(on).lower()}"], tmp_path / str(on))
        runs[on] = (job_key(cfg), jobs.run(cfg, tmp_path / str(on) / "run", set())[0].stages["binary"])
    assert runs[True][0] == runs[False][0]
    on, off = runs[True][1], runs[False][1]
    assert not any(k.startswith("diag/") for h in off.history for k in h)
    strip = lambda h: {k: v for k, v in h.items() if not k.startswith("diag/") and k != "seconds"}  # noqa: E731
    assert [strip(h) for h in on.history] == [strip(h) for h in off.history]
    assert on.metrics["test/top1"] == off.metrics["test/top1"]
