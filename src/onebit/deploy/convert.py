"""Conversion and inference: a onebit model -> its Keras graph (:class:`~onebit.deploy.graph.KerasGraph`) -> an
LCE TFLite flatbuffer (:func:`convert`), the operators it runs (:func:`operators`), and LCE's interpreter
(:func:`interpreter`, :func:`predict`)."""

from __future__ import annotations

import warnings

import numpy as np
from torch import nn

from onebit.deploy.graph import BuildInfo, KerasGraph


def convert(model: nn.Module, input_size: tuple[int, int, int], binary: bool = True) -> tuple[bytes, BuildInfo]:
    """The LCE flatbuffer of ``model`` (``binary=False``: the float graph of a real-valued twin)."""
    import larq_compute_engine as lce

    graph = KerasGraph(binary)
    keras_model = graph.build(model, input_size)
    with warnings.catch_warnings():
        # LCE first tries a SavedModel export, which the Lambda layers (constants captured in Python closures) do
        # not survive, then converts the traced graph itself: the same model, checked by export_run
        warnings.filterwarnings("ignore", message="Saved-model conversion failed")
        return lce.convert_keras_model(keras_model), graph.info


def operators(flatbuffer: bytes) -> dict[str, int]:
    """How many of each operator the TFLite model runs (``LceBconv2d``, ``LceQuantize``, ``CONV_2D``...)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        custom = code.CustomCode()
        codes.append(custom.decode() if custom else builtin.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()),
                                                                 "?"))
    counts: dict[str, int] = {}
    graph = model.Subgraphs(0)
    for i in range(graph.OperatorsLength()):
        name = codes[graph.Operators(i).OpcodeIndex()]
        counts[name] = counts.get(name, 0) + 1
    return counts


# LCE's interpreter settings for the check and the timings: its indirect binary GEMM (several times faster than
# the default im2col one on x86 in a one-off comparison, same outputs: tests/test_export.py runs every kernel) and
# XNNPACK for the float ops
INTERPRETER = {"use_indirect_bgemm": True, "use_xnnpack": True}


def interpreter(flatbuffer: bytes, threads: int = 1, **settings):
    """LCE's TFLite interpreter for ``flatbuffer`` (:data:`INTERPRETER` unless ``settings`` say otherwise)."""
    import logging

    from larq_compute_engine.tflite.python.interpreter import Interpreter

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return Interpreter(flatbuffer, num_threads=threads, **{**INTERPRETER, **settings})


def predict(interp, images: np.ndarray) -> np.ndarray:
    """The TFLite model's outputs for NHWC ``images``, one at a time (the model's batch size is 1), as (N, K)."""
    return np.concatenate([np.asarray(interp.predict(np.ascontiguousarray(img[None], dtype=np.float32)))
                           .reshape(1, -1) for img in images])
