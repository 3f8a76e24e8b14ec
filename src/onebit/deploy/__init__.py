"""Handing over a real 1-bit model: a run's binary net as a Larq Compute Engine flatbuffer, checked against PyTorch.

Modules, each importing only those listed before it: :mod:`~onebit.deploy.extra` (the optional ``export`` extra,
the import order tensorflow needs, :class:`ExportError`), :mod:`~onebit.deploy.padding` (PyTorch's windows in
TensorFlow's "same" geometry), :mod:`~onebit.deploy.binary` (what one binary conv computes: sign, input
threshold, 1-bit kernel and scales), :mod:`~onebit.deploy.graph` (the Keras graph of a onebit model, layer for layer),
:mod:`~onebit.deploy.convert` (LCE conversion and its interpreter), :mod:`~onebit.deploy.check` (agreement with
PyTorch, latency) and :mod:`~onebit.deploy.run` (a finished run -> ``model.tflite``, verified and recorded). This
package re-exports their public names.
"""

from onebit.deploy.binary import binary_kernel, input_threshold, is_sign, ste_sign
from onebit.deploy.check import compare, latency_ms, measure_latency
from onebit.deploy.convert import INTERPRETER, convert, interpreter, operators, predict
from onebit.deploy.extra import EXTRA, REQUIRED_MODULES, ExportError, missing_modules, require_extra, versions
from onebit.deploy.graph import BuildInfo, KerasGraph
from onebit.deploy.padding import same_extension, same_padding, torch_out
from onebit.deploy.run import (
    AGREEMENT_MIN,
    MODEL_NAME,
    TWIN_NAME,
    counted_bytes,
    export_run,
    exportable_stage,
    machine,
    result_lines,
    twin_model,
)

__all__ = [
    "AGREEMENT_MIN",
    "EXTRA",
    "INTERPRETER",
    "MODEL_NAME",
    "REQUIRED_MODULES",
    "TWIN_NAME",
    "BuildInfo",
    "ExportError",
    "KerasGraph",
    "binary_kernel",
    "compare",
    "convert",
    "counted_bytes",
    "export_run",
    "exportable_stage",
    "input_threshold",
    "interpreter",
    "is_sign",
    "latency_ms",
    "machine",
    "measure_latency",
    "missing_modules",
    "operators",
    "predict",
    "require_extra",
    "result_lines",
    "same_extension",
    "same_padding",
    "ste_sign",
    "torch_out",
    "twin_model",
    "versions",
]
