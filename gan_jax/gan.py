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
from gan_jax import evaluate  # noqa: F401  (defines the --eval.* section)
from gan_jax import features as features_lib
from gan_jax import methods as methods_lib
from gan_jax import profiling  # noqa: F401  (defines --profile.*)
from gan_jax import flags as flags_lib
from gan_jax import sections
from gan_jax.flags import Config


# Flags used only for one kind of data ("toy" or image).
DATA_KIND_FLAGS = {
    "eval.metrics": ("image", "toy data gets its mode metrics"),
    "eval.real_split": ("image", "toy data gets its mode metrics"),
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


def _unused_sections(cfg: Config, owner: str, used, why: str):
  """``{"section.key": why}`` for the changed keys of the sections of
  ``owner``'s components that are not in ``used`` (``why`` formatted with
  the section's name)."""
  return {f"{section}.{key}": why.format(section)
          for section in sections.of_owner(owner) if section not in used
          for key in sections.changed(cfg, section)}


def inert_flags(cfg: Config, kind: Optional[str] = None) -> Tuple[str, ...]:
  """One line for each flag set away from its default where it does
  nothing (a warning: a knob that silently does nothing can waste a run;
  not an error: a sweep over --d.minibatch with the other knobs fixed is a
  normal experiment): by its section's rules (``sections.RULES``); for the
  data ``kind`` ("toy" or "image") if given; the section of a regularizer
  or a metric the run does not use."""
  why = sections.inert(cfg)
  why.update(_unused_sections(cfg, "penalty", cfg.penalties,
                              "--penalties does not name {}"))
  if kind is not None:
    why.update({name: purpose
                for name, (wanted, purpose) in DATA_KIND_FLAGS.items()
                if _changed(cfg, name) and (kind == "toy") != (wanted == "toy")})
    evaluated = () if kind == "toy" else features_lib.protocol(
        cfg.dataset, tuple(getattr(cfg, "eval.metrics"))).metrics
    why.update(_unused_sections(cfg, "metric", evaluated,
                                "the run does not evaluate {} "
                                "(--eval.metrics)"))
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
