"""Optimizers and learning-rate schedules from optax, built from flags.

Generator and discriminator have their own optimizer, learning rate and betas
(two time-scale update rule, Heusel et al. 2017).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import optax


def schedule(kind: str, lr: float, num_updates: int,
             decay_factor: float = 1.0, lr_min: float = 0.0
             ) -> optax.Schedule:
  if kind == "exponential":
    # pylearn2's ExponentialDecay (Goodfellow et al. 2014's code): after
    # every update lr <- max(lr / decay_factor, lr_min).
    # The exponent's rate is taken in float64 here: optax's
    # exponential_decay raises a float32 1 / 1.000004 to the count, which is
    # off by 0.3% after 500,000 updates.
    rate = math.log(decay_factor)
    return lambda count: jnp.maximum(lr * jnp.exp(-rate * count), lr_min)
  if kind == "constant":
    return optax.constant_schedule(lr)
  if kind == "linear":  # e.g. WGAN-GP ResNet: decay linearly to 0.
    return optax.linear_schedule(lr, 0.0, max(num_updates, 1))
  if kind == "cosine":
    return optax.cosine_decay_schedule(lr, max(num_updates, 1))
  raise ValueError(kind)


def make(kind: str, lr: float, beta1: float, beta2: float, sched: str,
         num_updates: int, eps_root: float = 0.0, decay_factor: float = 1.0,
         lr_min: float = 0.0, momentum_ramp=None
         ) -> optax.GradientTransformation:
  """``momentum_ramp``: None, or (start, end, final) for SGD: the momentum
  goes linearly from ``beta1`` at update ``start`` to ``final`` at ``end``
  (pylearn2's MomentumAdjustor, which steps once per epoch)."""
  rate = schedule(sched, lr, num_updates, decay_factor, lr_min)
  if kind == "adam":
    return optax.adam(rate, b1=beta1, b2=beta2, eps_root=eps_root)
  if kind == "rmsprop":
    # WGAN (Arjovsky et al. 2017) uses plain RMSProp; these are the authors'
    # PyTorch defaults: alpha 0.99, eps 1e-8 added outside the square root
    # (inside it, sqrt(1e-8) = 1e-4 would swamp small gradients).
    if eps_root:
      # Differentiated through (unrolled GAN): sqrt(nu) has an infinite
      # derivative at nu = 0 (a gradient that is exactly 0), so the eps goes
      # inside as (1e-8)^2: the same denominator at nu = 0 and for large
      # nu, within a factor sqrt(2) in between; same state pytree.
      return optax.rmsprop(rate, decay=0.99, eps=1e-16, eps_in_sqrt=True)
    return optax.rmsprop(rate, decay=0.99, eps=1e-8, eps_in_sqrt=False)
  if kind == "sgd":
    if momentum_ramp is not None:
      start, end, final = momentum_ramp
      momentum = optax.linear_schedule(beta1, final, max(end - start, 1),
                                       transition_begin=start)
      # The momentum as a hyperparameter that changes with the update
      # count (kept in the optimizer state, so a resumed run continues it).
      return optax.inject_hyperparams(optax.sgd)(learning_rate=rate,
                                                 momentum=momentum)
    return optax.sgd(rate, momentum=beta1 or None)
  raise ValueError(kind)


def _ramp(cfg):
  if not cfg.momentum_ramp_end:
    return None
  return (cfg.momentum_ramp_start, cfg.momentum_ramp_end, cfg.final_momentum)


def generator(cfg) -> optax.GradientTransformation:
  return make(cfg.g_optimizer, cfg.g_lr, cfg.g_beta1, cfg.g_beta2,
              cfg.lr_schedule, cfg.num_steps,
              decay_factor=cfg.lr_decay_factor, lr_min=cfg.lr_min,
              momentum_ramp=_ramp(cfg))


def discriminator(cfg, differentiable: bool = False
                  ) -> optax.GradientTransformation:
  """D's optimizer. ``differentiable``: the variant that unrolled GAN
  differentiates through: Adam with eps_root=1e-16 (optax's advice for
  differentiating through the update), so sqrt(v + eps_root) has a finite
  derivative where a gradient, hence v, is exactly 0 (a dead maxout piece);
  otherwise the values are the same up to float rounding. RMSProp likewise
  takes its eps inside the square root (see ``make``). The optimizer state
  is the same pytree."""
  return make(cfg.d_optimizer, cfg.d_lr, cfg.d_beta1, cfg.d_beta2,
              cfg.lr_schedule, cfg.num_steps * cfg.d_steps,
              eps_root=1e-16 if differentiable else 0.0,
              decay_factor=cfg.lr_decay_factor, lr_min=cfg.lr_min,
              momentum_ramp=_ramp(cfg))
