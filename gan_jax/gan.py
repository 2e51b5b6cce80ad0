"""Builds a run's method from its config, and warns of flags without effect.

``build(cfg)`` resolves every name in the config (the method, its
architectures, loss, penalties, dataset) into a ``gan_jax.methods.Method``:
what the pure steps close over. It holds no arrays; the arrays live in the
``TrainState``.
"""

from __future__ import annotations

from typing import Optional, Tuple

from absl import logging

from gan_jax import data as data_lib
from gan_jax import methods as methods_lib
from gan_jax import flags as flags_lib
from gan_jax import sections
from gan_jax.flags import Config


def _d_minibatch(c):
  return getattr(c, "d.minibatch") or "none"


# flag -> (when it has an effect, what it is for). A flag changed from its
# default where it has none gets a warning: a knob that silently does
# nothing can waste a run. (Not an error: a sweep over --d.minibatch with
# the other knobs fixed is a normal experiment. The keys of a loss's, an
# optimizer's or an architecture's section are checked against its factory
# instead: sections.build.)
INERT_UNLESS = {
    "ema_start": (lambda c: c.ema_decay > 0 and c.ema_start < c.num_steps,
                  "it needs --ema_decay > 0 and a start before --num_steps"),
    "profile_start": (lambda c: c.profile_steps > 0,
                      "it places --profile_steps"),
    "d.mbd_kernels": (lambda c: _d_minibatch(c) == "salimans",
                      "it sizes --d.minibatch=salimans"),
    "d.mbd_kernel_dim": (lambda c: _d_minibatch(c) == "salimans",
                         "it sizes --d.minibatch=salimans"),
    "d.mbstd_group_size": (lambda c: _d_minibatch(c) == "stddev",
                           "it sizes --d.minibatch=stddev"),
    "parzen_sigma": (lambda c: "parzen" in c.eval_metrics,
                     "it sets the width of --eval_metrics=parzen"),
    "parzen_valid_examples": (
        lambda c: "parzen" in c.eval_metrics and not c.parzen_sigma,
        "it sizes the held-out set --eval_metrics=parzen chooses its width "
        "on"),
}


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


def inert_flags(cfg: Config, kind: Optional[str] = None) -> Tuple[str, ...]:
  """One line for each flag set away from its default where it does
  nothing: by the rules of INERT_UNLESS; for the data ``kind`` ("toy" or
  "image") if given; a regularizer's section without the regularizer."""
  why = {name: purpose for name, (active, purpose) in INERT_UNLESS.items()
         if _changed(cfg, name) and not active(cfg)}
  if kind is not None:
    why.update({name: purpose
                for name, (wanted, purpose) in DATA_KIND_FLAGS.items()
                if _changed(cfg, name) and (kind == "toy") != (wanted == "toy")})
  for section in sections.of_owner("penalty"):
    if section not in cfg.penalties:
      why.update({f"{section}.{key}": f"--penalties does not name {section}"
                  for key in sections.changed(cfg, section)})
  return tuple(f"--{name}={_as_flag(getattr(cfg, name))} has no effect "
               f"here: {purpose}"
               for name, purpose in why.items())


def build(cfg: Config, dataset=None) -> methods_lib.Method:
  """Resolves every name in the config; unknown names, values out of their
  flags' bounds and keys a method's section does not take raise
  UserError."""
  flags_lib.check_bounds(cfg)
  if dataset is None:
    dataset = data_lib.get(cfg)
  sections.check_unused(cfg, cfg.method)
  method = methods_lib.METHODS(cfg.method, cfg, dataset,
                               **sections.knobs(cfg, cfg.method))
  method.optimizers  # pylint: disable=pointless-statement  (their keys)
  for line in inert_flags(cfg, getattr(dataset, "kind", None)):
    logging.warning("%s", line)
  return method
