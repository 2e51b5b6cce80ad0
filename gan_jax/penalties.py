"""Discriminator penalties, chosen by name (``--penalties=gp,r1``).

Contract: a factory ``cfg -> penalty`` where
``penalty(d_fn, real, fake, keys) -> scalar`` is added to the discriminator
loss; ``d_fn(x) -> logits`` is the discriminator at its current parameters
(labels bound; its updated BatchNorm statistics and spectral-norm vectors are
discarded, so a penalty never advances them), and ``keys`` holds one PRNG key
per example of ``real``, indexed by the example's position in the global
batch (so draws do not depend on the device count). The value returned is
already weighted; the step also reports it as ``penalty/<name>``.

With ``--pack=m`` the discriminator scores groups of m samples, so "per
example" below means per packed group: the gradient norm is taken over the
group's m samples together, the norm of D's gradient with respect to its
actual input.
"""

from __future__ import annotations

import collections.abc

import jax
import jax.numpy as jnp

from gan_jax.registry import Registry

PENALTIES = Registry("penalty", returns=collections.abc.Callable)


def per_example_grad_sq_norm(d_fn, x):
  """||grad_x D(x)_i||^2 for every logit i (not one norm over the batch).

  The discriminator scores examples independently, so the gradient of the
  summed logits with respect to x holds each example's gradient in its row
  (with packing, logit i owns the ``pack`` consecutive rows of its group).
  Architectures that mix examples (BatchNorm in D, minibatch features) break
  this independence; WGAN-GP's critic has no BatchNorm for that reason.
  """
  logits, vjp = jax.vjp(lambda v: _one_per_example(d_fn(v)), x)
  if logits.ndim != 1:  # e.g. MAD-GAN's k+1 outputs: no single gradient
    raise ValueError(f"a gradient penalty needs one logit per example; D "
                     f"returned shape {logits.shape}")
  (grads,) = vjp(jnp.ones_like(logits))
  n = logits.shape[0]
  return jnp.sum(grads.reshape(n, -1).astype(jnp.float32) ** 2, axis=1)


def _one_per_example(logits):
  """(N,) logits; a user D's (N, 1) is taken as that."""
  if logits.ndim == 2 and logits.shape[1] == 1:
    return logits[:, 0]
  return logits


@PENALTIES.register("gp")
def gradient_penalty(cfg):
  """WGAN-GP (Gulrajani et al. 2017, Algorithm 1): lambda (||grad||-1)^2 on
  random interpolates x_hat = eps x + (1 - eps) G(z), eps ~ U[0, 1] per example.
  """
  weight = cfg.gp_weight

  def penalty(d_fn, real, fake, keys):
    eps = jax.vmap(lambda k: jax.random.uniform(k, (), real.dtype))(keys)
    eps = eps.reshape((real.shape[0],) + (1,) * (real.ndim - 1))
    x_hat = eps * real + (1.0 - eps) * fake
    # sqrt(s + tiny) keeps the gradient finite where the norm is 0.
    norm = jnp.sqrt(per_example_grad_sq_norm(d_fn, x_hat) + 1e-12)
    return weight * jnp.mean((norm - 1.0) ** 2)

  return penalty


@PENALTIES.register("r1")
def r1_penalty(cfg):
  """R1 (Mescheder et al. 2018, eq. 9): gamma/2 E ||grad D(x_real)||^2."""
  gamma = cfg.r1_gamma

  def penalty(d_fn, real, fake, keys):
    del fake, keys
    return 0.5 * gamma * jnp.mean(per_example_grad_sq_norm(d_fn, real))

  return penalty
