"""The static parts of a GAN, built once from the config.

A ``GAN`` holds what the pure steps close over: the two architectures, the
loss, the penalties, both optimizers and the dataset. It holds no arrays; the
arrays live in the ``TrainState``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from absl import logging

from gan_jax import losses as losses_lib
from gan_jax import optim
from gan_jax import penalties as penalties_lib
from gan_jax import data as data_lib
from gan_jax import models
from gan_jax import flags as flags_lib
from gan_jax.errors import UserError
from gan_jax.flags import Config


# Discriminators that give k+1 logits when --num_generators=k > 1 (MAD-GAN).
MULTI_OUTPUT = {"pacgan_maxout", "mlp"}


@dataclasses.dataclass(frozen=True)
class GAN:
  cfg: Config
  dataset: Any
  generator: nn.Module
  discriminator: nn.Module
  loss: losses_lib.Loss
  penalties: Tuple[Tuple[str, Callable], ...]
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  # D's optimizer as unrolled GAN differentiates through it (optim.py).
  d_tx_unrolled: Optional[optax.GradientTransformation] = None

  @property
  def num_classes(self) -> int:
    return self.dataset.num_classes if self.cfg.conditional else 0

  @property
  def shape(self) -> Tuple[int, ...]:
    return tuple(self.dataset.shape)

  def sample_z(self, key, batch_shape) -> jax.Array:
    shape = tuple(batch_shape) + (self.cfg.z_dim,)
    if self.cfg.z_dist == "uniform":
      return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)
    return jax.random.normal(key, shape)

  def sample_labels(self, key, batch_shape) -> Optional[jax.Array]:
    if not self.num_classes:
      return None
    return jax.random.randint(key, tuple(batch_shape), 0, self.num_classes)

  def pack(self, x: jax.Array) -> jax.Array:
    """PacGAN: groups of ``pack`` consecutive samples joined on the last axis.

    (b, ..., c) -> (b / m, ..., m * c): for vectors the m samples are
    concatenated, for images their channels are stacked.
    """
    m = self.cfg.pack
    if m == 1:
      return x
    b = x.shape[0]
    x = x.reshape((b // m, m) + x.shape[1:])
    x = jnp.moveaxis(x, 1, -2)
    return x.reshape(x.shape[:-2] + (m * x.shape[-1],))

  def generate(self, params, state, z, y, train: bool, rng=None):
    """G(z, y) -> (samples, updated non-trainable state).

    With ``num_generators`` k > 1 (MAD-GAN) ``params``/``state`` are stacked
    on a leading k axis and the batch is split into k consecutive blocks:
    rows [i b/k, (i+1) b/k) come from generator i (``generator_labels``).
    """
    k = self.cfg.num_generators
    if k == 1:
      return self._generate_one(params, state, z, y, train, rng)
    b = z.shape[0]
    pad = -b % k
    if pad and train:
      raise ValueError(f"batch {b} must divide by num_generators {k}")
    z = jnp.concatenate([z, jnp.zeros((pad,) + z.shape[1:], z.dtype)])
    zs = z.reshape((k, (b + pad) // k) + z.shape[1:])
    x, state = jax.vmap(
        lambda p, s, zi: self._generate_one(p, s, zi, None, train, rng))(
            params, state, zs)
    return x.reshape((b + pad,) + x.shape[2:])[:b], state

  def generator_labels(self, b: int) -> jax.Array:
    """Which generator made each row of a batch of ``b`` (MAD-GAN)."""
    return jnp.arange(b) // (b // self.cfg.num_generators)

  def _generate_one(self, params, state, z, y, train: bool, rng=None):
    variables = {"params": params, **state}
    rngs = {"dropout": rng} if rng is not None else {}
    if train:
      x, new_state = self.generator.apply(
          variables, z, y, train=True, mutable=list(state), rngs=rngs)
      return x, {**state, **new_state}
    return self.generator.apply(variables, z, y, train=False, rngs=rngs), state

  def discriminate(self, params, state, x, y, train: bool, rng=None):
    """D(pack(x), y) -> (logits, updated non-trainable state)."""
    variables = {"params": params, **state}
    rngs = {"dropout": rng} if rng is not None else {}
    x = self.pack(x)
    if train:
      logits, new_state = self.discriminator.apply(
          variables, x, y, train=True, mutable=list(state), rngs=rngs)
      return logits, {**state, **new_state}
    return self.discriminator.apply(variables, x, y, train=False,
                                    rngs=rngs), state


def _reads(losses_):
  """The flag matters for these built-in losses (and any user loss)."""
  return lambda c: c.loss in losses_ or c.loss not in losses_lib.BUILTIN


# flag -> (when it has an effect, what it is for). A flag changed from its
# default where it has none gets a warning: a knob that silently does
# nothing can waste a run. (Not an error: a sweep over --loss or
# --minibatch_disc with the other knobs fixed is a normal experiment.)
INERT_UNLESS = {
    "label_smoothing": (_reads(("minimax", "ns")),
                        "it smooths the minimax/ns losses' real target"),
    "lsgan_a": (_reads(("lsgan",)), "it is a target of --loss=lsgan"),
    "lsgan_b": (_reads(("lsgan",)), "it is a target of --loss=lsgan"),
    "lsgan_c": (_reads(("lsgan",)), "it is a target of --loss=lsgan"),
    "gp_weight": (lambda c: "gp" in c.penalties,
                  "it weights --penalties=gp"),
    "r1_gamma": (lambda c: "r1" in c.penalties, "it weights --penalties=r1"),
    "penalty_every": (lambda c: bool(c.penalties),
                      "it spaces out --penalties"),
    "ema_start": (lambda c: c.ema_decay > 0, "it needs --ema_decay > 0"),
    "mbd_kernels": (lambda c: c.minibatch_disc == "salimans",
                    "it sizes --minibatch_disc=salimans"),
    "mbd_kernel_dim": (lambda c: c.minibatch_disc == "salimans",
                       "it sizes --minibatch_disc=salimans"),
    "mbstd_group_size": (lambda c: c.minibatch_disc == "stddev",
                         "it sizes --minibatch_disc=stddev"),
}


def inert_flags(cfg: Config) -> Tuple[str, ...]:
  """One line for each flag set away from its default where it does
  nothing."""
  return tuple(f"--{name}={getattr(cfg, name)} has no effect here: {purpose}"
               for name, (active, purpose) in INERT_UNLESS.items()
               if getattr(cfg, name) != flags_lib.FLAGS[name].default
               and not active(cfg))


def build(cfg: Config, dataset=None) -> GAN:
  """Resolves every name in the config; unknown names and values out of
  their flags' bounds raise UserError."""
  flags_lib.check_bounds(cfg)
  if dataset is None:
    dataset = data_lib.get(cfg)
  num_classes = dataset.num_classes if cfg.conditional else 0
  if cfg.conditional and not dataset.num_classes:
    raise UserError(f"--conditional needs a labelled dataset; "
                    f"{cfg.dataset!r} has no labels")
  if cfg.pack > 1 and num_classes:
    raise UserError("--pack > 1 with a conditional model is not supported")
  if (cfg.num_generators > 1) != (cfg.loss == "madgan"):
    raise UserError("--num_generators > 1 (MAD-GAN) goes with --loss=madgan "
                    "and --loss=madgan with --num_generators > 1; got "
                    f"--num_generators={cfg.num_generators} "
                    f"--loss={cfg.loss}")
  if cfg.num_generators > 1 and (num_classes or cfg.pack > 1):
    raise UserError("--num_generators > 1 does not support --conditional or "
                    "--pack > 1")
  if cfg.num_generators > 1 and cfg.discriminator not in MULTI_OUTPUT:
    raise UserError(f"--num_generators > 1 needs a discriminator with k+1 "
                    f"outputs: {', '.join(sorted(MULTI_OUTPUT))}; got "
                    f"{cfg.discriminator!r}")
  generator = models.GENERATORS(cfg.generator, cfg, dataset.shape, num_classes)
  discriminator = models.DISCRIMINATORS(cfg.discriminator, cfg, dataset.shape,
                                        num_classes)
  loss = losses_lib.LOSSES(cfg.loss, cfg)
  for line in inert_flags(cfg):
    logging.warning("%s", line)
  penalties = tuple((name, penalties_lib.PENALTIES(name, cfg))
                    for name in cfg.penalties)
  return GAN(cfg=cfg, dataset=dataset, generator=generator,
             discriminator=discriminator, loss=loss, penalties=penalties,
             g_tx=optim.generator(cfg), d_tx=optim.discriminator(cfg),
             d_tx_unrolled=optim.discriminator(cfg, differentiable=True))
