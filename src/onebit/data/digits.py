"""scikit-learn's bundled 8x8 handwritten digits, read without importing scikit-learn (:func:`load_digits`),
as the in-memory :class:`DigitsData` (the default ``conf/data`` option)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from onebit.data.common import (
    TensorBatches,
    _check_choice,
    _check_common,
    _check_int,
    _InMemoryLoaders,
    stratified_split,
)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(images N x 8 x 8 float64 in 0..16, target N int)`` of scikit-learn's bundled digits, read from its file
    (``sklearn/datasets/data/digits.csv.gz``) as ``sklearn.datasets.load_digits`` reads it, without importing
    scikit-learn (its import, which brings pandas, is most of a second of a digits job's start-up)."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package without running it
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


class DigitsData(_InMemoryLoaders, pl.LightningDataModule):
    """scikit-learn's bundled handwritten digits (``sklearn.datasets.load_digits``: 1797 8x8 images, 10 classes;
    read by :func:`load_digits`).

    Split: fixed stratified train/val/test (default 70/15/15, 1257/270/270 images) with
    ``sklearn.model_selection.train_test_split(..., stratify=y, random_state=split_seed)`` (:func:`stratified_split`,
    the same indices without importing scikit-learn), independent of the
    training ``seed``. Transforms: pixels / 16 -> [0, 1], optional ``upscale`` (``F.interpolate`` by an integer
    factor, ``upscale_mode`` nearest or bilinear; 4 gives 32x32), then standardised with the train split's
    pixel mean and std. No augmentation. All splits are float tensors in memory, batched by
    :class:`TensorBatches` (train shuffled from ``seed + epoch``); ``num_workers`` is accepted and unused.

    ``default_width``: models whose config says ``width: null`` use 32 channels in their first stage here (8x8
    inputs; a 64-wide Bi-Real-18 costs 4x the time for no accuracy on this data), 64 elsewhere (the papers').
    """

    default_width = 32

    def __init__(self, batch_size: int = 64, num_workers: int = 0, seed: int = 0, split_seed: int = 0,
                 val_fraction: float = 0.15, test_fraction: float = 0.15, upscale: int = 1,
                 upscale_mode: str = "nearest", stem: str = "small") -> None:
        super().__init__()
        _check_common(batch_size, num_workers, seed, stem)
        _check_int("data.split_seed", split_seed, 0)
        _check_int("data.upscale", upscale)
        _check_choice("data.upscale_mode", upscale_mode, ("nearest", "bilinear"))
        for key, value in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction)):
            if not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(f"{key}={value!r} is invalid: must be a fraction in (0, 1)")
        if val_fraction + test_fraction >= 0.9:
            raise ValueError(f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction} is invalid: "
                             "must be below 0.9 to leave a training split")
        self.batch_size, self.num_workers, self.seed, self.split_seed = batch_size, num_workers, seed, split_seed
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.upscale, self.upscale_mode, self.stem = upscale, upscale_mode, stem
        self.name, self.in_channels, self.num_classes = "digits", 1, 10
        self.input_size = (1, 8 * upscale, 8 * upscale)
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}  # split -> (x, y), filled by setup
        self.split_indices: dict[str, np.ndarray] = {}
        self.mean = self.std = None
        self._loaders: dict[str, TensorBatches] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        images, target = load_digits()
        x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)  # N x 1 x 8 x 8 in [0, 1]
        if self.upscale > 1:
            x = F.interpolate(x, scale_factor=self.upscale, mode=self.upscale_mode,
                              **({"align_corners": False} if self.upscale_mode == "bilinear" else {}))
        y = torch.from_numpy(target.astype(np.int64))
        idx = np.arange(len(y))
        held = self.val_fraction + self.test_fraction
        train_idx, rest_idx = stratified_split(idx, held, y.numpy(), self.split_seed)
        val_idx, test_idx = stratified_split(rest_idx, self.test_fraction / held, y.numpy()[rest_idx], self.split_seed)
        train_x = x[torch.from_numpy(train_idx)]
        self.mean, self.std = train_x.mean().item(), train_x.std().item()
        self.split_indices = {"train": train_idx, "val": val_idx, "test": test_idx}  # rows of load_digits()
        for split, ix in self.split_indices.items():
            ix = torch.from_numpy(ix)
            self.splits[split] = ((x[ix] - self.mean) / self.std).contiguous(), y[ix].contiguous()
