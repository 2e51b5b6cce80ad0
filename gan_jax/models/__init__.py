"""Architectures, chosen by name (``--generator``, ``--discriminator``),
configured by their sections (``--g.channels=128``, ``--d.norm=spectral``).

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

A registry entry is a factory ``(shape, num_classes, common, **knobs) ->
nn.Module``: the shape of one data sample (``(2,)``, ``(28, 28, 1)``, ...),
the number of classes (0 = unconditional), the run's ``Common`` settings
(activation dtype, BatchNorm's cross-replica axis) and, as keyword
arguments with the architecture's own defaults, its knobs: the keys of the
``g`` section for a generator, of ``d`` for a discriminator, given only
when set. A key set for an architecture whose factory does not take it is
a one-line error naming the keys it takes. The keys are flags defined with
``knob`` (a new architecture reuses the existing ones, ``channels``,
``hidden``, ``norm``, ..., by taking a parameter of that name, and defines
the ones it adds).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax.numpy as jnp

from gan_jax import sections
from gan_jax.registry import Registry

GENERATORS = Registry("generator", returns=nn.Module)
DISCRIMINATORS = Registry("discriminator", returns=nn.Module)

_SIDES = {"g": ("generator", GENERATORS),
          "d": ("discriminator", DISCRIMINATORS)}


class Common(NamedTuple):
  """What every network of a run shares (run-level flags)."""
  dtype: Any = jnp.float32         # --compute_dtype (params stay float32)
  bn_axis_name: Optional[str] = None  # "data" with --cross_replica_bn


def common(cfg) -> Common:
  return Common(
      dtype=jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32,
      bn_axis_name="data" if cfg.cross_replica_bn else None)


def knob(side: str, key: str, kind: str, help_: str, *args, **kw) -> None:
  """Defines ``--<side>.<key>`` (side "g" or "d"), default None: the
  architecture's own default. ``kind``: integer, float_, boolean, string
  or enum (then ``args`` = the values). Defining a key that exists is a
  no-op, so architectures share keys."""
  if kind == "enum":
    sections.enum(side, key, None, args[0], help_, owner="architecture", **kw)
  else:
    getattr(sections, kind)(side, key, None, help_, owner="architecture",
                            **kw)


def knobs_of(side: str, name: str):
  """The keys of section ``side`` the architecture ``name`` takes (None:
  any); an unknown name has none."""
  registry = _SIDES[side][1]
  return sections.takes(registry.get(name), 3) if name in registry else []


def build(side: str, cfg, shape, num_classes: int) -> nn.Module:
  """The network of ``side`` ("g": ``--generator``, "d":
  ``--discriminator``) with the keys of its section set in ``cfg``."""
  flag, registry = _SIDES[side]
  return sections.build(registry, cfg, flag, side, tuple(shape), num_classes,
                        common(cfg))


# The keys the built-in architectures share.
knob("g", "channels", "integer", "Base width of convolutional generators "
     "(DCGAN: channels of the last hidden layer; ResNet: every block). "
     "Default 64.", bounds=">= 1")
knob("d", "channels", "integer", "Base width of convolutional "
     "discriminators (DCGAN: channels of the first layer; ResNet: every "
     "block). Default 64.", bounds=">= 1")
knob("g", "hidden", "integer", "Hidden width of MLP generators (default "
     "400).", bounds=">= 1")
knob("g", "layers", "integer", "Hidden layers of MLP generators (default "
     "4).", bounds=">= 0")
knob("d", "hidden", "integer", "Hidden width of MLP discriminators "
     "(default 200).", bounds=">= 1")
knob("d", "layers", "integer", "Hidden layers of MLP discriminators "
     "(default 3).", bounds=">= 0")
knob("g", "norm", "enum", "Generator normalization; default: the "
     "architecture's paper choice (DCGAN, ResNet: batch; Goodfellow MLP: "
     "none).", ["batch", "none"])
knob("d", "norm", "enum", "Discriminator normalization; default: the "
     "architecture's paper choice (DCGAN: batch; ResNet, Goodfellow maxout: "
     "none).", ["none", "batch", "spectral", "layer"])
knob("d", "minibatch", "enum", "Minibatch features before the "
     "discriminator's output layer: minibatch discrimination (Salimans et "
     "al. 2016) or minibatch standard deviation (Karras et al. 2018). "
     "Default none.", ["none", "salimans", "stddev"])


def _sizes(minibatch: str):
  """The rule of a key that sizes one kind of minibatch features."""
  return (lambda d: (d.get("minibatch") or "none") == minibatch,
          f"it sizes --d.minibatch={minibatch}")


knob("d", "mbd_kernels", "integer", "Minibatch discrimination: number of "
     "kernels B (default 100).", bounds=">= 1",
     inert_unless=_sizes("salimans"))
knob("d", "mbd_kernel_dim", "integer", "Minibatch discrimination: kernel "
     "dimension C (default 5).", bounds=">= 1",
     inert_unless=_sizes("salimans"))
knob("d", "mbstd_group_size", "integer", "Minibatch stddev: group size "
     "(the largest divisor of the batch not above it is used; default 4).",
     bounds=">= 1", inert_unless=_sizes("stddev"))

# Importing the modules registers their architectures.
from gan_jax.models import mlp  # noqa: E402,F401
from gan_jax.models import dcgan, goodfellow, resnet  # noqa: E402,F401
