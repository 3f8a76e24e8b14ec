"""onebit's benchmark: the figures of issue 4/5's performance table, each beside its target (README quotes them).

    python analysis/bench.py                    # every CPU row, and the GPU rows when a GPU is present (~10 min)
    python analysis/bench.py --sweep            # + the bireal_table1 sweep on digits, sequential vs joblib (~25 min)
    python analysis/bench.py --table1-gpu       # + Fashion-MNIST full Table 1 (72 jobs, full 60k) on the GPU
    python analysis/bench.py --only startup     # one part, merged into analysis/bench_results.json

Ratios are medians over repeats measured side by side in one process (interleaved, so machine noise hits both
sides alike). Writes analysis/bench_results.json (machine, date, every part's numbers and the table) and prints:

- training step of Bi-Real-18 (width 64, 32x32, batch 64): binary / its real-valued twin (and the official code's
  straight-through idiom, ``sign.detach() - f.detach() + f``, for comparison);
- one digits epoch through src/train.py's path (Lightning, logging, per-epoch checkpoints) / a minimal hand-written
  PyTorch loop on the same model, data and batch size;
- start-up of ``python src/train.py`` to its first training step; the default run's wall time and peak RSS;
- inference latency in eval mode, batch 1, 224x224, Bi-Real-18 (ImageNet stem, 1000 classes) / its twin, and at
  batch 64 32x32;
- ``channels_last`` and ``torch.compile`` (``analysis/bench_speed.py``), JPEG decoding per core, PIL vs
  ``torchvision.io.decode_jpeg`` (``analysis/bench_data.py``), torch threads for one digits job;
- on a GPU: Bi-Real-18 224x224 training throughput through the pipeline (Classifier + Lightning Trainer, bf16) / a
  hand-written loop, binary / real step; with ``--table1-gpu`` the wall time of Fashion-MNIST's full Table 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import interleaved  # analysis/ is on sys.path when run as a script

from onebit.nn import quantizers as q
from onebit.nn.models import BiRealResNet
from onebit.records.record import read_record

ROOT = Path(__file__).resolve().parents[1]


# -- the official code's straight-through idiom, as components (for comparison only) --------------------------

class OfficialIdiomApproxSign(q.Quantizer):
    """The official BinaryActivation: ``sign(x).detach() - F(x).detach() + F(x)`` with F the ApproxSign
    polynomial, built from masks (several full-size temporaries kept for autograd)."""

    precision = 1

    def forward(self, x):
        out_forward = torch.sign(x)
        mask1, mask2, mask3 = x < -1, x < 0, x < 1
        out1 = (-1) * mask1.type(torch.float32) + (x * x + 2 * x) * (1 - mask1.type(torch.float32))
        out2 = out1 * mask2.type(torch.float32) + (-x * x + 2 * x) * (1 - mask2.type(torch.float32))
        out3 = out2 * mask3.type(torch.float32) + 1 * (1 - mask3.type(torch.float32))
        return out_forward.detach() - out3.detach() + out3


class OfficialIdiomWeight(q.Quantizer):
    """The official HardBinaryConv weight: ``detach(scale * sign(W)) - detach(clamp(W)) + clamp(W)``."""

    precision = 1

    def forward(self, w):
        scale = w.abs().mean(dim=(1, 2, 3), keepdim=True).detach()
        clipped = torch.clamp(w, -1.0, 1.0)
        return (scale * torch.sign(w)).detach() - clipped.detach() + clipped


def _model(sign, weight, width=64, in_channels=3):
    torch.manual_seed(0)
    return BiRealResNet(sign, weight, depth=18, stem="small", width=width, in_channels=in_channels, num_classes=10)


def bench_step(repeats: int) -> dict:
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    models = {
        "binary": _model(q.ApproxSign(), q.MagnitudeAware()),
        "real_twin": _model(q.Clip(), None),
        "official_idiom": _model(OfficialIdiomApproxSign(), OfficialIdiomWeight()),
    }
    opts = {k: torch.optim.Adam(m.parameters(), 1e-3) for k, m in models.items()}

    def step(k):
        def run():
            loss = F.cross_entropy(models[k](x), y)
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            opts[k].step()
        return run

    t = interleaved({k: step(k) for k in models}, repeats)
    infer = {}
    for k in ("binary", "real_twin"):
        models[k].eval()

    def infer_fn(k):
        def run():
            with torch.inference_mode():
                models[k](x)
        return run

    infer = interleaved({k: infer_fn(k) for k in ("binary", "real_twin")}, repeats * 2)
    return {
        "train_step_s": t,
        "binary_over_real": t["binary"] / t["real_twin"],
        "official_idiom_over_real": t["official_idiom"] / t["real_twin"],
        "inference_batch_s": infer,
        "inference_binary_over_real": infer["binary"] / infer["real_twin"],
    }


def bench_threads(repeats: int) -> dict:
    """A digits training step (Bi-Real-18, width 32, batch 64) with 1 and 2 torch threads: how much a single job
    already gains from intra-op parallelism, which bounds what parallel 1-thread jobs can add."""
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    model = _model(q.ApproxSign(), q.MagnitudeAware(), width=32, in_channels=1)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    before = torch.get_num_threads()

    def step(threads):
        def run():
            torch.set_num_threads(threads)
            for _ in range(5):
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return run

    t = interleaved({1: step(1), 2: step(2)}, repeats)
    torch.set_num_threads(before)
    return {"step_s_1_thread": t[1] / 5, "step_s_2_threads": t[2] / 5, "speedup_2_threads": t[1] / t[2],
            "bound_for_2_one_thread_workers": 2 / (t[1] / t[2])}


def _pipeline_epoch(tmp: Path, epochs: int, overrides: tuple[str, ...] = ()) -> float:
    """The median seconds of epochs 2.. of one binary digits run through the pipeline (in-process: compose ->
    onebit.training.jobs.run, as src/train.py; the first epoch includes one-off warm-up)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from onebit.cli.resolvers import register_resolvers
    from onebit.training import jobs

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"output_root={tmp}", "pretrain=none", f"epochs={epochs}",
                                          "resume=false", "logger=csv", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp / "run")
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    rec, _ = jobs.run(cfg, tmp / f"run{time.perf_counter_ns()}", set())
    return statistics.median(h["seconds"] for h in rec.stages["binary"].history[1:])


