"""A finished run -> ``model.tflite`` (and the float ``twin.tflite``) beside it, verified against PyTorch, measured
and recorded in the run's record (``export``): :func:`export_run`, the checks of what can be exported
(:func:`exportable_stage`), the float twin (:func:`twin_model`) and the printed summary (:func:`result_lines`)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from onebit.core.errors import ConfigError, config_error
from onebit.core.files import atomic_write
from onebit.deploy.check import compare, measure_latency
from onebit.deploy.convert import INTERPRETER, convert, operators
from onebit.deploy.extra import ExportError, require_extra, versions
from onebit.nn.summary import summarize
from onebit.training.build import make_model
from onebit.training.checkpoints import find_weights, model_from_record

AGREEMENT_MIN = 0.999  # the share of test images whose top-1 class must equal PyTorch's
MODEL_NAME, TWIN_NAME = "model.tflite", "twin.tflite"


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count()}


def counted_bytes(memory_mbit: float) -> float:
    """onebit's memory count (1 bit per binary weight, 32 per real parameter; Bi-Real section 4.4) in bytes."""
    return memory_mbit * 1e6 / 8


# ----------------------------------------------------------------------------------------------------------
# A finished run -> model.tflite beside it, verified, measured and recorded
# ----------------------------------------------------------------------------------------------------------


def exportable_stage(record) -> str:
    """The run's final stage if it is finished and trained a binary model (1-bit activations and weights); one
    ConfigError line otherwise."""
    final = record.final_stage
    if final is None:
        raise ConfigError(f"run {record.run_dir} has no stages")
    stages = ", ".join(f"{n} {s.status}" for n, s in record.stages.items())
    if not final.finished:
        raise ConfigError(f"run {record.run_dir} has no finished binary stage to export: its final stage "
                          f"{final.name!r} is {final.status} (stages: {stages})")
    bits = final.efficiency or record.efficiency or {}
    if final.model != "binary" or bits.get("activations") != 1 or bits.get("weights") != 1:
        kind = f"A{bits.get('activations', '?')}/W{bits.get('weights', '?')}"
        raise ConfigError(f"run {record.run_dir}: its final stage {final.name!r} trained a {final.model} model "
                          f"({kind}), not a binary one (A1/W1): nothing 1-bit to export")
    return final.name


def twin_model(record, binary: nn.Module):
    """The real-valued twin for the float baseline: the run's finished twin stage with its weights (pretraining),
    else the twin architecture with the binary model's latent weights (``weights`` says which)."""
    for name, st in record.stages.items():
        if st.model == "twin" and st.finished and find_weights(record, name) is not None:
            return model_from_record(record, name), f"stage {name}"
    cfg = OmegaConf.create(record.config)
    how = "the binary model's latent weights (no twin stage in this run)"
    if OmegaConf.select(cfg, "pretrain.activation") is None:  # pretrain=none: the twin of Bi-Real Table 1's "clip"
        OmegaConf.update(cfg, "pretrain.activation", {"_target_": "onebit.nn.quantizers.Clip"}, force_add=True)
        how += ", clip activations"
    twin = make_model(cfg, instantiate(cfg.data), "twin")
    twin.load_state_dict(binary.state_dict(), strict=False)
    return twin.eval(), how


