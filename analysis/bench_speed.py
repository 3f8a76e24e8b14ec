"""The speed options (onebit.nn.speed: ``channels_last``, ``compile``) measured on Bi-Real-18.

    python analysis/bench_speed.py                 # CPU, and CUDA (bf16 autocast) when a GPU is present
    python analysis/bench_speed.py --repeats 9 --out speed.json

Bi-Real-18 (ApproxSign, MagnitudeAware; small stem, width 64, 32x32 input, batch 64, Adam), as ``bench_step`` of
analysis/bench.py: a training step (forward, loss, backward, optimizer step) and eval-mode inference of the batch
(``torch.inference_mode``), for four variants of one model: ``plain``, ``channels_last``, ``compiled``
(``torch.compile``, default mode) and ``both``. Each figure is a median over ``repeats`` rounds measured round-robin
(interleaved, so machine noise hits all variants alike), with its ratio to ``plain`` (< 1: faster).

Compile time is reported apart: the first call of a compiled variant in each mode (train, eval) minus a later
call, with Inductor's on-disk cache empty (``cold``: a fresh temporary cache directory, what a first run on a machine
pays) and once more for ``compiled`` after ``torch._dynamo.reset()`` with that cache filled (``warm``: what every
later job with the same model and shapes pays; a job compiles once per stage and mode).

On CUDA the steps run under ``torch.autocast("cuda", dtype=torch.bfloat16)`` (Lightning's ``bf16-mixed``) and
every timed call ends with ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import interleaved  # noqa: E402  (analysis/ is on sys.path when run as a script)

from onebit.nn import quantizers as q
from onebit.nn.models import BiRealResNet
from onebit.nn.speed import apply_speed_options

VARIANTS = {"plain": (False, False), "channels_last": (True, False), "compiled": (False, True), "both": (True, True)}


def _model(width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return BiRealResNet(q.ApproxSign(), q.MagnitudeAware(), depth=18, stem="small", width=width, num_classes=10)


def _timed(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def bench_device(device: str, repeats: int = 5, width: int = 64, batch: int = 64, size: int = 32) -> dict:
    """The four variants on one device (see the module docstring)."""
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else nullcontext
    base = _model(width).to(device)
    models = {k: apply_speed_options(copy.deepcopy(base), channels_last=cl, compile=c)
              for k, (cl, c) in VARIANTS.items()}
    opts = {k: torch.optim.Adam(m.parameters(), 1e-3) for k, m in models.items()}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)

    def train(k):
        def run():
            models[k].train()
            with amp():
                loss = F.cross_entropy(models[k](x), y)
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            opts[k].step()
        return run

    def infer(k):
        def run():
            models[k].eval()
            with torch.inference_mode(), amp():
                models[k](x)
        return run

    compile_s = {}
    with tempfile.TemporaryDirectory(prefix="onebit-inductor-") as cache, temporary_cache_dir(cache):
        for k in ("compiled", "both"):  # cold: the first call compiles (train: forward and backward graphs)
            first = {"train": _timed(train(k), sync), "eval": _timed(infer(k), sync)}
            again = {"train": _timed(train(k), sync), "eval": _timed(infer(k), sync)}
            compile_s[k] = {m: first[m] - again[m] for m in first}
        for k in models:  # warm-up of every variant, in both modes
            for _ in range(2):
                train(k)()
                infer(k)()
        step = interleaved({k: train(k) for k in models}, repeats, warmup=0, sync=sync)
        inference = interleaved({k: infer(k) for k in models}, 2 * repeats, warmup=0, sync=sync)

        # warm: the same graphs again from Inductor's filled on-disk cache
        torch._dynamo.reset()
        from torch._inductor.utils import clear_caches

        clear_caches()
        models["compiled"] = apply_speed_options(copy.deepcopy(base), channels_last=False, compile=True)
        opts["compiled"] = torch.optim.Adam(models["compiled"].parameters(), 1e-3)
        first = {"train": _timed(train("compiled"), sync), "eval": _timed(infer("compiled"), sync)}
        again = {"train": _timed(train("compiled"), sync), "eval": _timed(infer("compiled"), sync)}
        compile_s["compiled_warm_cache"] = {m: first[m] - again[m] for m in first}
    return {
        "model": f"Bi-Real-18 ApproxSign/MagnitudeAware, width {width}, {size}x{size}, batch {batch}",
        "autocast": "bf16" if cuda else None,
        "repeats": repeats,
        "train_step_s": step,
        "train_step_over_plain": {k: v / step["plain"] for k, v in step.items()},
        "inference_batch_s": inference,
        "inference_over_plain": {k: v / inference["plain"] for k, v in inference.items()},
        "compile_s": compile_s,
    }


def bench_speed(repeats: int = 5) -> dict:
    """CPU figures, and CUDA figures (bf16 autocast) when ``torch.cuda.is_available()``; keyed by device."""
    out = {"cpu": bench_device("cpu", repeats)}
    if torch.cuda.is_available():
        out["cuda"] = bench_device("cuda", repeats)
        out["cuda"]["gpu"] = torch.cuda.get_device_name()
    return out


def summary(results: dict) -> str:
    lines = []
    for device, r in results.items():
        if not isinstance(r, dict) or "train_step_s" not in r:
            continue
        amp = f", {r['autocast']} autocast" if r["autocast"] else ""
        lines.append(f"{device}{amp}: {r['model']}, median of {r['repeats']} interleaved rounds")
        lines.append(f"  {'variant':<14} {'train step':>11} {'/plain':>7} {'inference':>11} {'/plain':>7}")
        for k in VARIANTS:
            lines.append(f"  {k:<14} {r['train_step_s'][k] * 1e3:>8.1f} ms {r['train_step_over_plain'][k]:>7.3f} "
                         f"{r['inference_batch_s'][k] * 1e3:>8.1f} ms {r['inference_over_plain'][k]:>7.3f}")
        c = r["compile_s"]
        lines.append("  compile time (first call minus a later one), train / eval: "
                     + "; ".join(f"{k.replace('_', ' ')} {v['train']:.1f} / {v['eval']:.1f} s" for k, v in c.items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats={args.repeats} is invalid: must be a positive integer")
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                           "threads": torch.get_num_threads()}, **bench_speed(args.repeats)}
    print(json.dumps(results, indent=1), flush=True)
    print(summary(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
