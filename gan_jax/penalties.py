"""Regularizers, chosen by name (``--penalties=gp,r1,pl``), each with its
own section: its weight (``--gp.weight``, ``--r1.gamma``, ``--pl.weight``)
and its lazy interval (``--r1.every=16``: applied every 16 updates of its
side, scaled by 16; Karras et al. 2020, Sec. 3.1).

A regularizer acts on one side, the discriminator's ("d") or the
generator's ("g"), and is added to that side's loss; the step reports it as
``penalty/<name>``. Register one with ``register`` (which also defines its
``every`` key) from any module, the package's or one named by
``--extra_modules``::

    from gan_jax import penalties, sections

    sections.float_("mine", "weight", 1.0, "Weight of mine.",
                    owner="penalty", bounds=">= 0")

    @penalties.register("mine", side="d", every=1)
    def mine(weight):          # the section's keys but ``every``
      def penalty(d_fn, real, fake, keys):
        return weight * ...
      return penalty

The factory's keyword arguments are the section's keys (``every`` is the
engine's). The penalty is called with keywords:

* D side: ``d_fn(x) -> logits`` (D at its current parameters, labels bound;
  its updated BatchNorm statistics and spectral-norm vectors are discarded,
  so a penalty never advances them), ``real``, ``fake`` and ``keys``;
* G side: ``g_fn(z) -> samples`` (G at its current parameters, labels
  bound, its updated state discarded), ``z`` and ``keys``;

``keys`` holds one PRNG key per example, indexed by the example's position
in the global batch (so draws do not depend on the device count). It
returns the weighted value. A regularizer with state (a running mean)
registers its initial ``state`` (a dict of scalars); it is then also called
with ``state=`` and returns ``(value, new_state)``. The state lives in the
train state (``extra["penalty_<name>"]``): averaged over devices after each
update, checkpointed, restored exactly.

With ``--pack=m`` the discriminator scores groups of m samples, so "per
example" below means per packed group: the gradient norm is taken over the
group's m samples together, the norm of D's gradient with respect to its
actual input.
"""

from __future__ import annotations

import collections.abc
import math
from typing import Any, Callable, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp

from gan_jax import sections
from gan_jax import steps
from gan_jax.registry import Registry

PENALTIES = Registry("penalty", returns=collections.abc.Callable)

SIDES = ("d", "g")
# name -> (side, initial state or None), set by ``register``.
_SPECS: Dict[str, Any] = {}


class Regularizer(NamedTuple):
  """A built regularizer: what the method's objectives apply."""
  name: str
  fn: Callable
  side: str
  every: int
  state: Optional[Dict[str, float]]

  @property
  def state_key(self) -> str:
    """Its entry in the train state's ``extra``."""
    return f"penalty_{self.name}"


def register(name: str, *, side: str = "d", every: int = 1,
             state: Optional[Dict[str, float]] = None):
  """Registers a regularizer factory under ``name`` (a decorator) and
  defines ``--<name>.every`` (default ``every``)."""
  if side not in SIDES:
    raise ValueError(f"side must be one of {SIDES}; got {side!r}")
  updates = "discriminator" if side == "d" else "generator"
  sections.integer(name, "every", every,
                   f"Apply --penalties={name} every N {updates} updates, "
                   f"scaled by N (lazy regularization).", owner="penalty",
                   bounds=">= 1")

  def add(factory):
    PENALTIES.register(name)(factory)
    _SPECS[name] = (side, dict(state) if state is not None else None)
    return factory

  return add


def build(cfg, name: str) -> Regularizer:
  """The regularizer ``name`` with the knobs of its section in ``cfg``."""
  knobs = sections.knobs(cfg, name)
  every = knobs.pop("every", 1)
  fn = PENALTIES(name, **knobs)
  side, state = _SPECS.get(name, ("d", None))
  return Regularizer(name, fn, side, every, state)


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


sections.float_("gp", "weight", 10.0, "WGAN-GP gradient penalty weight "
                "(lambda).", owner="penalty", bounds=">= 0")


@register("gp", side="d")
def gradient_penalty(weight: float = 10.0):
  """WGAN-GP (Gulrajani et al. 2017, Algorithm 1): lambda (||grad||-1)^2 on
  random interpolates x_hat = eps x + (1 - eps) G(z), eps ~ U[0, 1] per example.
  """

  def penalty(d_fn, real, fake, keys):
    eps = jax.vmap(lambda k: jax.random.uniform(k, (), real.dtype))(keys)
    eps = eps.reshape((real.shape[0],) + (1,) * (real.ndim - 1))
    x_hat = eps * real + (1.0 - eps) * fake
    # sqrt(s + tiny) keeps the gradient finite where the norm is 0.
    norm = jnp.sqrt(per_example_grad_sq_norm(d_fn, x_hat) + 1e-12)
    return weight * jnp.mean((norm - 1.0) ** 2)

  return penalty


sections.float_("r1", "gamma", 10.0, "R1 penalty weight (gamma).",
                owner="penalty", bounds=">= 0")


@register("r1", side="d")
def r1_penalty(gamma: float = 10.0):
  """R1 (Mescheder et al. 2018, eq. 9): gamma/2 E ||grad D(x_real)||^2."""

  def penalty(d_fn, real, fake, keys):
    del fake, keys
    return 0.5 * gamma * jnp.mean(per_example_grad_sq_norm(d_fn, real))

  return penalty


sections.float_("pl", "weight", 2.0, "Path-length regularization weight "
                "(StyleGAN2's pl_weight).", owner="penalty", bounds=">= 0")
sections.float_("pl", "decay", 0.01, "Decay of the path lengths' running "
                "mean a (StyleGAN2's pl_decay).", owner="penalty",
                bounds="(0, 1]")


@register("pl", side="g", every=4, state={"mean": 0.0})
def path_length(weight: float = 2.0, decay: float = 0.01):
  """Path-length regularization (Karras et al. 2020, eq. 4): weight *
  E (||J_z^T y||_2 - a)^2 with y ~ N(0, I) / sqrt(H W) an image-shaped
  noise, J_z the Jacobian of G at z and a the running mean of the lengths
  (updated with ``decay`` before the penalty, as the authors' code, from
  the lengths of the whole batch, all devices together).

  StyleGAN2 takes J with respect to the mapped latent w; G here has no
  mapping network, so it is taken with respect to z (the same thing for a
  G whose mapping network is the identity). A G with BatchNorm in train
  mode mixes examples, so its per-example Jacobians are approximate."""

  def penalty(g_fn, z, keys, state):
    fake, vjp = jax.vjp(g_fn, z)
    n = fake.shape[0]
    spatial = math.prod(fake.shape[1:-1]) if fake.ndim > 2 else 1
    noise = jax.vmap(lambda k: jax.random.normal(
        k, fake.shape[1:], fake.dtype))(keys) / math.sqrt(spatial)
    (grad_z,) = vjp(noise)
    lengths = jnp.sqrt(jnp.sum(
        grad_z.reshape(n, -1).astype(jnp.float32) ** 2, axis=1))
    # The batch mean over all devices, so that the run does not depend on
    # how many there are.
    batch_mean = jax.lax.pmean(jnp.mean(lengths), steps.AXIS)
    mean = state["mean"] + decay * (
        jax.lax.stop_gradient(batch_mean) - state["mean"])
    value = weight * jnp.mean((lengths - mean) ** 2)
    return value, {"mean": mean}

  return penalty
