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

  @property
  def z_support(self) -> Optional[Tuple[float, float]]:
    """The noise prior's bounds, None for an unbounded one."""
    return (-1.0, 1.0) if self.cfg.z_dist == "uniform" else None

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


def _uses_sgd(c):
  return "sgd" in (c.g_optimizer, c.d_optimizer)


def _ramps_momentum(c):
  return c.momentum_ramp_end > 0 and _uses_sgd(c)


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
    "ema_start": (lambda c: c.ema_decay > 0 and c.ema_start < c.num_steps,
                  "it needs --ema_decay > 0 and a start before --num_steps"),
    "profile_start": (lambda c: c.profile_steps > 0,
                      "it places --profile_steps"),
    "mbd_kernels": (lambda c: c.minibatch_disc == "salimans",
                    "it sizes --minibatch_disc=salimans"),
    "mbd_kernel_dim": (lambda c: c.minibatch_disc == "salimans",
                       "it sizes --minibatch_disc=salimans"),
    "mbstd_group_size": (lambda c: c.minibatch_disc == "stddev",
                         "it sizes --minibatch_disc=stddev"),
    "lr_decay_factor": (lambda c: c.lr_schedule == "exponential",
                        "it sets --lr_schedule=exponential"),
    "lr_min": (lambda c: c.lr_schedule == "exponential",
               "it floors --lr_schedule=exponential"),
    "momentum_ramp_end": (_uses_sgd, "it ramps SGD's momentum"),
    "momentum_ramp_start": (
        _ramps_momentum,
        "it starts the SGD momentum ramp of --momentum_ramp_end"),
    "final_momentum": (
        _ramps_momentum,
        "it ends the SGD momentum ramp of --momentum_ramp_end"),
    "parzen_sigma": (lambda c: "parzen" in c.eval_metrics,
                     "it sets the width of --eval_metrics=parzen"),
    "parzen_valid_examples": (
        lambda c: "parzen" in c.eval_metrics and not c.parzen_sigma,
        "it sizes the held-out set --eval_metrics=parzen chooses its width "
        "on"),
}


# Flags that only the builders of the architectures (and, for image_size,
# of the dataset) read. Which of them a run's builders read is recorded while
# they run (``ReadLog``), so an architecture registered by a user is judged by
# what its own builder reads.
COMPONENT_FLAGS = (
    "g_channels", "d_channels", "g_hidden", "d_hidden", "g_layers",
    "d_layers", "maxout_pieces", "d_conv", "g_upsample", "g_batchnorm",
    "g_norm", "d_norm", "d_dropout", "d_input_dropout", "cross_replica_bn",
    "minibatch_disc", "mbd_kernels", "mbd_kernel_dim", "mbstd_group_size",
    "mlp_init", "d_global_pool", "image_size")
# Flags used only for one kind of data ("toy" or image).
DATA_KIND_FLAGS = {
    "eval_samples": ("toy", "it sizes the toy metrics"),
    "eval_num_samples": ("image", "it sizes image evaluations"),
    "eval_metrics": ("image", "toy data gets its mode metrics"),
    "eval_real_split": ("image", "toy data gets its mode metrics"),
    "interp_pairs": ("image", "image runs write interpolation strips"),
    "interp_points": ("image", "image runs write interpolation strips"),
}


class ReadLog(Config):
  """A Config that records which of its fields are read (by a builder).

  A builder that takes the whole config (``to_dict``, ``items``) or a
  modified copy (``replace``) counts as reading every field."""

  __slots__ = ("names", "label")

  def __init__(self, cfg: Config, label: str):
    super().__init__(dict(cfg.items()))
    object.__setattr__(self, "names", set())
    object.__setattr__(self, "label", label)

  def __getattr__(self, name):
    self.names.add(name)
    return super().__getattr__(name)

  def _whole(self):
    self.names.add("*")

  def replace(self, **updates) -> Config:
    self._whole()
    return super().replace(**updates)

  def to_dict(self):
    self._whole()
    return super().to_dict()

  def items(self):
    self._whole()
    return super().items()

  def reads(self, name: str) -> bool:
    return name in self.names or "*" in self.names


def _comparable(value):
  return tuple(value) if isinstance(value, (list, tuple)) else value


def _changed(cfg: Config, name: str) -> bool:
  return (_comparable(getattr(cfg, name))
          != _comparable(flags_lib.FLAGS[name].default))


def _as_flag(value) -> str:
  if isinstance(value, (list, tuple)):
    return ",".join(map(str, value))
  return str(value)


def inert_flags(cfg: Config, kind: Optional[str] = None,
                builders: Tuple[ReadLog, ...] = ()) -> Tuple[str, ...]:
  """One line for each flag set away from its default where it does
  nothing: by the rules of INERT_UNLESS; for the data ``kind`` ("toy" or
  "image") if given; and, for COMPONENT_FLAGS, when none of ``builders``
  (the ReadLogs the generator, discriminator and dataset builders ran on)
  read it: image_size is judged when the dataset's builder is among them,
  the others when the architectures' builders are."""
  why = {name: purpose for name, (active, purpose) in INERT_UNLESS.items()
         if _changed(cfg, name) and not active(cfg)}
  if kind is not None:
    why.update({name: purpose
                for name, (wanted, purpose) in DATA_KIND_FLAGS.items()
                if _changed(cfg, name) and (kind == "toy") != (wanted == "toy")})
  data = [b for b in builders if b.label.startswith("--dataset=")]
  nets = [b for b in builders if not b.label.startswith("--dataset=")]
  for name in COMPONENT_FLAGS:
    owners = data if name == "image_size" else nets
    if (owners and _changed(cfg, name) and name not in why
        and not any(b.reads(name) for b in builders)):
      why[name] = f"not read by {' or '.join(b.label for b in owners)}"
  return tuple(f"--{name}={_as_flag(getattr(cfg, name))} has no effect "
               f"here: {purpose}"
               for name, purpose in why.items())


def architectures(cfg: Config, shape, num_classes: int):
  """(generator, discriminator, their builders' ReadLogs) of ``cfg`` for
  data of ``shape``."""
  logs = (ReadLog(cfg, f"--generator={cfg.generator}"),
          ReadLog(cfg, f"--discriminator={cfg.discriminator}"))
  generator = models.GENERATORS(cfg.generator, logs[0], shape, num_classes)
  discriminator = models.DISCRIMINATORS(cfg.discriminator, logs[1], shape,
                                        num_classes)
  return generator, discriminator, logs


def build(cfg: Config, dataset=None) -> GAN:
  """Resolves every name in the config; unknown names and values out of
  their flags' bounds raise UserError."""
  flags_lib.check_bounds(cfg)
  builders = []  # what each builder reads, for the inert-flag warnings
  if dataset is None:
    builders.append(ReadLog(cfg, f"--dataset={cfg.dataset}"))
    dataset = data_lib.get(builders[-1])
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
  generator, discriminator, logs = architectures(cfg, dataset.shape,
                                                num_classes)
  builders += logs
  loss = losses_lib.LOSSES(cfg.loss, cfg)
  for line in inert_flags(cfg, getattr(dataset, "kind", None),
                          tuple(builders)):
    logging.warning("%s", line)
  penalties = tuple((name, penalties_lib.PENALTIES(name, cfg))
                    for name in cfg.penalties)
  return GAN(cfg=cfg, dataset=dataset, generator=generator,
             discriminator=discriminator, loss=loss, penalties=penalties,
             g_tx=optim.generator(cfg), d_tx=optim.discriminator(cfg),
             d_tx_unrolled=optim.discriminator(cfg, differentiable=True))
