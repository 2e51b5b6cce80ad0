"""Optimizers and learning-rate schedules (optax), chosen by name and
configured by their sections.

Generator and discriminator have their own optimizer (two time-scale update
rule, Heusel et al. 2017): ``--g_optimizer=adam`` with the keys of the
``g_optimizer`` section (``--g_optimizer.lr=2e-4 --g_optimizer.b1=0.5``),
``--d_optimizer`` with ``d_optimizer``'s. Both follow ``--lr_schedule``,
with the keys of its section (``--lr_schedule.decay_factor``). A key the
chosen optimizer or schedule does not take is a one-line error
(``sections.build``); an unset key takes its factory's default.

An optimizer factory is ``(make_schedule, differentiable, **knobs) ->
optax.GradientTransformation``: ``make_schedule(lr)`` gives the run's
schedule of a base rate, ``differentiable`` asks for the variant unrolled
GAN differentiates through. A schedule factory is ``(lr, num_updates,
**knobs) -> optax.Schedule``. Register your own in ``OPTIMIZERS`` /
``SCHEDULES`` (a new key with ``sections.float_("g_optimizer", ...)`` and
the same for ``d_optimizer``).
"""

from __future__ import annotations

import collections.abc
import math

import jax.numpy as jnp
import optax

from gan_jax import sections
from gan_jax.errors import UserError
from gan_jax.registry import Registry

OPTIMIZERS = Registry("optimizer", returns=optax.GradientTransformation)
SCHEDULES = Registry("lr_schedule", returns=collections.abc.Callable)

for _side, _net in (("g", "generator"), ("d", "discriminator")):
  _sec = f"{_side}_optimizer"
  sections.float_(_sec, "lr", None, f"The {_net}'s learning rate (0 "
                  f"freezes it; default 1e-4).", owner="optimizer",
                  bounds=">= 0")
  sections.float_(_sec, "b1", None, "Adam's beta1 (default 0.8, the "
                  "PacGAN authors').", owner="optimizer", bounds="[0, 1)")
  sections.float_(_sec, "b2", None, "Adam's beta2 (default 0.999).",
                  owner="optimizer", bounds="[0, 1)")
  sections.float_(_sec, "decay", None, "RMSProp's decay of the squared "
                  "gradients' average (default 0.99, PyTorch's alpha).",
                  owner="optimizer", bounds="[0, 1)")
  sections.float_(_sec, "momentum", None, "SGD's momentum (default 0: "
                  "none).", owner="optimizer", bounds="[0, 1)")
  sections.integer(_sec, "ramp_end", None, "SGD: the momentum goes "
                   "linearly from momentum at update ramp_start to "
                   "final_momentum at this update, and stays there "
                   "(pylearn2's MomentumAdjustor; Goodfellow et al. 2014's "
                   "MNIST code: 0.5 -> 0.7 from epoch 1 to 250). Default 0: "
                   "constant momentum.", owner="optimizer", bounds=">= 0")
  sections.integer(_sec, "ramp_start", None, "SGD: the update at which the "
                   "momentum ramp starts (default 0).", owner="optimizer",
                   bounds=">= 0")
  sections.float_(_sec, "final_momentum", None, "SGD: the momentum at the "
                  "end of the ramp (default 0.7).", owner="optimizer",
                  bounds="[0, 1)")
sections.float_("lr_schedule", "decay_factor", None, "exponential: the "
                "learning rate is divided by this after every update "
                "(Goodfellow et al. 2014's code: 1.000004, the default).",
                owner="lr_schedule", bounds=">= 1")
sections.float_("lr_schedule", "lr_min", None, "exponential: the lowest "
                "learning rate (Goodfellow et al. 2014's code: 1e-6, the "
                "default).", owner="lr_schedule", bounds=">= 0")


# ------------------------------------------------------------------ schedules


@SCHEDULES.register("constant")
def constant(lr: float, num_updates: int) -> optax.Schedule:
  del num_updates
  return optax.constant_schedule(lr)


@SCHEDULES.register("linear")
def linear(lr: float, num_updates: int) -> optax.Schedule:
  """Linear decay to 0 over the run (e.g. WGAN-GP's and SN-GAN's ResNets)."""
  return optax.linear_schedule(lr, 0.0, max(num_updates, 1))


@SCHEDULES.register("cosine")
def cosine(lr: float, num_updates: int) -> optax.Schedule:
  return optax.cosine_decay_schedule(lr, max(num_updates, 1))


