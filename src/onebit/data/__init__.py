"""Data modules: one ``LightningDataModule`` per ``conf/data/*.yaml`` option.

Every module sets ``name``, ``in_channels``, ``num_classes``, ``input_size`` (C, H, W) and ``stem`` in
``__init__`` (before ``setup``) because the model is built from them, and offers ``train_dataloader``,
``val_dataloader`` and ``test_dataloader``.

- :class:`DigitsData` (default): scikit-learn's bundled 8x8 digits, in memory, batched by :class:`TensorBatches`.
- :class:`MNISTData`: MNIST / Fashion-MNIST / KMNIST from the IDX files, in memory, batched by :class:`TensorBatches`.
- :class:`CIFARData`: CIFAR-10/100 in torchvision's on-disk format.
- :class:`ImageNetData`: an ImageFolder tree with Bi-Real's transforms (section 4.1).
- :class:`FolderData`: any ImageFolder tree with ``train/`` and ``val/`` (optional ``test/``).

Shuffling is deterministic given ``data.seed``: :class:`TensorBatches` draws epoch ``e``'s order from a
generator seeded with ``seed + e``; the torch DataLoaders of the other modules draw theirs from a generator
seeded with ``seed``. Validation/test splits are fixed by ``split_seed`` (independent of the training seed), so
all runs of a study evaluate on the same images.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets
from torchvision import transforms as T
from torchvision.datasets.utils import check_integrity
from torchvision.datasets.vision import StandardTransform

__all__ = [
    "TensorBatches",
    "shard_indices",
    "DigitsData",
    "MNISTData",
    "read_idx",
    "CIFARData",
    "ImageNetData",
    "FolderData",
    "CorruptImageError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CIFAR_STATS",
]

STEMS = ("small", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# per-channel pixel mean / std of each training set (std of the pixels, not the often-copied 0.2023 variant)
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


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


# ---------------------------------------------------------------------------------------------------- digits
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



# ----------------------------------------------------------------------------------------------- MNIST family
log = logging.getLogger("onebit")

MNIST_VARIANTS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}  # -> torchvision class
MNIST_FILES = {  # role -> IDX file name (read as ``name.gz`` or ``name``)
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
# Folders searched when ``data.root`` is null, before ``$ONEBIT_DATA/<variant>`` (default ``data/<variant>``):
# variant -> ((folder, what put it there), ...). Debian's ``dataset-fashion-mnist`` package installs the four
# gzip IDX files into /usr/share/datasets/fashion-mnist.
MNIST_SYSTEM_DIRS = {
    "fashion_mnist": (("/usr/share/datasets/fashion-mnist", "Debian package dataset-fashion-mnist"),),
}
_MNIST_APT = {"fashion_mnist": "dataset-fashion-mnist"}
_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # ndim -> magic (unsigned-byte data): images 2051, labels 2049
_IDX_CACHE: dict[tuple, np.ndarray] = {}  # (resolved path, mtime_ns, size) -> decoded array, per process


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (``.gz`` or uncompressed) with ``ndim`` dimensions as a uint8 array.

    Checks the magic number (0x0803 images, 0x0801 labels), the header and that the data has exactly the size
    the header gives; anything else raises a one-line ``ValueError`` naming the file. Decoded arrays are cached
    per process by (resolved path, mtime, size), so a second data module built in the same process is free.
    """
    import gzip
    import zlib

    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _IDX_CACHE:
        return _IDX_CACHE[key]
    what = "an IDX image file" if ndim == 3 else "an IDX label file"
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path} is not a readable gzip file ({type(e).__name__}: {_one_line(e)}); "
                         "replace it (data.download=true fetches a fresh copy)") from None
    header = 4 + 4 * ndim
    if len(raw) < 4:
        raise ValueError(f"{path} is not {what}: {len(raw)} bytes, too short for the IDX magic number")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise ValueError(f"{path} is not {what}: magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[ndim]:08x}")
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, shorter than its {header}-byte IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        state = "truncated" if len(raw) - header < expected else "longer than its header says"
        raise ValueError(f"{path} is {state}: {len(raw) - header} data bytes, the header "
                         f"({' x '.join(map(str, dims))}) needs {expected}")
    array = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    _IDX_CACHE[key] = array
    return array