def bench_diagnostics(repeats: int) -> dict:
    """The cost of the per-layer diagnostics (``diagnostics=true``, the default: flip ratio, +1 share; with
    ``optimizer.latent_weight_clip`` the clip share too) on one digits epoch of the default model through the
    pipeline, against ``diagnostics=false``; runs alternate which goes first."""
    epochs, tmp = 4, Path(tempfile.mkdtemp(prefix="onebit-bench-"))
    clip = "optimizer.latent_weight_clip=1.3"  # both sides clip; only "on" measures the share at the bound
    sides = {"on": ("diagnostics=true", clip), "off": ("diagnostics=false", clip)}
    res: dict[str, list[float]] = {k: [] for k in sides}
    _pipeline_epoch(tmp, 2, sides["off"])  # warm-up: the process's first run pays one-off costs
    for i in range(repeats):
        for side in (("on", "off") if i % 2 == 0 else ("off", "on")):
            res[side].append(_pipeline_epoch(tmp, epochs, sides[side]))
    med = {k: statistics.median(v) for k, v in res.items()}
    return {"epoch_s": med, "on_over_off": med["on"] / med["off"]}


def bench_epoch(repeats: int) -> dict:
    """One digits epoch through the pipeline (:func:`_pipeline_epoch`) vs a hand-written loop (same model, data,
    batch size, Adam, train + validation each epoch)."""
    from onebit.data import DigitsData

    epochs = 4  # the median of epochs 2-4 (the first includes one-off warm-up) of each run
    tmp = Path(tempfile.mkdtemp(prefix="onebit-bench-"))

    def framework():
        return _pipeline_epoch(tmp, epochs)

    data = DigitsData(batch_size=64)
    data.setup("fit")

    def hand_written():
        torch.manual_seed(0)
        model = _model(q.ApproxSign(), q.MagnitudeAware(), width=32, in_channels=1)
        opt = torch.optim.Adam(model.parameters(), 2e-3)
        xtr, ytr = data.splits["train"]
        xva, yva = data.splits["val"]
        per_epoch = []
        for epoch in range(epochs):
            t0 = time.perf_counter()
            model.train()
            g = torch.Generator().manual_seed(epoch)
            perm = torch.randperm(len(xtr), generator=g)
            for i in range(0, len(xtr), 64):
                idx = perm[i:i + 64]
                loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                correct = sum((model(xva[i:i + 64]).argmax(1) == yva[i:i + 64]).sum().item()
                              for i in range(0, len(xva), 64))
            per_epoch.append(time.perf_counter() - t0)
            _ = correct
        return statistics.median(per_epoch[1:])

    res = {"framework": [], "hand_written": []}
    for i in range(repeats):  # alternating which side goes first: neither always gets the warmer process
        for side in (("framework", "hand_written") if i % 2 == 0 else ("hand_written", "framework")):
            res[side].append(framework() if side == "framework" else hand_written())
    med = {k: statistics.median(v) for k, v in res.items()}
    return {"epoch_s": med, "framework_over_hand_written": med["framework"] / med["hand_written"]}


