"""MNIST, Fashion-MNIST and Kuzushiji-MNIST from the standard IDX files: the reader (:func:`read_idx`), where the
files are looked for, and the in-memory :class:`MNISTData`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import datasets

from onebit.core.paths import absolute
from onebit.data.common import (
    TensorBatches,
    _check_choice,
    _check_common,
    _check_int,
    _InMemoryLoaders,
    _one_line,
)

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
        self.root = None if root is None else Path(absolute(root))
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
        return Path(absolute(os.environ.get("ONEBIT_DATA", "data"))) / self.variant

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
