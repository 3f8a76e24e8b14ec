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

Modules: :mod:`~onebit.data.common` (argument checks, sharding, :class:`TensorBatches`, the stratified split, the
DataLoader settings), :mod:`~onebit.data.digits`, :mod:`~onebit.data.mnist` (with the IDX reader),
:mod:`~onebit.data.cifar` and :mod:`~onebit.data.images` (JPEG decoding, ImageNet and image folders). This package
re-exports their public names, which the configs name (``_target_: onebit.data.DigitsData``...).
"""

from onebit.data.cifar import CIFAR_STATS, CIFARData
from onebit.data.common import STEMS, TensorBatches, shard_indices, stratified_split
from onebit.data.digits import DigitsData, load_digits
from onebit.data.images import (
    IMAGE_CHECK_LIMIT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CorruptImageError,
    FolderData,
    ImageNetData,
    check_images,
    read_image,
)
from onebit.data.mnist import MNIST_SYSTEM_DIRS, MNISTData, read_idx

__all__ = [
    "CIFAR_STATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_CHECK_LIMIT",
    "MNIST_SYSTEM_DIRS",
    "STEMS",
    "CIFARData",
    "CorruptImageError",
    "DigitsData",
    "FolderData",
    "ImageNetData",
    "MNISTData",
    "TensorBatches",
    "check_images",
    "load_digits",
    "read_idx",
    "read_image",
    "shard_indices",
    "stratified_split",
]