def bench_startup(repeats: int) -> dict:
    """Seconds from `python src/train.py` to its first training step, and peak RSS of the default run."""
    starts = []
    tmp = Path(tempfile.mkdtemp(prefix="onebit-bench-start-"))
    for i in range(repeats):
        t0 = time.time()
        subprocess.run([sys.executable, str(ROOT / "src" / "train.py"), "pretrain=none", "epochs=1",
                        "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
                        "+trainer.limit_test_batches=1", f"output_root={tmp / str(i)}", "resume=false"],
                       check=True, capture_output=True)
        rec = read_record(next((tmp / str(i)).rglob("record.json")))
        starts.append(rec.timings["first_step"] - t0)
    # peak RSS through /usr/bin/time: a child forked straight from this (large) process would count the
    # parent's pages in its own maximum before it execs
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, str(ROOT / "src" / "train.py"),
                        f"output_root={tmp / 'default'}"], capture_output=True, text=True, check=True)
    default_s = time.perf_counter() - t0
    peak_kb = int(r.stderr.strip().splitlines()[-1])
    # the floor any Lightning job pays: a fresh interpreter importing torch and Lightning (with torchmetrics,
    # torchvision, scipy, matplotlib, which Lightning's own imports bring)
    floor = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, pytorch_lightning"], check=True)
        floor.append(time.perf_counter() - t0)
    return {"startup_to_first_step_s": statistics.median(starts), "import_torch_lightning_s": statistics.median(floor),
            "default_run_s": default_s, "default_run_peak_rss_mb": peak_kb / 1024}


def bench_inference(repeats: int) -> dict:
    """Eval-mode latency at batch 1, 224x224, of Bi-Real-18 (ImageNet stem, 1000 classes) and its real-valued twin:
    the binary model binarizes its weights once (``onebit.nn.layers.BinaryConv2d.quantized_weight``)."""
    def model(sign, weight):
        torch.manual_seed(0)
        return BiRealResNet(sign, weight, depth=18, stem="imagenet", width=64, in_channels=3, num_classes=1000).eval()

    models = {"binary": model(q.ApproxSign(), q.MagnitudeAware()), "real_twin": model(q.Clip(), None)}
    x = torch.randn(1, 3, 224, 224)

    def run(k):
        def fn():
            with torch.inference_mode():
                models[k](x)
        return fn

    t = interleaved({k: run(k) for k in models}, repeats * 4, warmup=3)
    return {"latency_s": t, "binary_over_real": t["binary"] / t["real_twin"]}


def bench_sweep() -> dict:
    """bireal_table1 on digits, 18 layers, seed 0 (24 jobs): sequential vs joblib with 2 workers."""
    out = {}
    for launcher in ("basic", "joblib"):
        tmp = Path(tempfile.mkdtemp(prefix=f"onebit-bench-{launcher}-"))
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, str(ROOT / "src" / "train.py"), "-m", "sweeps=bireal_table1", "seed=0",
                            f"launcher={launcher}", "logger=csv", f"output_root={tmp}"], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        recs = [read_record(p) for p in tmp.rglob("record.json")]
        trained = sum(1 for r_ in recs if not r_.stages["pretrain"].cache["hit"])
        out[launcher] = {"wall_s": wall, "jobs": len(recs), "finished": sum(r_.status == "finished" for r_ in recs),
                         "pretrain_trained": trained, "pretrain_reused": len(recs) - trained, "exit": r.returncode}
    out["joblib_speedup"] = out["basic"]["wall_s"] / out["joblib"]["wall_s"]
    return out


