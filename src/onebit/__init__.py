"""onebit: experiments with 1-bit (binary) CNNs: Bi-Real Net, BinaryDenseNet, FTBNN."""

__version__ = "0.1.0"
