"""Checking and timing a converted model: the TFLite model against PyTorch on a data split (:func:`compare`) and
batch-1 latency of the LCE model, its float twin and both PyTorch models (:func:`measure_latency`)."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from torch import nn

from onebit.deploy.convert import interpreter, predict


def compare(model: nn.Module, flatbuffer: bytes, batches) -> dict:
    """Run every image of ``batches`` ((x, y) in NCHW) through the PyTorch model (eval) and the TFLite model:
    top-1 agreement, the share of images whose logits are equal within 1e-3 (relative to the largest, at least 1),
    the largest absolute logit difference, and each one's top-1 accuracy. Logits differ where float rounding
    (BatchNorm folded into LCE's output transform, another summation order) moves a pre-sign value across 0."""
    interp = interpreter(flatbuffer, threads=max(1, torch.get_num_threads()))
    n = agree = close = correct_torch = correct_lite = 0
    max_diff = 0.0
    model.eval()
    with torch.inference_mode():
        for x, y in batches:
            ours = model(x).float().numpy()
            lite = predict(interp, x.permute(0, 2, 3, 1).numpy())
            a, b = ours.argmax(1), lite.argmax(1)
            diff = np.abs(ours - lite).max(axis=1)
            close += int((diff <= 1e-3 * np.maximum(1.0, np.abs(ours).max(axis=1))).sum())
            n += len(y)
            agree += int((a == b).sum())
            correct_torch += int((a == y.numpy()).sum())
            correct_lite += int((b == y.numpy()).sum())
            max_diff = max(max_diff, float(diff.max()))
    return {"n": n, "agreement": agree / n, "equal_logits": close / n, "max_logit_diff": max_diff,
            "top1_torch": correct_torch / n, "top1_tflite": correct_lite / n}


def latency_ms(fn, min_runs: int = 20, min_seconds: float = 1.0) -> float:
    """Median wall time of ``fn()`` in ms, after 3 warm-up calls, over at least ``min_runs`` calls and
    ``min_seconds``."""
    for _ in range(3):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def measure_latency(binary: nn.Module, twin: nn.Module, model_fb: bytes, twin_fb: bytes,
                    input_size: tuple[int, int, int], threads: int) -> dict:
    """Batch-1 latency (ms, median) of the LCE model, the float TFLite twin, and both PyTorch models (eval,
    inference mode), each with ``threads`` threads, on this machine."""
    x = torch.randn(1, *input_size)
    x_nhwc = x.permute(0, 2, 3, 1).contiguous().numpy()
    lite, lite_twin = interpreter(model_fb, threads), interpreter(twin_fb, threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            binary.eval(), twin.eval()
            out = {"lce_binary": latency_ms(lambda: lite.predict(x_nhwc)),
                   "tflite_twin": latency_ms(lambda: lite_twin.predict(x_nhwc)),
                   "torch_binary": latency_ms(lambda: binary(x)),
                   "torch_twin": latency_ms(lambda: twin(x))}
    finally:
        torch.set_num_threads(previous)
    return {k: round(v, 3) for k, v in out.items()}
