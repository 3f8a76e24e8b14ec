"""Handing over a real 1-bit model: a run's binary net as a Larq Compute Engine flatbuffer, checked against PyTorch
(:mod:`~onebit.deploy.export`)."""
