"""Model families. Each binary model takes ``sign`` and ``weight`` components; built with a real activation and
``weight=None`` it is its own real-valued twin (same state-dict keys)."""

from onebit.nn.models.densenet import BinaryDenseNet
from onebit.nn.models.resnet import BiRealResNet
from onebit.nn.models.torchvision_resnet import TorchvisionResNet

__all__ = ["BiRealResNet", "BinaryDenseNet", "TorchvisionResNet"]