@SCHEDULES.register("exponential")
def exponential(lr: float, num_updates: int, decay_factor: float = 1.000004,
                lr_min: float = 1e-6) -> optax.Schedule:
  """pylearn2's ExponentialDecay (Goodfellow et al. 2014's code): after
  every update lr <- max(lr / decay_factor, lr_min). The exponent's rate is
  taken in float64 here: optax's exponential_decay raises a float32
  1 / 1.000004 to the count, which is off by 0.3% after 500,000 updates."""
  del num_updates
  rate = math.log(decay_factor)
  return lambda count: jnp.maximum(lr * jnp.exp(-rate * count), lr_min)


# ----------------------------------------------------------------- optimizers


@OPTIMIZERS.register("adam")
def adam(make_schedule, differentiable: bool, *, lr: float = 1e-4,
         b1: float = 0.8, b2: float = 0.999):
  """``differentiable``: eps_root=1e-16 (optax's advice for differentiating
  through the update), so sqrt(v + eps_root) has a finite derivative where
  a gradient, hence v, is exactly 0 (a dead maxout piece); otherwise the
  values are the same up to float rounding, and the state the same
  pytree."""
  return optax.adam(make_schedule(lr), b1=b1, b2=b2,
                    eps_root=1e-16 if differentiable else 0.0)


@OPTIMIZERS.register("rmsprop")
def rmsprop(make_schedule, differentiable: bool, *, lr: float = 1e-4,
            decay: float = 0.99):
  """WGAN (Arjovsky et al. 2017) uses plain RMSProp; these are the authors'
  PyTorch defaults: alpha 0.99, eps 1e-8 added outside the square root
  (inside it, sqrt(1e-8) = 1e-4 would swamp small gradients)."""
  if differentiable:
    # Differentiated through (unrolled GAN): sqrt(nu) has an infinite
    # derivative at nu = 0 (a gradient that is exactly 0), so the eps goes
    # inside as (1e-8)^2: the same denominator at nu = 0 and for large nu,
    # within a factor sqrt(2) in between; same state pytree.
    return optax.rmsprop(make_schedule(lr), decay=decay, eps=1e-16,
                         eps_in_sqrt=True)
  return optax.rmsprop(make_schedule(lr), decay=decay, eps=1e-8,
                       eps_in_sqrt=False)


@OPTIMIZERS.register("sgd")
def sgd(make_schedule, differentiable: bool, *, lr: float = 1e-4,
        momentum: float = 0.0, ramp_start: int = 0, ramp_end: int = 0,
        final_momentum: float = 0.7):
  """SGD with momentum, ramped linearly from ``momentum`` at update
  ``ramp_start`` to ``final_momentum`` at ``ramp_end`` when ``ramp_end`` >
  0 (pylearn2's MomentumAdjustor, which steps once per epoch)."""
  del differentiable
  rate = make_schedule(lr)
  if ramp_end:
    if ramp_start >= ramp_end:
      raise UserError(f"ramp_start={ramp_start} must be below "
                      f"ramp_end={ramp_end} (the SGD momentum ramp)")
    schedule = optax.linear_schedule(momentum, final_momentum,
                                     max(ramp_end - ramp_start, 1),
                                     transition_begin=ramp_start)
    # The momentum as a hyperparameter that changes with the update count
    # (kept in the optimizer state, so a resumed run continues it).
    return optax.inject_hyperparams(optax.sgd)(learning_rate=rate,
                                               momentum=schedule)
  return optax.sgd(rate, momentum=momentum or None)


def make(cfg, side: str, num_updates: int, differentiable: bool = False
         ) -> optax.GradientTransformation:
  """Side ``side``'s ("g" or "d") optimizer of ``cfg`` over ``num_updates``
  updates."""
  def make_schedule(lr):
    return sections.build(SCHEDULES, cfg, "lr_schedule", "lr_schedule", lr,
                          num_updates)
  return sections.build(OPTIMIZERS, cfg, f"{side}_optimizer",
                        f"{side}_optimizer", make_schedule, differentiable)


def setting(cfg, side: str, key: str):
  """The value of a key of side ``side``'s optimizer in ``cfg``: the set
  one, else its factory's default (for reports and reference code)."""
  value = getattr(cfg, f"{side}_optimizer.{key}")
  if value is not None:
    return value
  return sections.default_of(
      OPTIMIZERS.get(getattr(cfg, f"{side}_optimizer")), key)


def generator(cfg) -> optax.GradientTransformation:
  return make(cfg, "g", cfg.num_steps)


def discriminator(cfg, differentiable: bool = False
                  ) -> optax.GradientTransformation:
  """D's optimizer. ``differentiable``: the variant that unrolled GAN
  differentiates through (see the factories)."""
  return make(cfg, "d", cfg.num_steps * cfg.d_steps, differentiable)
