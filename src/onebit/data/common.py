"""What every data module shares: argument checks, DDP sharding, in-memory batches, the stratified split and
the torch DataLoader settings.

- Checks (``_check_int``, ``_check_choice``, ``_check_common``) raise a one-line ``ValueError`` naming the
  ``data.*`` key; :data:`STEMS` lists the valid ``data.stem`` values.
- :func:`shard_indices` and :class:`TensorBatches`: in-memory mini-batches, shuffled from ``seed + epoch`` and
  sharded per rank under torch.distributed; :class:`_InMemoryLoaders` gives a data module one per split.
- :func:`stratified_split`: scikit-learn's stratified ``train_test_split`` without importing scikit-learn.
- ``_dataloader`` / :class:`_LoaderMixin`: the torch ``DataLoader`` of the on-disk data modules (train
  shuffled from a generator seeded with ``seed``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

STEMS = ("small", "imagenet")


# ----------------------------------------------------------------------------------------------- validation
def _check_int(key: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{key}={value!r} is invalid: must be {what}")


def _check_choice(key: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r} is invalid: choose one of {', '.join(map(str, choices))}")


def _check_common(batch_size, num_workers, seed, stem) -> None:
    _check_int("data.batch_size", batch_size)
    _check_int("data.num_workers", num_workers, 0)
    _check_int("data.seed", seed, 0)
    _check_choice("data.stem", stem, STEMS)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


# ------------------------------------------------------------------------------------------ tensor batches
def _dist_rank_world() -> tuple[int, int]:
    """(rank, world_size) under an initialised torch.distributed group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shard_indices(perm: Tensor, rank: int, world_size: int, even: bool = False) -> Tensor:
    """Rank ``rank``'s share ``perm[rank::world_size]`` of an epoch's index order (disjoint across ranks).

    ``even=False``: the shards cover ``perm`` exactly (sizes differ by at most one). ``even=True``: the last
    ``len(perm) % world_size`` entries are dropped first so every rank gets the same number of samples (and
    hence of optimizer steps, which DDP's gradient all-reduce needs); used for the shuffled train split, where
    the dropped samples change from epoch to epoch.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} is invalid for world_size={world_size}")
    if even:
        perm = perm[: len(perm) - len(perm) % world_size]
    return perm[rank::world_size]


class TensorBatches:
    """Iterable of ``(x[idx], y[idx])`` mini-batches over in-memory tensors; a lightweight DataLoader.

    The index order of a pass is ``randperm(n)`` from a ``torch.Generator`` seeded with ``seed + epoch`` when
    ``shuffle`` (else ``0..n-1``), then this rank's :func:`shard_indices` under torch.distributed. ``epoch``
    advances by one at the start of every shuffled pass, and :meth:`set_epoch` sets it: Lightning calls it with
    the trainer's epoch before each epoch (it looks for ``loader.sampler.set_epoch``, hence ``sampler`` returns
    ``self``), so resumed runs keep the order of an uninterrupted run. The last batch may be smaller
    (``drop_last=False``).
    """

    batch_sampler = None  # read by Lightning next to ``sampler``

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False) -> None:
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
        _check_int("batch_size", batch_size)
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0

    @property
    def sampler(self) -> "TensorBatches":
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self, epoch: int, rank: int = 0, world_size: int = 1) -> Tensor:
        """The sample indices this rank visits in pass ``epoch``, in order."""
        n = len(self.x)
        if self.shuffle:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))
        else:
            perm = torch.arange(n)
        return shard_indices(perm, rank, world_size, even=self.shuffle)

    def __len__(self) -> int:
        n = len(shard_indices(torch.arange(len(self.x)), *_dist_rank_world(), even=self.shuffle))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        # a generator: the order is drawn (and the epoch advanced) when the pass starts, not at ``iter()``
        idx = self.indices(self.epoch, *_dist_rank_world())
        if self.shuffle:
            self.epoch += 1
        stop = len(idx) - len(idx) % self.batch_size if self.drop_last else len(idx)
        for start in range(0, stop, self.batch_size):
            batch = idx[start:start + self.batch_size]
            yield self.x[batch], self.y[batch]


class _InMemoryLoaders:
    """``*_dataloader`` over ``self.splits`` (split -> (x, y) tensors, filled by ``setup``): one
    :class:`TensorBatches` per split, so the train epoch counter persists (train shuffled from ``self.seed``)."""

    def _loader(self, split: str) -> TensorBatches:
        self.setup()
        if split not in self._loaders:  # one object per split, so the train epoch counter persists
            x, y = self.splits[split]
            self._loaders[split] = TensorBatches(x, y, self.batch_size, shuffle=split == "train", seed=self.seed)
        return self._loaders[split]

    def train_dataloader(self) -> TensorBatches:
        return self._loader("train")

    def val_dataloader(self) -> TensorBatches:
        return self._loader("val")

    def test_dataloader(self) -> TensorBatches:
        return self._loader("test")


# ------------------------------------------------------------------------------------------ stratified split
def stratified_split(items: np.ndarray, test_size: float, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` items, exactly ``sklearn.model_selection.train_test_split(items, test_size=test_size,
    stratify=y, random_state=seed)`` (scikit-learn 1.x's ``StratifiedShuffleSplit``; tests/test_data.py checks the
    equality), without importing scikit-learn: ``n_test = ceil(test_size * n)``; per class, the train and test
    counts are ``_approximate_mode`` of the class counts (the floor of each class's share, the remainder given to
    the largest fractional parts, ties drawn at random); each class's items are permuted and cut; both sides are
    permuted; one ``RandomState(seed)`` draws everything, in scikit-learn's order."""
    n = len(items)
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    classes, y_indices, counts = np.unique(y, return_inverse=True, return_counts=True)
    class_items = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)

    def approximate_mode(class_counts: np.ndarray, draws: int) -> np.ndarray:
        continuous = class_counts / class_counts.sum() * draws
        floored = np.floor(continuous)
        need = int(draws - floored.sum())
        if need > 0:
            remainder = continuous - floored
            for value in np.sort(np.unique(remainder))[::-1]:
                (where,) = np.where(remainder == value)
                add = min(len(where), need)
                floored[rng.choice(where, size=add, replace=False)] += 1
                need -= add
                if need == 0:
                    break
        return floored.astype(int)

    n_i = approximate_mode(counts, n_train)
    t_i = approximate_mode(counts - n_i, n_test)
    train, test = [], []
    for i in range(len(classes)):
        members = class_items[i].take(rng.permutation(counts[i]), mode="clip")
        train.extend(members[:n_i[i]])
        test.extend(members[n_i[i]:n_i[i] + t_i[i]])
    return items[rng.permutation(train)], items[rng.permutation(test)]


# ------------------------------------------------------------------------------------- torch dataloader base
def _dataloader(dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool, seed: int) -> DataLoader:
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
        pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )


class _LoaderMixin:
    """``*_dataloader`` over ``self._train/_val/_test`` (set by ``setup``) with the shared loader settings."""

    def _loader(self, split: str) -> DataLoader:
        if getattr(self, "_train", None) is None:
            self.setup()
        dataset = {"train": self._train, "val": self._val, "test": self._test}[split]
        return _dataloader(dataset, self.batch_size, self.num_workers, split == "train", self.seed)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
