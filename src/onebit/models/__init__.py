"""Model families. Each binary model takes ``sign`` and ``weight`` components; built with a real activation and
``weight=None`` it is its own real-valued twin (same state-dict keys)."""

from onebit.models.densenet import BinaryDenseNet
from onebit.models.resnet import BiRealResNet
from onebit.models.torchvision_resnet import TorchvisionResNet

__all__ = ["BiRealResNet", "BinaryDenseNet", "TorchvisionResNet"]