def export_run(record, threads: int = 1, min_agreement: float = AGREEMENT_MIN, log=print) -> dict:
    """Export the final binary model of ``record``'s run: build and convert it (and its float twin), check the
    TFLite model against PyTorch on the full test split, measure size and latency, then write ``model.tflite``
    and ``twin.tflite`` into the run directory and the results into the record (``export``). Nothing is written
    unless every check passed."""
    require_extra()
    stage = exportable_stage(record)
    started = time.time()
    binary = model_from_record(record, stage)
    try:
        data = instantiate(OmegaConf.create(record.config).data)
        data.prepare_data()
        data.setup("test")
    except Exception as e:  # noqa: BLE001  (the run's data is gone or moved: one line with its real cause)
        raise config_error(e) from None
    input_size = tuple(data.input_size)
    twin, twin_weights = twin_model(record, binary)
    log(f"onebit export: building the LCE graph of {type(binary).__name__} ({stage}, input {input_size})")
    model_fb, info = convert(binary, input_size, binary=True)
    twin_fb, _ = convert(twin, input_size, binary=False)
    ops = operators(model_fb)
    if ops.get("LceBconv2d", 0) != info.binary_convs:
        raise ExportError(f"LCE converted {ops.get('LceBconv2d', 0)} of the {info.binary_convs} binary convolutions "
                          f"into 1-bit ones (operators: {ops})")
    log(f"onebit export: checking against PyTorch on the full test split ({data.name})")
    check = compare(binary, model_fb, data.test_dataloader())
    check_twin = compare(twin, twin_fb, data.test_dataloader())
    if check["agreement"] < min_agreement:
        raise ExportError(f"the LCE model disagrees with PyTorch: top-1 agreement {check['agreement']:.4%} < "
                          f"min_agreement={min_agreement:g} on {check['n']} test images (logits equal on "
                          f"{check['equal_logits']:.2%}, max difference {check['max_logit_diff']:.3g}); nothing "
                          "written")
    counts, twin_counts = summarize(binary, input_size), summarize(twin, input_size)
    log(f"onebit export: measuring batch-1 latency ({threads} thread{'s' if threads > 1 else ''})")
    latency = measure_latency(binary, twin, model_fb, twin_fb, input_size, threads)
    run_dir = Path(record.run_dir)
    atomic_write(run_dir / TWIN_NAME, lambda f: f.write(twin_fb))
    atomic_write(run_dir / MODEL_NAME, lambda f: f.write(model_fb))
    result = {
        "stage": stage, "model": MODEL_NAME, "twin": TWIN_NAME, "input_size": list(input_size),
        "bytes": len(model_fb), "counted_bytes": counted_bytes(counts.memory_mbit),
        "memory_mbit": counts.memory_mbit, "binary_params": counts.binary_params, "real_params": counts.real_params,
        "twin_bytes": len(twin_fb), "twin_counted_bytes": counted_bytes(twin_counts.memory_mbit),
        "ops": ops, "binary_convs": info.binary_convs, "folded_scales": info.folded_scales,
        "multiplied_scales": info.multiplied_scales, "twin_weights": twin_weights,
        "check": check, "check_twin": check_twin, "split": "test", "min_agreement": min_agreement,
        "latency_ms": latency, "threads": threads, "interpreter": INTERPRETER, "machine": machine(),
        "versions": versions(),
        "counted_ops": counts.ops, "twin_counted_ops": twin_counts.ops,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.time() - started, 1),
    }
    record.export = result
    record.save()
    return result


def result_lines(record, r: dict) -> list[str]:
    """The printed summary of an export."""
    c, lat = r["check"], r["latency_ms"]
    lines = [
        f"onebit export: {Path(record.run_dir) / r['model']}  ({r['bytes'] / 1e6:.3f} MB; onebit counts "
        f"{r['counted_bytes'] / 1e6:.3f} MB = {r['memory_mbit']:.3f} Mbit: {r['binary_params']:,} 1-bit weights + "
        f"{r['real_params']:,} 32-bit; file / count {r['bytes'] / r['counted_bytes']:.3f})",
        f"onebit export: {r['binary_convs']} binary convolutions -> {r['ops'].get('LceBconv2d', 0)} LceBconv2d "
        f"(scale folded into BatchNorm in {r['folded_scales']}); twin {r['twin']} {r['twin_bytes'] / 1e6:.3f} MB "
        f"(x{r['twin_bytes'] / r['bytes']:.1f} the 1-bit model)",
        f"onebit export: test split, {c['n']} images: top-1 agreement with PyTorch {c['agreement']:.4%} (>= "
        f"{r['min_agreement']:g} required), logits equal within 1e-3 on {c['equal_logits']:.2%} (max difference "
        f"{c['max_logit_diff']:.2e}); top-1 PyTorch {c['top1_torch']:.4f}, LCE {c['top1_tflite']:.4f}",
        f"onebit export: batch-1 latency, {r['threads']} thread(s), {r['machine']['processor']}: LCE 1-bit "
        f"{lat['lce_binary']:.3f} ms, float TFLite twin {lat['tflite_twin']:.3f} ms "
        f"(x{lat['tflite_twin'] / lat['lce_binary']:.2f}); PyTorch binary {lat['torch_binary']:.3f} ms, twin "
        f"{lat['torch_twin']:.3f} ms",
    ]
    if record.smoke:
        lines.append(f"onebit export: note: SMOKE RUN ({', '.join(record.smoke)}): the model comes from a shortened "
                     "run, not a result")
    return lines
