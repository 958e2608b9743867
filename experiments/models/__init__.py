"""Flax Linen models for the training program, selected by name.

Every model maps images ``(N, H, W, C)`` to logits ``(N, num_classes)``. With
``return_features=True`` it returns ``(logits, features)``, where ``features``
is the input of the final linear layer (used by CORAL). The final layer is
always a ``nn.Dense`` named ``'head'`` (the classifier head that Hessian
alignment and Fishr act on: ``params['head']``).

Models are pure: no BatchNorm (GroupNorm / LayerNorm only), no dropout, so
``model.apply({'params': params}, x)`` is a pure function as the transforms'
extra-args protocol requires.

Names (``get_model``): ``mlp``, ``mnist_cnn`` (DomainBed's MNIST ConvNet),
``resnet`` (a small GroupNorm ResNet), ``vit`` (a small Vision Transformer),
plus ``*_small`` (a narrower variant that trains fast on CPU) and ``*_tiny``
(a few hundred parameters, for tests).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict

import flax.linen as nn

from experiments.models.convnet import MNISTConvNet
from experiments.models.mlp import MLP
from experiments.models.resnet import ResNet
from experiments.models.vit import ViT

_REGISTRY: Dict[str, Callable[..., nn.Module]] = {
    "mlp": functools.partial(MLP, features=(256, 256)),
    "mlp_small": functools.partial(MLP, features=(128,)),
    "mlp_tiny": functools.partial(MLP, features=(8,)),
    # DomainBed's MNIST_CNN: 64-128-128-128 channels, GroupNorm(8).
    "mnist_cnn": functools.partial(MNISTConvNet, widths=(64, 128, 128, 128)),
    "mnist_cnn_small": functools.partial(MNISTConvNet, widths=(16, 32, 32, 32)),
    # Half of DomainBed's widths with stride 2 on the first two layers
    # (28 -> 14 -> 7): ~1/16 of mnist_cnn's FLOPs; the RotatedMNIST CPU default.
    "mnist_cnn_fast": functools.partial(MNISTConvNet, widths=(32, 64, 64, 64),
                                        strides=(2, 2, 1, 1)),
    "mnist_cnn_tiny": functools.partial(MNISTConvNet, widths=(4, 8, 8, 8),
                                        groups=2),
    "resnet": functools.partial(ResNet, stage_sizes=(2, 2, 2), width=32),
    "resnet_small": functools.partial(ResNet, stage_sizes=(1, 1), width=16),
    "resnet_tiny": functools.partial(ResNet, stage_sizes=(1,), width=4,
                                     groups=2),
    "vit": functools.partial(ViT, patch_size=4, dim=64, depth=4, heads=4),
    "vit_small": functools.partial(ViT, patch_size=7, dim=32, depth=2, heads=2),
    "vit_tiny": functools.partial(ViT, patch_size=4, dim=8, depth=1, heads=2),
}

MODEL_NAMES = tuple(sorted(_REGISTRY))


def get_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
  """Builds the model registered as ``name`` with ``num_classes`` outputs.

  Args:
    name: one of ``MODEL_NAMES``.
    num_classes: number of output logits.
    **kwargs: overrides of the registered constructor arguments.

  Returns:
    A flax Linen module; ``module.apply({'params': p}, x)`` returns logits.

  Example:
    >>> model = get_model('mlp_tiny', num_classes=4)
  """
  if name not in _REGISTRY:
    raise ValueError(f"config.model: unknown model {name!r}; valid choices: "
                     f"{list(MODEL_NAMES)}")
  return _REGISTRY[name](num_classes=num_classes, **kwargs)


__all__ = ["MLP", "MNISTConvNet", "MODEL_NAMES", "ResNet", "ViT", "get_model"]
