"""GAN losses, chosen by name (``--loss``), compare_gan's contract.

A loss is a pair of functions on discriminator logits:
``d(real_logits, fake_logits) -> (d_loss, d_loss_real, d_loss_fake)`` with
``d_loss = d_loss_real + d_loss_fake``, and ``g(fake_logits) -> g_loss``, or
``g(fake_logits, real_logits)`` for a loss with ``g_reads_real`` (the
relativistic ones: G's step then also runs D on a real batch).
A loss's knobs are keys of the ``loss`` section, given to its factory as
keyword arguments when set: ``--loss.smoothing`` (one-sided label
smoothing of minimax and ns), ``--loss.a/b/c`` (LSGAN's targets); a key
the chosen loss does not take is a one-line error. Register your own with
``@LOSSES.register("name")`` from a module passed to ``--extra_modules``;
a knob of its own is a key defined with ``sections.float_("loss", key,
None, ...)`` and taken as a keyword parameter.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Tuple

import jax
import jax.numpy as jnp

from gan_jax import sections
from gan_jax.registry import Registry

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Loss:
  d: Callable[[Array, Array], Tuple[Array, Array, Array]]
  g: Callable[..., Array]
  g_reads_real: bool = False  # g(fake_logits, real_logits)


LOSSES = Registry("loss", returns=Loss)

sections.float_("loss", "smoothing", None, "Target for real samples in the "
                "discriminator's cross-entropy of minimax and ns (one-sided "
                "label smoothing, e.g. 0.9); default 1.0, none.",
                owner="loss", bounds="(0, 1]")
for _key, _what, _default in (("a", "for fake samples in D's loss", 0),
                              ("b", "for real samples in D's loss", 1),
                              ("c", "G wants D to give fakes", 1)):
  sections.float_("loss", _key, None, f"LSGAN's target {_what} ({_key}; "
                  f"default {_default}).", owner="loss")


def build(cfg) -> Loss:
  """The loss ``--loss`` with the keys of the loss section set in ``cfg``."""
  return sections.build(LOSSES, cfg, "loss", "loss")


def _bce(logits, target):
  """Mean binary cross-entropy of sigmoid(logits) against a constant target."""
  # -(t log s(l) + (1 - t) log(1 - s(l))), with log s(l) = -softplus(-l).
  return jnp.mean(target * jax.nn.softplus(-logits)
                  + (1.0 - target) * jax.nn.softplus(logits))


def _cross_entropy_d(real_target):
  """Goodfellow et al. 2014, eq. 1; real_target < 1 is one-sided smoothing."""
  def d(real, fake):
    lr, lf = _bce(real, real_target), _bce(fake, 0.0)
    return lr + lf, lr, lf
  return d


@LOSSES.register("minimax")
def minimax(smoothing: float = 1.0) -> Loss:
  """G minimizes log(1 - D(G(z))) (Goodfellow et al. 2014, eq. 1)."""
  return Loss(d=_cross_entropy_d(smoothing),
              g=lambda fake: -jnp.mean(jax.nn.softplus(fake)))


@LOSSES.register("ns")
def non_saturating(smoothing: float = 1.0) -> Loss:
  """G minimizes -log D(G(z)) (Goodfellow et al. 2014, section 3)."""
  return Loss(d=_cross_entropy_d(smoothing),
              g=lambda fake: jnp.mean(jax.nn.softplus(-fake)))


@LOSSES.register("lsgan")
def least_squares(a: float = 0.0, b: float = 1.0, c: float = 1.0) -> Loss:
  """Mao et al. 2017, eq. 2: targets a (fake), b (real) for D; c for G
  (the defaults are the 0-1 coding of their eq. 9; -1, 1, 0 is eq. 8)."""

  def d(real, fake):
    lr = 0.5 * jnp.mean((real - b) ** 2)
    lf = 0.5 * jnp.mean((fake - a) ** 2)
    return lr + lf, lr, lf

  return Loss(d=d, g=lambda fake: 0.5 * jnp.mean((fake - c) ** 2))


@LOSSES.register("wgan")
def wasserstein() -> Loss:
  """Arjovsky et al. 2017: the critic maximizes E[D(x)] - E[D(G(z))]."""

  def d(real, fake):
    lr, lf = -jnp.mean(real), jnp.mean(fake)
    return lr + lf, lr, lf

  return Loss(d=d, g=lambda fake: -jnp.mean(fake))


@LOSSES.register("hinge")
def hinge() -> Loss:
  """Lim & Ye 2017; Miyato et al. 2018, eq. 16-17."""

  def d(real, fake):
    lr = jnp.mean(jax.nn.relu(1.0 - real))
    lf = jnp.mean(jax.nn.relu(1.0 + fake))
    return lr + lf, lr, lf

  return Loss(d=d, g=lambda fake: -jnp.mean(fake))


def batch_mean(x: Array, axis_name: str = "data") -> Array:
  """The mean of ``x`` over the global batch: inside the data-parallel step
  (``axis_name`` bound) the mean of the devices' means, so a loss that
  compares each sample with the batch's average gives the same value on
  any number of devices; the plain mean elsewhere."""
  m = jnp.mean(x)
  try:
    return jax.lax.pmean(m, axis_name)
  except NameError:  # not inside shard_map: one device's view is all
    return m


def _relativistic(f_real, f_fake) -> Loss:
  """Relativistic average GAN (Jolicoeur-Martineau 2019, Sec. 4.2):
  D judges whether a real sample is more realistic than the average fake,
  C(x_r) - E[C(x_f)], and a fake less realistic than the average real, C(x_f)
  - E[C(x_r)]; G minimizes the same objective with the two roles swapped.
  ``f_real(v)`` / ``f_fake(v)``: the per-sample loss of a relative logit v
  that should look real / fake. Both objectives are halved, as the authors'
  code (GAN_losses_iter.py, loss_D 6-8) writes them."""
  def d(real, fake):
    lr = 0.5 * jnp.mean(f_real(real - batch_mean(fake)))
    lf = 0.5 * jnp.mean(f_fake(fake - batch_mean(real)))
    return lr + lf, lr, lf

  def g(fake, real):
    return 0.5 * (jnp.mean(f_fake(real - batch_mean(fake)))
                  + jnp.mean(f_real(fake - batch_mean(real))))

  return Loss(d=d, g=g, g_reads_real=True)


@LOSSES.register("rasgan")
def relativistic_standard() -> Loss:
  """RaSGAN: the cross-entropy of sigmoid(relative logit) (the authors'
  loss_D 6)."""
  return _relativistic(lambda v: jax.nn.softplus(-v),  # -log sigmoid(v)
                       jax.nn.softplus)  # -log(1 - sigmoid(v))


@LOSSES.register("ralsgan")
def relativistic_least_squares() -> Loss:
  """RaLSGAN: (v - 1)^2 for real, (v + 1)^2 for fake (the paper's
  Appendix A; the authors' loss_D 7)."""
  return _relativistic(lambda v: (v - 1.0) ** 2, lambda v: (v + 1.0) ** 2)


@LOSSES.register("rahinge")
def relativistic_hinge() -> Loss:
  """RaHingeGAN: max(0, 1 - v) for real, max(0, 1 + v) for fake (the
  authors' loss_D 8)."""
  return _relativistic(lambda v: jax.nn.relu(1.0 - v),
                       lambda v: jax.nn.relu(1.0 + v))