def bench_gpu(steps: int = 60, warmup: int = 10, batch: int = 128, device: str = "cuda", size: int = 224) -> dict:
    """On a GPU: Bi-Real-18 (ImageNet stem) at 224x224, bf16 autocast, batch ``batch``, Adam; images/s of
    (a) the pipeline: onebit's Classifier (its training step, latent-weight clipping, non-finite watch) in a
    Lightning Trainer (``precision=bf16-mixed``, as conf/trainer/gpu.yaml), and (b) a hand-written loop on the same
    model and batch; and the binary / real-valued step time (hand-written loops). One batch resident on the GPU, so
    data loading is not measured here (see ``bench_data``). ``device="cpu"`` with a small ``size`` checks the code."""
    import pytorch_lightning as pl
    from omegaconf import OmegaConf

    from onebit.cli.resolvers import register_resolvers
    from onebit.records.recipe import Stage
    from onebit.training.module import Classifier

    register_resolvers()
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)

    def model(kind):
        torch.manual_seed(0)
        sign, weight = (q.ApproxSign(), q.MagnitudeAware()) if kind == "binary" else (q.Clip(), None)
        return BiRealResNet(sign, weight, depth=18, stem="imagenet", width=64, num_classes=1000).to(dev)

    def hand_written(kind):
        m = model(kind)
        opt = torch.optim.Adam(m.parameters(), 1e-3)
        for i in range(warmup + steps):
            if i == warmup:
                sync()
                t0 = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                loss = F.cross_entropy(m(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()
        return (time.perf_counter() - t0) / steps

    def pipeline():
        cfg = OmegaConf.load(ROOT / "conf" / "optimizer" / "adam.yaml")
        config = {"optimizer": OmegaConf.to_container(cfg), "label_smoothing": 0.0,
                  "scheduler": {"_target_": "onebit.nn.optim.constant", "_partial_": True}}
        shape = type("Shape", (), {"in_channels": 3, "num_classes": 1000, "default_width": 64})()
        module = Classifier.for_stage(config, Stage("binary", "binary", 1), shape,
                                      model("binary"))
        marks = {}

        class Clock(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch_, batch_idx):
                if batch_idx == warmup:
                    sync()
                    marks["t0"] = time.perf_counter()

            def on_train_end(self, trainer, pl_module):
                sync()
                marks["t1"] = time.perf_counter()

        trainer = pl.Trainer(accelerator="gpu" if dev.type == "cuda" else "cpu", devices=1, precision="bf16-mixed",
                             max_epochs=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             limit_val_batches=0, callbacks=[Clock()])
        batches = torch.utils.data.DataLoader(_Repeat((x, y), warmup + steps), batch_size=None)
        trainer.fit(module, train_dataloaders=batches)
        return (marks["t1"] - marks["t0"]) / steps

    hw = statistics.median(hand_written("binary") for _ in range(3))
    pipe = statistics.median(pipeline() for _ in range(3))
    real = statistics.median(hand_written("real") for _ in range(3))
    return {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "batch": batch, "size": size,
            "images_per_s": {"pipeline": batch / pipe, "hand_written": batch / hw},
            "pipeline_over_hand_written": hw / pipe, "step_s": {"binary": hw, "real_twin": real},
            "binary_over_real": hw / real}


class _Repeat(torch.utils.data.Dataset):
    """One ready batch, ``n`` times (a DataLoader with ``batch_size=None`` hands it over as it is)."""

    def __init__(self, batch, n: int):
        self.batch, self.n = batch, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.batch


def bench_table1_gpu(data_root: str | None) -> dict:
    """Wall time of Fashion-MNIST's full Table 1 (sweeps=bireal_table1: 24 cells x 3 seeds, full 60k train) on the
    GPU, the jobs sharing it (launcher=joblib, 4 workers)."""
    tmp = Path(tempfile.mkdtemp(prefix="onebit-bench-table1-"))
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), "-m", "sweeps=bireal_table1", "data=fashion_mnist",
           "trainer=gpu", "launcher=joblib", "hydra.launcher.n_jobs=4", "logger=csv", f"output_root={tmp}",
           *([f"data.root={data_root}"] if data_root else [])]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    recs = [read_record(p) for p in tmp.rglob("record.json")]
    return {"wall_s": wall, "jobs": len(recs), "finished": sum(r_.status == "finished" for r_ in recs),
            "exit": r.returncode, "command": " ".join(cmd[1:])}