def _resize(x: Tensor, size: int, chunk: int = 4096) -> Tensor:
    """Bilinear resize of N x 1 x H x W to size x size (align_corners=False, antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = size < max(x.shape[-2:])
    return torch.cat([F.interpolate(x[i:i + chunk], size=(size, size), mode="bilinear", align_corners=False,
                                    antialias=shrink) for i in range(0, len(x), chunk)])


class MNISTData(_InMemoryLoaders, pl.LightningDataModule):
    """MNIST, Fashion-MNIST or Kuzushiji-MNIST (``variant``: mnist | fashion_mnist | kmnist): 28x28 grayscale,
    10 classes, 60000 train / 10000 test images in the standard IDX files, decoded in memory.

    Files: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` with or without ``.gz``. ``root: null`` looks in
    :data:`MNIST_SYSTEM_DIRS` (fashion_mnist: /usr/share/datasets/fashion-mnist, Debian's
    ``dataset-fashion-mnist``; ``system_dirs`` overrides the list), then ``$ONEBIT_DATA/<variant>`` (default
    ``data/<variant>``); ``root: <dir>`` looks in ``<dir>``. Each folder is also searched in torchvision's layout
    ``<dir>/<MNIST|FashionMNIST|KMNIST>/raw/``. ``download=true`` (needs network) fetches the files with
    ``torchvision.datasets.<Class>(dir, download=True)`` when none are found. One info line on the ``onebit``
    logger says where the images came from. Missing files raise a one-line ``FileNotFoundError`` naming the
    folders searched and how to get the data; a damaged file a one-line ``ValueError`` naming it (:func:`read_idx`).

    Split: a fixed permutation of the official train set (generator seeded with ``split_seed``, independent of
    the training ``seed``): its first ``val_size`` images (default 5000) validate, the rest train; the official
    t10k set tests. ``val_size=0`` validates on the test set. ``train_subset=N`` keeps the first N images of the
    training split (the same images for every ``seed``). Transforms: pixels / 255 -> [0, 1], optional ``size``
    (``F.interpolate`` to size x size, bilinear, ``align_corners=False``, antialiased when shrinking), then
    standardised with the pixel mean and std of the training split (after ``train_subset``). No augmentation.
    All splits are float tensors in memory (60000 x size^2 x 4 bytes at most: 188 MB at 28, 3 GB at 112),
    batched by :class:`TensorBatches` (train shuffled from ``seed + epoch``); ``num_workers`` is accepted and
    unused.

    ``default_width``: models whose config says ``width: null`` use 32 channels in their first stage here: at
    28x28 with the small stem a 64-wide Bi-Real-18 costs 4x the compute of a 32-wide one, and a 32-wide one is
    already far from saturating 10-class 28x28 data; 32 keeps one epoch affordable on a few CPU cores.
    """

    default_width = 32

    def __init__(self, variant: str = "fashion_mnist", root: str | None = None, download: bool = False,
                 val_size: int = 5000, split_seed: int = 0, train_subset: int | None = None,
                 size: int | None = None, batch_size: int = 128, num_workers: int = 0, seed: int = 0,
                 stem: str = "small", system_dirs: list[str] | None = None) -> None:
        super().__init__()
        _check_choice("data.variant", variant, tuple(MNIST_VARIANTS))
        _check_common(batch_size, num_workers, seed, stem)
        _check_int("data.val_size", val_size, 0)
        _check_int("data.split_seed", split_seed, 0)
        if train_subset is not None:
            _check_int("data.train_subset", train_subset)
        if size is not None:
            _check_int("data.size", size)
        if not isinstance(download, bool):
            raise ValueError(f"data.download={download!r} is invalid: choose one of true, false")  # noqa: TRY004
        self.variant, self.download = variant, download
        self.root = None if root is None else Path(root).expanduser()
        if system_dirs is None:
            self.system_dirs = [(Path(d), why) for d, why in MNIST_SYSTEM_DIRS.get(variant, ())]
        else:
            self.system_dirs = [(Path(d), "system folder") for d in system_dirs]
        self.val_size, self.split_seed, self.train_subset, self.size = val_size, split_seed, train_subset, size
        self.batch_size, self.num_workers, self.seed, self.stem = batch_size, num_workers, seed, stem
        self.name, self.in_channels, self.num_classes = variant, 1, 10
        self.input_size = (1, size or 28, size or 28)
        self.source: tuple[Path, str] | None = None  # (folder, what put it there), set by setup
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}  # split -> (x, y), filled by setup
        self.split_indices: dict[str, np.ndarray] = {}  # rows of the official train (train/val) or t10k (test)
        self.mean = self.std = None
        self._loaders: dict[str, TensorBatches] = {}

    # -- where the files are -----------------------------------------------------------------------------
    @property
    def _class_name(self) -> str:
        return MNIST_VARIANTS[self.variant]

    def _default_dir(self) -> Path:
        return Path(os.environ.get("ONEBIT_DATA", "data")).expanduser() / self.variant

    def _candidates(self) -> list[tuple[Path, str]]:
        """(folder, what put it there) in search order, each followed by its torchvision raw/ folder."""
        if self.root is not None:
            bases = [(self.root, "data.root")]
        else:
            bases = [*self.system_dirs, (self._default_dir(), "default folder")]
        out = []
        for folder, why in bases:
            out += [(folder, why), (folder / self._class_name / "raw", why)]
        return out

    @staticmethod
    def _files_in(folder: Path) -> dict[str, Path]:
        """role -> path of each of the four IDX files present in ``folder`` (uncompressed preferred)."""
        found = {}
        for role, name in MNIST_FILES.items():
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    found[role] = candidate
                    break
        return found

    def _locate(self) -> tuple[dict[str, Path], Path, str]:
        candidates = self._candidates()
        for folder, why in candidates:
            files = self._files_in(folder)
            if len(files) == len(MNIST_FILES):
                return files, folder, why
        if self.download:
            base = self.root if self.root is not None else self._default_dir()
            cls = getattr(datasets, self._class_name)
            try:
                cls(str(base), train=True, download=True)
            except Exception as e:  # noqa: BLE001 (URLError, OSError, RuntimeError...: one line naming the place)
                raise RuntimeError(f"could not download {self.variant} into {base}: {type(e).__name__}: "
                                   f"{_one_line(e)}") from None
            folder = base / self._class_name / "raw"
            files = self._files_in(folder)
            if len(files) == len(MNIST_FILES):
                return files, folder, f"downloaded by torchvision.datasets.{self._class_name}"
            raise FileNotFoundError(f"torchvision.datasets.{self._class_name} downloaded {self.variant} but "
                                    f"{folder} lacks {', '.join(sorted(set(MNIST_FILES) - set(files)))}")
        partial = [(folder, files) for folder, _ in candidates if (files := self._files_in(folder))]
        names = ", ".join(f"{n}[.gz]" for n in MNIST_FILES.values())
        where = ", ".join(str(folder) for folder, _ in candidates)
        extra = ""
        if partial:
            folder, files = partial[0]
            missing = [MNIST_FILES[r] for r in MNIST_FILES if r not in files]
            extra = f" ({folder} lacks {', '.join(missing)})"
        ways = ["set data.download=true (needs network)"]
        if self.variant in _MNIST_APT:
            ways.append(f"apt-get install {_MNIST_APT[self.variant]}")
        ways.append("point data.root at a folder holding the four IDX files")
        raise FileNotFoundError(f"{self.variant}: no IDX files ({names}) found in {where}{extra}; "
                                f"{', or '.join(ways)}")

    # -- loading -------------------------------------------------------------------------------------------
    def _read(self, files: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
        images, labels = read_idx(files[f"{split}_images"], 3), read_idx(files[f"{split}_labels"], 1)
        if len(images) != len(labels):
            raise ValueError(f"{files[f'{split}_labels']} holds {len(labels)} labels but "
                             f"{files[f'{split}_images']} holds {len(images)} images")
        if labels.size and labels.max() >= self.num_classes:
            raise ValueError(f"{files[f'{split}_labels']} holds label {int(labels.max())}: labels must be 0..9")
        if self.size is None and images.shape[1:] != (28, 28):
            raise ValueError(f"{files[f'{split}_images']} holds {images.shape[1]}x{images.shape[2]} images, not "
                             "28x28: set data.size to resize them")
        return images, labels

    def prepare_data(self) -> None:
        if self.download:
            self._locate()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        files, folder, why = self._locate()
        train_images, train_labels = self._read(files, "train")
        test_images, test_labels = self._read(files, "test")
        n = len(train_labels)
        if self.val_size >= n:
            raise ValueError(f"data.val_size={self.val_size} is invalid: must be below the {n} training images "
                             f"of {files['train_images']}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed)).numpy()
        train_idx, val_idx = perm[self.val_size:], perm[:self.val_size]
        if self.train_subset is not None:
            if self.train_subset > len(train_idx):
                raise ValueError(f"data.train_subset={self.train_subset} is invalid: must be at most the "
                                 f"{len(train_idx)} images of the training split ({n} - data.val_size="
                                 f"{self.val_size})")
            train_idx = train_idx[:self.train_subset]
        self.split_indices = {"train": train_idx, "val": val_idx, "test": np.arange(len(test_labels))}

        def pixels(images: np.ndarray, idx: np.ndarray) -> Tensor:
            x = torch.from_numpy(images[idx]).unsqueeze(1).float().div_(255.0)  # N x 1 x 28 x 28 in [0, 1]
            return _resize(x, self.size) if self.size is not None else x

        x_train = pixels(train_images, train_idx)
        self.mean = x_train.double().mean().item()
        self.std = x_train.double().std().item() or 1.0
        xs = {"train": x_train, "val": pixels(train_images, val_idx),
              "test": pixels(test_images, self.split_indices["test"])}
        ys = {"train": train_labels[train_idx], "val": train_labels[val_idx], "test": test_labels}
        for split in ("train", "val", "test"):
            x = xs[split].sub_(self.mean).div_(self.std).contiguous()
            self.splits[split] = x, torch.from_numpy(ys[split].astype(np.int64))
        if not self.val_size:
            self.splits["val"] = self.splits["test"]
        self.input_size = tuple(self.splits["train"][0].shape[1:])
        self.source = (folder, why)
        subset = f" (data.train_subset={self.train_subset})" if self.train_subset is not None else ""
        line = (f"{self.variant}: {n} train / {len(test_labels)} test images from {folder} ({why}); split "
                f"{len(train_idx)} train{subset} / {len(self.splits['val'][1])} val / {len(test_labels)} test")
        log.info(line)  # once per data module (setup returns early after the first call), so once per job



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


# ----------------------------------------------------------------------------------------------------- CIFAR
class _CIFAR10Unverified(datasets.CIFAR10):
    """torchvision's CIFAR10 with the per-file md5s set to None: ``check_integrity`` then only checks that each
    file exists (the documented behaviour of ``torchvision.datasets.utils.check_integrity(path, md5=None)``)."""

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class _CIFAR100Unverified(datasets.CIFAR100):
    """torchvision's CIFAR100 with the per-file md5s set to None (see :class:`_CIFAR10Unverified`)."""

    train_list = [[name, None] for name, _ in datasets.CIFAR100.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR100.test_list]
    meta = {**datasets.CIFAR100.meta, "md5": None}


_CIFAR = {
    ("cifar10", True): datasets.CIFAR10, ("cifar10", False): _CIFAR10Unverified,
    ("cifar100", True): datasets.CIFAR100, ("cifar100", False): _CIFAR100Unverified,
}
_CIFAR_LAYOUT = {
    "cifar10": ("CIFAR-10", "cifar-10-batches-py/ with data_batch_1..5, test_batch and batches.meta"),
    "cifar100": ("CIFAR-100", "cifar-100-python/ with train, test and meta"),
}


class CIFARData(_LoaderMixin, pl.LightningDataModule):
    """CIFAR-10 / CIFAR-100 (``variant``) read by ``torchvision.datasets.CIFAR10/100`` from ``root``.

    Split: the last ``50000 - val_size`` images of a fixed permutation of the official train set (generator
    seeded with ``split_seed``) train, the first ``val_size`` (default 5000) validate, the official test set
    tests; ``val_size=0`` validates on the test set. Transforms (the standard CIFAR recipe of He et al. 2016):
    train RandomCrop(32, padding=4) -> RandomHorizontalFlip -> ToTensor -> Normalize(train-set mean/std,
    :data:`CIFAR_STATS`); val/test ToTensor -> Normalize.

    ``download=false`` (default) never touches the network. ``verify=true`` (default) keeps torchvision's md5
    check of every file; ``verify=false`` only requires the files to exist (for re-packed or synthetic copies
    in the same pickle format). A missing or incomplete root raises a one-line ``FileNotFoundError``.
    """

    def __init__(self, variant: str = "cifar10", root: str = "data/cifar10", download: bool = False,
                 verify: bool = True, val_size: int = 5000, split_seed: int = 0, batch_size: int = 128,
                 num_workers: int = 2, seed: int = 0, stem: str = "small") -> None:
        super().__init__()
        _check_choice("data.variant", variant, tuple(CIFAR_STATS))
        _check_common(batch_size, num_workers, seed, stem)
        _check_int("data.val_size", val_size, 0)
        _check_int("data.split_seed", split_seed, 0)
        self.variant, self.root, self.download, self.verify = variant, Path(root).expanduser(), download, verify
        self.val_size, self.split_seed = val_size, split_seed
        self.batch_size, self.num_workers, self.seed, self.stem = batch_size, num_workers, seed, stem
        self.name, self.in_channels, self.input_size = variant, 3, (3, 32, 32)
        self.num_classes = 10 if variant == "cifar10" else 100
        mean, std = CIFAR_STATS[variant]
        self.train_transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                          T.Normalize(mean, std)])
        self.eval_transform = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
        self._train = self._val = self._test = None

    def _dataset(self, train: bool, transform, download: bool = False) -> datasets.CIFAR10:
        cls = _CIFAR[(self.variant, bool(self.verify))]
        pretty, expected = _CIFAR_LAYOUT[self.variant]
        try:
            return cls(str(self.root), train=train, transform=transform, download=download)
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError) as err:
            raise ValueError(self._unreadable(cls, err)) from None
        except (RuntimeError, OSError) as err:
            if download:
                raise RuntimeError(f"could not download {pretty} into data.root='{self.root}': "
                                   f"{_one_line(err)}") from None
            names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
            present = all((self.root / cls.base_folder / name).is_file() for name in names)
            if present:
                failing = [str(self.root / cls.base_folder / name) for name, md5 in cls.train_list + cls.test_list
                           + [(cls.meta["filename"], cls.meta["md5"])]
                           if not check_integrity(str(self.root / cls.base_folder / name), md5)]
                raise FileNotFoundError(f"{', '.join(failing) or 'a file'} of {pretty} in data.root='{self.root}' fails "
                                 "torchvision's md5 check (a damaged or re-packed copy): replace it, or set "
                                 "data.verify=false to accept re-packed files") from None
            hint = "set data.download=true or point data.root at it"
            raise FileNotFoundError(f"data.root='{self.root}' does not contain {pretty} (expected {expected}); "
                                    f"{hint}") from None

    def _unreadable(self, cls, err: BaseException) -> str:
        """The line for a CIFAR file that does not unpickle: the first file of the split that fails, by path."""
        for name, _ in cls.train_list + cls.test_list + [(cls.meta["filename"], None)]:
            path = self.root / cls.base_folder / name
            try:
                with open(path, "rb") as f:
                    entry = pickle.load(f, encoding="latin1")
                if name != cls.meta["filename"] and not ("data" in entry and ("labels" in entry
                                                                                or "fine_labels" in entry)):
                    raise ValueError("no 'data' and labels in it")
            except Exception as e:  # noqa: BLE001 (any failure names the file)
                return (f"{path} is not a readable {_CIFAR_LAYOUT[self.variant][0]} file "
                        f"({type(e).__name__}: {_one_line(e)}); replace it (data.download=true fetches a fresh copy)")
        return f"data.root='{self.root}' holds an unreadable {_CIFAR_LAYOUT[self.variant][0]} file: {_one_line(err)}"

    def prepare_data(self) -> None:
        if self.download:
            self._dataset(train=True, transform=None, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        train_full = self._dataset(train=True, transform=self.train_transform, download=self.download)
        val_full = copy.copy(train_full)  # shares the image array, different transform
        val_full.transform = self.eval_transform
        val_full.transforms = StandardTransform(self.eval_transform)
        if self.val_size >= len(train_full):
            raise ValueError(f"data.val_size={self.val_size} is invalid: must be below the {len(train_full)} "
                             "training images")
        perm = torch.randperm(len(train_full), generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        self._test = self._dataset(train=False, transform=self.eval_transform)
        self._train = Subset(train_full, perm[self.val_size:])
        self._val = Subset(val_full, perm[:self.val_size]) if self.val_size else self._test


# ----------------------------------------------------------------------------------------------- ImageFolder
class CorruptImageError(ValueError):
    """An image file that cannot be decoded; the message names its path."""


_JPEG_MAGIC = b"\xff\xd8\xff"  # SOI marker + the first byte of the next marker: every JPEG/JFIF/Exif file starts so
_DECODE_JPEG = []  # [torchvision.io.decode_jpeg or None], filled on first use (per process: DataLoader workers too)


def _jpeg_decoder():
    """``torchvision.io.decode_jpeg`` with ``mode=ImageReadMode.RGB`` bound, or None where this torchvision cannot
    decode a JPEG (no image I/O or no image extension: then PIL decodes every file). torchvision 0.29 deprecated
    its image I/O in favour of TorchCodec; its DeprecationWarning (one per call) is silenced for these calls."""
    if not _DECODE_JPEG:
        decode = None
        try:
            from torchvision.io import ImageReadMode, decode_jpeg
        except ImportError:  # a torchvision that removed its image I/O
            pass
        else:
            def decode(data: Tensor) -> Tensor:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    return decode_jpeg(data, mode=ImageReadMode.RGB)

            import io

            from PIL import Image

            probe = io.BytesIO()
            Image.new("RGB", (8, 8)).save(probe, "JPEG")
            try:  # a torchvision built without its image extension raises here
                decode(torch.frombuffer(bytearray(probe.getvalue()), dtype=torch.uint8))
            except RuntimeError:
                decode = None
        _DECODE_JPEG.append(decode)
    return _DECODE_JPEG[0]


def _corrupt(path: str, err: BaseException) -> CorruptImageError:
    import re

    # decode_jpeg's messages start with its C++ source location: "decode_jpeg, /.../decode_jpeg.cpp:171, <reason>"
    reason = re.sub(r"^\w+, \S+:\d+, ", "", _one_line(err))
    return CorruptImageError(f"cannot read image {path} ({type(err).__name__}: {reason}); replace or delete it")


def read_image(path: str) -> Tensor:
    """An image file as a uint8 RGB tensor ``(3, H, W)``, with a one-line :class:`CorruptImageError` naming a file
    it cannot read (the first read of a file too big a tree to check at setup, see :data:`IMAGE_CHECK_LIMIT`).

    JPEG files (recognised by their first bytes ``FF D8 FF``, whatever their extension) are decoded by
    ``torchvision.io.decode_jpeg(mode=ImageReadMode.RGB)`` (libjpeg-turbo; grayscale and CMYK JPEGs come out as
    3-channel RGB, the same pixels as PIL's ``convert("RGB")``); every other file (PNG, BMP, TIFF, WebP... and a
    PNG named ``.JPEG``, as ImageNet has) by PIL, converted to RGB as ``torchvision.datasets.folder.default_loader``
    does. Both return the tensor with channels-last strides (``H, W, C`` in memory), the layout in which the uint8
    resize of :class:`_ImageFolderData`'s transforms is fastest.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise _corrupt(path, e) from None
    decode = _jpeg_decoder() if raw[:3] == _JPEG_MAGIC else None
    if decode is not None:
        try:
            return decode(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        except RuntimeError as e:  # libjpeg's errors: truncated data, bad markers or tables...
            raise _corrupt(path, e) from None
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as img:
            rgb = np.array(img.convert("RGB"))
    except Exception as e:  # noqa: BLE001 (PIL raises OSError, SyntaxError, ValueError... for damaged files)
        raise _corrupt(path, e) from None
    return torch.from_numpy(rgb).permute(2, 0, 1)


class _ToGray:
    """uint8 RGB ``(3, H, W)`` -> uint8 luma ``(1, H, W)`` exactly as PIL's ``Image.convert("L")`` (ITU-R 601-2):
    ``L = (19595 R + 38470 G + 7471 B + 2^15) >> 16``, i.e. ``0.299 R + 0.587 G + 0.114 B`` rounded to nearest
    (torchvision's tensor ``Grayscale`` truncates instead, half a level darker on average)."""

    def __call__(self, x: Tensor) -> Tensor:
        r, g, b = x.to(torch.int32).unbind(-3)
        return ((r * 19595 + g * 38470 + b * 7471 + 32768) >> 16).to(torch.uint8).unsqueeze(-3)

    def __repr__(self) -> str:
        return "_ToGray()"


class _ToTensor:
    """uint8 image tensor -> contiguous float32 in [0, 1] (``x / 255``), what ``ToTensor`` does to a PIL image.
    Contiguous (channels-first in memory, whatever the input's strides), as ``ToTensor``'s output; one strided
    copy straight into float32 takes about half the time of ``contiguous()`` then ``float()``."""

    def __call__(self, x: Tensor) -> Tensor:
        return torch.empty(x.shape, dtype=torch.float32).copy_(x).div_(255)

    def __repr__(self) -> str:
        return "_ToTensor()"


# A tree with at most this many images has every file checked at setup (PIL reads each header, and a PNG's
# chunks and checksums): a damaged file stops the job before training, naming it. A bigger tree (ImageNet's
# 1.3M files: minutes of reading before every job) is checked at each file's first read by :func:`read_image`.
IMAGE_CHECK_LIMIT = 100_000


def check_images(paths: list[str]) -> None:
    """Raise :class:`CorruptImageError` naming the first file PIL cannot open and verify."""
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as img:
                img.verify()
        except Exception as e:  # noqa: BLE001
            raise CorruptImageError(f"cannot read image {path} ({type(e).__name__}: {_one_line(e)}); "
                                    "replace or delete it") from None


class _ClassFolder(datasets.ImageFolder):
    """``ImageFolder`` with a given class list (the train split's), so val/test labels match train's, and a
    loader that names a damaged file (:func:`read_image`)."""

    def __init__(self, root: str, classes: list[str], **kwargs) -> None:
        self._given_classes = list(classes)
        super().__init__(root, loader=read_image, **kwargs)

    def find_classes(self, directory):
        return self._given_classes, {name: i for i, name in enumerate(self._given_classes)}


def _class_dirs(directory: Path) -> list[str]:
    """Class folder names the way ``torchvision.datasets.folder.find_classes`` lists them."""
    return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())


class _ImageFolderData(_LoaderMixin, pl.LightningDataModule):
    """Shared code of :class:`ImageNetData` and :class:`FolderData`: an ImageFolder tree ``root/<split>/<class>/``.

    Train: Resize(resize) (short side, bilinear, antialiased) -> RandomCrop(image_size) -> RandomHorizontalFlip
    -> ToTensor -> Normalize; val/test: Resize(resize) -> CenterCrop(image_size) -> ToTensor -> Normalize
    (ImageNet mean/std for RGB, their average for grayscale, which is PIL's "L" of the RGB image). Class indices
    come from ``root/train`` (sorted folder names) and are reused for val/test, whose class folders must be a
    subset of train's. A damaged image stops the job with one line naming its path: at setup for a tree of up to
    :data:`IMAGE_CHECK_LIMIT` images, else at its first read.

    Decoding: :func:`read_image`, i.e. ``torchvision.io.decode_jpeg`` for JPEG files (PIL for the rest), and the
    transforms work on the uint8 tensor (``v2.Resize``'s native uint8 antialiased bilinear kernel; v1 crop and flip,
    which draw the same random numbers as they did on PIL images, so a seed gives the same crops and flips as
    before). Measured by ``python analysis/bench_data.py`` (one thread, 64 synthetic 500x375 quality-90 JPEGs,
    2026-11-24, a shared 2-core AMD EPYC): the train sample path runs x1.75-1.86 the images/s of PIL's
    (``default_loader`` + PIL transforms; 108 -> 202 img/s), val x1.8-2.0, decoding alone x1.2-1.3 (Pillow 13 is
    itself built on libjpeg-turbo 3.2; Pillow-SIMD is not used). Pixel values: the decoded images equal PIL's
    (max difference 0: both are libjpeg-turbo with its default ISLOW IDCT; another libjpeg build may differ by a
    level), and samples differ from the PIL path's by at most 1/255 before normalization, in 0.2% of the values
    (the resize's rounding). The data config, hence every identity key, is unchanged.
    """

    layout = "root/train/<class>/<image> and root/val/<class>/<image>"
    test_folder = False  # read root/test/ when it exists (else test = val)

    def __init__(self, root, image_size, resize, num_classes, in_channels, batch_size, num_workers, seed, stem,
                 name) -> None:
        super().__init__()
        _check_common(batch_size, num_workers, seed, stem)
        _check_int("data.image_size", image_size)
        resize = image_size if resize is None else resize
        _check_int("data.resize", resize)
        if resize < image_size:
            raise ValueError(f"data.resize={resize} is invalid: must be >= data.image_size={image_size}")
        _check_choice("data.in_channels", in_channels, (1, 3))
        if num_classes is not None:
            _check_int("data.num_classes", num_classes)
        self.root, self.image_size, self.resize = Path(root).expanduser(), image_size, resize
        self.batch_size, self.num_workers, self.seed, self.stem = batch_size, num_workers, seed, stem
        self.name, self.in_channels = name, in_channels
        self.input_size = (in_channels, image_size, image_size)
        train_dir = self.root / "train"
        self.num_classes = len(_class_dirs(train_dir)) if train_dir.is_dir() else num_classes
        if not self.num_classes:
            raise FileNotFoundError(f"data.root='{self.root}' has no class folders in {train_dir} and "
                                    f"data.num_classes is not set (expected {self.layout})")
        from torchvision.transforms import v2

        gray = [_ToGray()] if in_channels == 1 else []
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if in_channels == 3 else ((0.449,), (0.226,))
        # v2.Resize: native uint8 antialiased bilinear (PIL's filter); v1 crop/flip: the same random draws as on PIL
        size = v2.Resize(resize, interpolation=T.InterpolationMode.BILINEAR, antialias=True)
        self.train_transform = T.Compose(gray + [size, T.RandomCrop(image_size), T.RandomHorizontalFlip(),
                                                 _ToTensor(), T.Normalize(mean, std)])
        self.eval_transform = T.Compose(gray + [size, T.CenterCrop(image_size), _ToTensor(), T.Normalize(mean, std)])
        self._train = self._val = self._test = None

    def _folder(self, split: str, classes: list[str], transform) -> datasets.ImageFolder:
        directory = self.root / split
        extra = sorted(set(_class_dirs(directory)) - set(classes))
        if extra:
            raise ValueError(f"{directory} has class folders missing from {self.root / 'train'}: "
                             f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''} (expected {self.layout})")
        try:  # train needs every class; val/test may lack some
            dataset = _ClassFolder(str(directory), classes, transform=transform, allow_empty=split != "train")
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{directory} has class folders without images: {_one_line(err)} "
                                    f"(expected {self.layout})") from None
        if len(dataset) == 0:
            raise FileNotFoundError(f"{directory} contains no images (expected {self.layout})")
        return dataset

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        if not self.root.is_dir():
            raise FileNotFoundError(f"data.root='{self.root}' does not exist (expected {self.layout})")
        for split in ("train", "val"):
            if not (self.root / split).is_dir():
                raise FileNotFoundError(f"data.root='{self.root}' has no {split}/ folder: {self.root / split} "
                                        f"is missing (expected {self.layout})")
        classes = _class_dirs(self.root / "train")
        if not classes:
            raise FileNotFoundError(f"{self.root / 'train'} has no class folders (expected {self.layout})")
        if len(classes) != self.num_classes:
            raise ValueError(f"{self.root / 'train'} has {len(classes)} class folders but the model was built for "
                             f"data.num_classes={self.num_classes}")
        train = self._folder("train", classes, self.train_transform)
        val = self._folder("val", classes, self.eval_transform)
        use_test = self.test_folder and (self.root / "test").is_dir()
        test = self._folder("test", classes, self.eval_transform) if use_test else val
        files = [path for ds in dict.fromkeys((train, val, test)) for path, _ in ds.samples]
        if len(files) <= IMAGE_CHECK_LIMIT:
            check_images(files)
        self._train, self._val, self._test = train, val, test


class ImageNetData(_ImageFolderData):
    """ILSVRC-2012 as an ImageFolder tree ``root/train/<class>/*.JPEG`` and ``root/val/<class>/*``.

    Transforms follow Bi-Real Net (Liu et al., ECCV 2018), section 4.1: train Resize(256) (short side) ->
    RandomCrop(224) -> RandomHorizontalFlip -> ToTensor -> Normalize(ImageNet mean/std); val and test (test =
    the val split) Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize. ``resize``/``image_size`` override
    256/224. ``num_classes`` is the number of class folders in ``root/train`` when it exists, else the
    ``num_classes`` field (1000); ``setup`` raises a one-line error naming the path for a missing root, a
    missing ``train/``/``val/`` or a class tree without images. JPEGs are decoded by ``torchvision.io.decode_jpeg``
    (about x1.8 the images/s of PIL per core, see :class:`_ImageFolderData`), other files by PIL.
    """

    def __init__(self, root: str = "data/imagenet", image_size: int = 224, resize: int = 256,
                 num_classes: int = 1000, batch_size: int = 128, num_workers: int = 2, seed: int = 0,
                 stem: str = "imagenet") -> None:
        super().__init__(root, image_size, resize, num_classes, 3, batch_size, num_workers, seed, stem, "imagenet")


class FolderData(_ImageFolderData):
    """Any ImageFolder tree ``root/train/<class>/<image>``, ``root/val/<class>/<image>`` and optionally
    ``root/test/<class>/<image>`` (test = val without it).

    Transforms: train Resize(resize) -> RandomCrop(image_size) -> RandomHorizontalFlip -> ToTensor ->
    Normalize; val/test Resize(resize) -> CenterCrop(image_size) -> ToTensor -> Normalize (ImageNet mean/std;
    ``in_channels=1`` converts to grayscale). ``resize`` defaults to ``image_size``. ``num_classes`` is counted
    from ``root/train``; without that folder the ``num_classes`` field must be set, else construction raises
    a one-line ``FileNotFoundError`` naming the path. Errors in ``setup`` are those of :class:`ImageNetData`.
    Images may be in any format PIL reads (:func:`read_image`: JPEGs by ``torchvision.io.decode_jpeg``).
    """

    test_folder = True

    def __init__(self, root: str = "data/folder", image_size: int = 32, resize: int | None = None,
                 num_classes: int | None = None, in_channels: int = 3, batch_size: int = 128, num_workers: int = 2,
                 seed: int = 0, stem: str = "imagenet", name: str = "folder") -> None:
        super().__init__(root, image_size, resize, num_classes, in_channels, batch_size, num_workers, seed, stem,
                         name)
