"""CIFAR-10 / CIFAR-100 in torchvision's on-disk pickle format: :class:`CIFARData`, its per-channel statistics
(:data:`CIFAR_STATS`) and one-line errors for missing, damaged or re-packed files."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import Subset
from torchvision import datasets
from torchvision import transforms as T
from torchvision.datasets.utils import check_integrity
from torchvision.datasets.vision import StandardTransform

from onebit.core.paths import absolute
from onebit.data.common import _check_choice, _check_common, _check_int, _LoaderMixin, _one_line

# per-channel pixel mean / std of each training set (std of the pixels, not the often-copied 0.2023 variant)
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


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
        self.variant, self.root, self.download, self.verify = variant, Path(absolute(root)), download, verify
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