# the table: (figure, how to read it from the results, target as text, whether it is met)
ROWS = [
    ("digits epoch, pipeline / hand-written loop", lambda r: r["epoch"]["framework_over_hand_written"], "<= 1.05",
     lambda v: v <= 1.05),
    ("digits epoch, diagnostics on / off", lambda r: r["diagnostics"]["on_over_off"], "<= 1.03",
     lambda v: v <= 1.03),
    ("start-up of src/train.py to first step (s)", lambda r: r["startup"]["startup_to_first_step_s"], "<= 5 s",
     lambda v: v <= 5),
    ("binary / real training step (CPU)", lambda r: r["step"]["binary_over_real"], "<= 1.03", lambda v: v <= 1.03),
    ("inference batch 1 224x224, binary / twin (CPU)", lambda r: r["inference"]["binary_over_real"], "<= 1.05",
     lambda v: v <= 1.05),
    ("GPU throughput, pipeline / hand-written", lambda r: r["gpu"]["pipeline_over_hand_written"], ">= 0.95",
     lambda v: v >= 0.95),
    ("GPU: binary / real step", lambda r: r["gpu"]["binary_over_real"], "<= 1.05", lambda v: v <= 1.05),
    ("Fashion-MNIST full Table 1 on one GPU (min)", lambda r: r["table1_gpu"]["wall_s"] / 60, "<= 15 min",
     lambda v: v <= 15),
]


def table(results: dict) -> list[str]:
    """The issue's table filled with these results: one line per figure, "unmeasured" with the reason."""
    gpu = results["machine"].get("gpu")
    lines = [f"{'figure':<48} {'measured':>10}  {'target':<10} verdict"]
    for name, get, target, ok in ROWS:
        try:
            v = get(results)
        except (KeyError, TypeError):
            why = ("no GPU on this machine" if name.startswith(("GPU", "Fashion")) and not gpu else
                   "run with --table1-gpu" if name.startswith("Fashion") else "not run (see --only)")
            lines.append(f"{name:<48} {'unmeasured':>10}  {target:<10} {why}")
            continue
        lines.append(f"{name:<48} {v:>10.3f}  {target:<10} {'meets' if ok(v) else 'MISSES'}")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sweep", action="store_true", help="also time the bireal_table1 sweep on digits (~20 min)")
    p.add_argument("--table1-gpu", action="store_true", help="also time Fashion-MNIST's full Table 1 on the GPU")
    p.add_argument("--data-root", help="data.root for --table1-gpu (default: the data option's own)")
    parts = {"step": lambda: bench_step(args.repeats), "inference": lambda: bench_inference(args.repeats),
             "epoch": lambda: bench_epoch(max(2, args.repeats // 2)), "startup": lambda: bench_startup(3),
             "threads": lambda: bench_threads(args.repeats), "speed": lambda: bench_speed(args.repeats),
             "decode": lambda: bench_decode(), "diagnostics": lambda: bench_diagnostics(max(3, args.repeats)),
             "gpu": bench_gpu, "sweep": bench_sweep,
             "table1_gpu": lambda: bench_table1_gpu(args.data_root)}
    p.add_argument("--only", choices=list(parts), help="run one part and merge it into an existing results file")
    p.add_argument("--out", type=Path, default=ROOT / "analysis" / "bench_results.json")
    args = p.parse_args(argv)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    machine = {"platform": platform.platform(), "processor": _cpu_name(), "cpus": os.cpu_count(),
               "gpu": gpu, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "date": time.strftime("%Y-%m-%d")}
    if args.only:
        results = json.loads(args.out.read_text()) if args.out.exists() else {}
        names = [args.only]
    else:
        results = {}
        names = ["step", "inference", "epoch", "diagnostics", "startup", "threads", "speed", "decode",
                 *(["gpu"] if gpu else []),
                 *(["sweep"] if args.sweep else []), *(["table1_gpu"] if args.table1_gpu and gpu else [])]
    results["machine"] = machine
    for name in names:
        results[name] = parts[name]()
        print(name, json.dumps(results[name], indent=1), flush=True)
    results["table"] = table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"\n{machine['date']}, {machine['processor']} ({machine['cpus']} cores), GPU: {gpu or 'none'}, "
          f"torch {machine['torch']}")
    print("\n".join(results["table"]))
    print(f"wrote {args.out}")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def bench_speed(repeats: int) -> dict:
    """``channels_last`` and ``torch.compile`` (analysis/bench_speed.py)."""
    sys.path.insert(0, str(ROOT / "analysis"))
    from bench_speed import bench_speed as run

    return run(repeats)


def bench_decode() -> dict:
    """JPEG decoding per core, PIL vs torchvision.io.decode_jpeg (analysis/bench_data.py)."""
    sys.path.insert(0, str(ROOT / "analysis"))
    from bench_data import bench_decode as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
