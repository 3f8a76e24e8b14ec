"""Image files and ImageFolder trees: JPEG decoding by ``torchvision.io.decode_jpeg`` (:func:`read_image`, PIL for
other formats), damaged-file checks (:class:`CorruptImageError`), uint8 transforms, and the data modules over a
``root/<split>/<class>/<image>`` tree: :class:`ImageNetData` (Bi-Real's transforms) and :class:`FolderData`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torchvision import datasets
from torchvision import transforms as T

from onebit.core.paths import absolute
from onebit.data.common import _check_choice, _check_common, _check_int, _LoaderMixin, _one_line

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        self.root, self.image_size, self.resize = Path(absolute(root)), image_size, resize
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
