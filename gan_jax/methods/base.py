"""The contract between a GAN method and the update engine (``steps.py``).

A method declares its networks by name, how they are initialised, its
discriminator-side and generator-side objectives as pure functions, any
extra train state, and its own knobs. The engine does the rest for every
method: ``d_steps`` D-side updates then one G-side update, gradients
averaged over devices, one optax update per network, EMA, fused steps,
seeds, NaN guard, metrics, exact resume.

Subclass ``Method`` and register a factory with ``@METHODS.register(name)``
(``gan_jax.methods``); ``--method=name`` selects it. The factory is called
as ``factory(cfg, dataset, **knobs)``, ``knobs`` being the method's config
section (``--name.key=value`` flags, ``gan_jax.sections``).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from gan_jax import optim
from gan_jax.registry import Registry

Batch = Dict[str, Any]
PyTree = Any


class Method:
  """Base class of the methods: the common parts (noise prior, labels,
  default optimizers and inputs) of a method with generator networks on the
  G side and discriminator networks on the D side.

  What a subclass provides (the engine's contract):

  * ``d_networks`` / ``g_networks``: the names of the networks each side
    updates (a network may be on both sides); ``ema_networks``: those whose
    params get an EMA copy with ``--ema.decay`` (and are sampled from it).
  * ``init(key_g, key_d) -> (params, net_state, extra)``: per network name
    its ``params`` and its other variable collections; ``extra`` a dict of
    the method's own state (arrays), saved and restored with the rest.
  * ``objective(side, params, state, batch, ctx) -> (loss, (metrics,
    net_state, extra))``: the loss of ``side`` ("d" or "g") whose gradient
    with respect to ``params[n]``, ``n`` in that side's networks, the
    engine applies. ``params`` holds every network's (the other side's are
    constants); ``state`` is the ``TrainState`` (its ``net_state`` and
    ``extra``); ``batch`` the side's shard of ``sample_inputs`` with its
    ``key``; ``net_state`` / ``extra``: the entries it changes.
  * ``sample_images(params, net_state, z, y) -> images`` for pictures and
    evaluation, with ``params`` from ``state.sampling_params``.
  """

  d_networks: Tuple[str, ...] = ("D",)
  g_networks: Tuple[str, ...] = ("G",)
  ema_networks: Tuple[str, ...] = ("G",)

  def __init__(self, cfg, dataset):
    self.cfg = cfg
    self.dataset = dataset

  # --- what the engine calls -------------------------------------------------

  def networks_of(self, side: str) -> Tuple[str, ...]:
    return self.d_networks if side == "d" else self.g_networks

  @property
  def optimizers(self) -> Dict[str, optax.GradientTransformation]:
    """One optax transformation per trained network: the G side's from the
    ``--g_*`` optimizer flags, the D side's from the ``--d_*`` ones (two
    time-scale update rule). Built once per method object."""
    if not hasattr(self, "_optimizers"):
      txs = {n: optim.discriminator(self.cfg) for n in self.d_networks}
      txs.update({n: optim.generator(self.cfg) for n in self.g_networks
                  if n not in txs})
      self._optimizers = txs  # pylint: disable=attribute-defined-outside-init
    return self._optimizers

  def init(self, key_g, key_d):
    raise NotImplementedError

  def objective(self, side: str, params, state, batch: Batch, ctx: Batch):
    raise NotImplementedError

  def after_update(self, side: str, params):
    """The params after an update of ``side`` (e.g. WGAN's clipping)."""
    del side
    return params

  def sample_inputs(self, key, host: Optional[Batch]) -> Batch:
    """Every random draw of one step, with global shapes: ``d`` (leaves
    with a leading ``d_steps`` axis, then the batch), ``g`` and ``key``.

    ``host``: the step's real data for image sets, {"image": (k, B, ...),
    "label": (k, B)}; None for toy sets, which are sampled here.
    """
    cfg = self.cfg
    k, bsz = cfg.d_steps, cfg.batch_size
    keys = jax.random.split(key, 6)
    d: Batch = {"z": self.sample_z(keys[0], (k, bsz))}
    g: Batch = {"z": self.sample_z(keys[1], (bsz,))}
    if host is None:
      real, y_real = self.dataset.sample(keys[2], k * bsz)
      d["real"] = real.reshape((k, bsz) + real.shape[1:])
      if y_real is not None and self.num_classes:
        d["y_real"] = y_real.reshape(k, bsz)
    else:
      d["real"] = host["image"]
      if self.num_classes:
        d["y_real"] = host["label"]
    if self.num_classes:
      d["y_fake"] = self.sample_labels(keys[3], (k, bsz))
      g["y"] = self.sample_labels(keys[4], (bsz,))
    return {"d": d, "g": g, "key": keys[5]}

  def sample_images(self, params, net_state, z, y):
    raise NotImplementedError

  # --- the latent prior and labels -------------------------------------------

  @property
  def num_classes(self) -> int:
    """Classes G is conditioned on (0: unconditional)."""
    return self.dataset.num_classes if self.cfg.conditional else 0

  @property
  def batch_multiple(self) -> Tuple[int, str]:
    """What each device's batch must divide by, and why: packing's groups
    (``--pack``)."""
    m = self.cfg.pack
    return m, f"pack {m}"

  @property
  def shape(self) -> Tuple[int, ...]:
    return tuple(self.dataset.shape)

  @property
  def z_dim(self) -> int:
    return self.cfg.z_dim

  @property
  def z_support(self) -> Optional[Tuple[float, float]]:
    """The noise prior's bounds, None for an unbounded one."""
    return (-1.0, 1.0) if self.cfg.z_dist == "uniform" else None

  def sample_z(self, key, batch_shape) -> jax.Array:
    shape = tuple(batch_shape) + (self.z_dim,)
    if self.cfg.z_dist == "uniform":
      return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)
    return jax.random.normal(key, shape)

  def sample_labels(self, key, batch_shape) -> Optional[jax.Array]:
    if not self.num_classes:
      return None
    return jax.random.randint(key, tuple(batch_shape), 0, self.num_classes)

  def eval_inputs(self, key, n: int):
    """``(z, y, labels)`` of ``n`` evaluation samples: ``labels`` is what
    the label metrics compare the samples' classes with (the class G was
    given; InfoGAN's categorical code), None if nothing."""
    z = self.sample_z(jax.random.fold_in(key, 0), (n,))
    y = self.sample_labels(jax.random.fold_in(key, 1), (n,))
    return z, y, y

  def latent_traversals(self, rng) -> Dict[str, Tuple[jax.Array, Any, int]]:
    """Named grids of latent inputs to draw with the samples: name ->
    ``(z, y, rows)`` (InfoGAN's code traversals); none by default."""
    del rng
    return {}


METHODS = Registry("method", returns=Method)


def cross_entropy(logits, labels) -> jax.Array:
  """Mean softmax cross-entropy of integer ``labels``."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels).mean()
