"""onebit's benchmark: distance to the physical limit and to a hand-written loop (issue 5/5).

    python analysis/bench.py                 # everything (about 25 min on 2 CPU cores)
    python analysis/bench.py --skip-sweep    # without the bireal_table1 sweep timings (about 5 min)
    python analysis/bench.py --only threads  # one part, merged into analysis/bench_results.json

Prints, each as a median over repeats measured side by side in one process (interleaved, so machine noise
hits both sides alike), and writes analysis/bench_results.json:

1. training step of Bi-Real-18 (width 64, 32x32 input, batch 64): binary vs its real-valued twin, and the same
   ratio for the straight-through idiom of the official code (``sign.detach() - f.detach() + f``);
2. one epoch on digits through src/train.py's path (Lightning, logging, per-epoch checkpoints) vs a minimal
   hand-written PyTorch loop on the same model, data and batch size;
3. start-up time of ``python src/train.py`` to its first training step, and peak RSS of the default run;
4. wall time of the bireal_table1 sweep on digits (18 layers, 1 seed), sequential vs ``launcher=joblib`` with
   2 workers, and the number of pretraining runs the cache saved;
5. inference latency per batch (eval mode) of the binary model vs the twin.
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

from onebit import quantizers as q
from onebit.models import BiRealResNet
from onebit.records import read_record

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


def interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict:
    """Median seconds of each callable, measured round-robin so that load changes hit all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


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


def bench_epoch(repeats: int) -> dict:
    """One digits epoch through the pipeline (in-process: compose -> onebit.jobs.run, as src/train.py) vs a
    hand-written loop (same model, data, batch size, Adam, train + validation each epoch)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from onebit import jobs
    from onebit.config import register_resolvers
    from onebit.data import DigitsData

    register_resolvers()
    epochs = 3
    tmp = Path(tempfile.mkdtemp(prefix="onebit-bench-"))

    def framework():
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[f"output_root={tmp}", "pretrain=none", f"epochs={epochs}",
                                              "resume=false", "logger=csv"], return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp / "run")
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        rec, _ = jobs.run(cfg, tmp / f"run{time.perf_counter_ns()}", set())
        hist = rec.stages["binary"].history
        return statistics.median(h["seconds"] for h in hist[1:])  # epoch 0 includes one-off warm-up

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
    for _ in range(repeats):
        res["framework"].append(framework())
        res["hand_written"].append(hand_written())
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
    return {"startup_to_first_step_s": statistics.median(starts), "default_run_s": default_s,
            "default_run_peak_rss_mb": peak_kb / 1024}


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--only", choices=["step", "threads", "epoch", "startup", "sweep"],
                   help="run one part and merge it into an existing results file")
    p.add_argument("--out", type=Path, default=ROOT / "analysis" / "bench_results.json")
    args = p.parse_args(argv)
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                           "threads": torch.get_num_threads()}}
    parts = {"step": lambda: bench_step(args.repeats), "threads": lambda: bench_threads(args.repeats),
             "epoch": lambda: bench_epoch(max(1, args.repeats // 2)), "startup": lambda: bench_startup(3),
             "sweep": bench_sweep}
    if args.only:
        results = json.loads(args.out.read_text()) if args.out.exists() else results
        results[args.only] = parts[args.only]()
        print(args.only, json.dumps(results[args.only], indent=1), flush=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        return 0
    for name in ("step", "threads", "epoch", "startup", *(() if args.skip_sweep else ("sweep",))):
        results[name] = parts[name]()
        print(name, json.dumps(results[name], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.out)
    s, e, st = results["step"], results["epoch"], results["startup"]
    print(f"\nbinary/real train step     {s['binary_over_real']:.3f}  (official idiom {s['official_idiom_over_real']:.3f}; "
          f"binary {s['train_step_s']['binary']*1e3:.0f} ms, real {s['train_step_s']['real_twin']*1e3:.0f} ms)")
    print(f"framework/hand-written epoch {e['framework_over_hand_written']:.3f}  "
          f"({e['epoch_s']['framework']:.2f} s vs {e['epoch_s']['hand_written']:.2f} s)")
    print(f"start-up to first step      {st['startup_to_first_step_s']:.1f} s;  default run {st['default_run_s']:.1f} s, "
          f"peak RSS {st['default_run_peak_rss_mb']:.0f} MB")
    print(f"inference binary/real       {s['inference_binary_over_real']:.3f}")
    th = results["threads"]
    print(f"digits step 1 vs 2 threads  {th['step_s_1_thread']*1e3:.0f} vs {th['step_s_2_threads']*1e3:.0f} ms "
          f"(x{th['speedup_2_threads']:.2f}; 2 one-thread workers can gain at most x{th['bound_for_2_one_thread_workers']:.2f})")
    if "sweep" in results:
        sw = results["sweep"]
        print(f"bireal_table1 sweep (seed 0) sequential {sw['basic']['wall_s']:.0f} s, joblib x2 {sw['joblib']['wall_s']:.0f} s "
              f"(speedup {sw['joblib_speedup']:.2f}); pretraining runs saved by the cache: {sw['basic']['pretrain_reused']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
