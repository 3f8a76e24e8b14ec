"""The optional ``export`` extra (larq-compute-engine, tensorflow-cpu, tf-keras; ``pip install -e '.[export]'``):
whether it is installed (:func:`require_extra`, without importing it), importing it safely (:func:`_tf`), and
:class:`ExportError`, the one-line refusal of a model or layer with no exact 1-bit LCE equivalent.

Import order: torchvision's C++ ops (imported by Lightning and onebit's models) crash with a segmentation fault
when they load after tensorflow's, so this module imports ``pytorch_lightning`` and ``torchvision`` before
anything can import tensorflow; every module of :mod:`onebit.deploy` that imports tensorflow or LCE imports this
one first. It also sets ``TF_USE_LEGACY_KERAS=1`` before tensorflow's first import.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytorch_lightning  # noqa: F401  torchvision's C++ ops (imported by Lightning and onebit's models) crash with
import torchvision  # noqa: F401  a segmentation fault when they load after tensorflow's: load them first, here

from onebit.core.errors import ConfigError

EXTRA = "export"
REQUIRED_MODULES = ("larq_compute_engine", "tensorflow", "tf_keras")

# LCE's converter takes Keras 2 models (tf_keras): tensorflow reads this when it is first imported, which another
# library (Lightning, TensorBoard) may do before this module builds a graph
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class ExportError(ConfigError):
    """A model or layer that has no exact 1-bit LCE equivalent: one line naming the layer and why."""


def missing_modules() -> list[str]:
    """What the ``export`` extra provides and this environment lacks, without importing any of it: its modules,
    and numpy < 2 (LCE 0.16's interpreter reads arrays through numpy 1's ABI: under numpy 2 every input is 0
    bytes)."""
    missing = [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]
    if int(np.__version__.split(".")[0]) >= 2:
        missing.append(f"numpy<2 (found {np.__version__})")
    return missing


def require_extra() -> None:
    missing = missing_modules()
    if missing:
        raise ConfigError(f"export needs the optional extra: pip install -e '.[{EXTRA}]' (missing: "
                          f"{', '.join(missing)})")


def _tf():
    """tensorflow and tf_keras (Keras 2, which LCE's converter takes), imported quietly."""
    import tensorflow as tf
    import tf_keras

    tf.get_logger().setLevel("ERROR")
    return tf, tf_keras


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("larq-compute-engine", "tensorflow-cpu", "tf-keras", "torch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out
