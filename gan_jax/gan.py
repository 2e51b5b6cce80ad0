"""Builds a run's method from its config, and warns of flags without effect.

``build(cfg)`` resolves every name in the config (the method, its
architectures, loss, penalties, dataset) into a ``gan_jax.methods.Method``:
what the pure steps close over. It holds no arrays; the arrays live in the
``TrainState``.
"""

from __future__ import annotations

from typing import Optional, Tuple

from absl import logging

from gan_jax import losses as losses_lib
from gan_jax import data as data_lib
from gan_jax import methods as methods_lib
from gan_jax import models
from gan_jax import flags as flags_lib
from gan_jax import sections
from gan_jax.flags import Config, ReadLog


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
  for section in sections.of_owner("penalty"):
    if section not in cfg.penalties:
      why.update({f"{section}.{key}": f"--penalties does not name {section}"
                  for key in sections.changed(cfg, section)})
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


def build(cfg: Config, dataset=None) -> methods_lib.Method:
  """Resolves every name in the config; unknown names, values out of their
  flags' bounds and keys a method's section does not take raise
  UserError."""
  flags_lib.check_bounds(cfg)
  builders = []  # what each builder reads, for the inert-flag warnings
  if dataset is None:
    builders.append(ReadLog(cfg, f"--dataset={cfg.dataset}"))
    dataset = data_lib.get(builders[-1])
  sections.check_unused(cfg, cfg.method)
  method = methods_lib.METHODS(cfg.method, cfg, dataset,
                               **sections.knobs(cfg, cfg.method))
  builders += method.builder_logs
  for line in inert_flags(cfg, getattr(dataset, "kind", None),
                          tuple(builders)):
    logging.warning("%s", line)
  return method
