"""Architectures, chosen by name (``--generator``, ``--discriminator``).

Contract (compare_gan's): every generator is a Flax Linen module called as
``G(z, y=None, train=True) -> x`` and every discriminator as
``D(x, y=None, train=True) -> logits`` of shape ``(batch,)``, so any loss meets
any architecture and conditioning is uniform (``y`` is an int label array or
None).

Variable collections: ``params``; ``batch_stats`` holds BatchNorm running
statistics *and* spectral-norm power-iteration vectors (both are non-trainable
state carried in the train state and checkpointed). Dropout draws from the
``dropout`` RNG stream. ``train=True`` updates ``batch_stats`` (BatchNorm uses
batch statistics, spectral norm advances its power iteration one step).

A registry entry is a factory ``(cfg, shape, num_classes) -> nn.Module``
taking a ``gan_jax.flags.Config``, the shape of one data sample (``(2,)``,
``(28, 28, 1)``, ...) and the number of classes (0 = unconditional). It reads
the config fields it needs (``z_dim``, ``cross_replica_bn`` -> BatchNorm
``axis_name='data'``, ``compute_dtype`` -> module ``dtype``, ...).
"""

import flax.linen as nn

from gan_jax.registry import Registry

GENERATORS = Registry("generator", returns=nn.Module)
DISCRIMINATORS = Registry("discriminator", returns=nn.Module)

# Importing the modules registers their architectures.
from gan_jax.models import mlp  # noqa: E402,F401
from gan_jax.models import dcgan, goodfellow, resnet  # noqa: E402,F401
