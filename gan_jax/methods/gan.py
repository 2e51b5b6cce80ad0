"""The plain GAN: one generator G(z, y) against one discriminator D(x, y).

``--method=gan`` (the default). Its objectives are the registered loss
(``--loss``: the 2014 minimax / non-saturating loss with label smoothing,
LSGAN, WGAN, hinge, the relativistic losses) plus the discriminator
regularizers (``--penalties``: WGAN-GP and R1 on D's side, path length on
G's, each lazily every ``--<name>.every`` updates of its side); WGAN's weight clipping (``--d_clip``); PacGAN's packing
(``--pack``); conditioning on labels (``--conditional``: concatenation or
projection, as the architecture does it). Minibatch discrimination and
spectral norm live in the architectures.

MAD-GAN (``methods/madgan.py``), unrolled GAN (``methods/unrolled.py``),
InfoGAN and ACGAN subclass it.
"""

from __future__ import annotations

import functools
from typing import Tuple

import jax
import jax.numpy as jnp
from jax import lax

from gan_jax import losses as losses_lib
from gan_jax import models
from gan_jax import penalties as penalties_lib
from gan_jax import steps
from gan_jax.errors import UserError
from gan_jax.methods.base import METHODS, Batch, Method
from gan_jax.state import split_variables


def _has_batchnorm(variables) -> bool:
  """Whether ``variables`` hold BatchNorm statistics (flax's ``mean``; the
  spectral-norm vectors that share the collection don't count)."""
  stats = variables.get("batch_stats", {})
  return any(getattr(path[-1], "key", None) == "mean"
             for path, _ in jax.tree_util.tree_flatten_with_path(stats)[0])


def spectral_from(new, old):
  """``new`` with the spectral-norm vectors (``.../u``, ``.../sigma``) of
  ``old``: a second D pass in one update then normalizes with the same sigma
  and the update advances the power iteration once (Miyato et al. 2018,
  Algorithm 1), while BatchNorm statistics keep chaining."""
  def pick(path, n, o):
    key = getattr(path[-1], "key", "")
    spectral = isinstance(key, str) and key.endswith(("/u", "/sigma"))
    return o if spectral else n
  return jax.tree_util.tree_map_with_path(pick, new, old)


class GAN(Method):
  """G(z, y) against D(x, y) with a registered loss and penalties.

  Subclasses change a part: ``d_logits`` / ``d_loss`` / ``g_loss`` (the
  objectives' pieces), ``generate`` (MAD-GAN's k generators),
  ``objective`` (unrolled GAN's G side)."""

  def __init__(self, cfg, dataset, d_classes=None):
    """``d_classes``: the classes D is conditioned on (default: G's)."""
    super().__init__(cfg, dataset)
    if cfg.conditional and not dataset.num_classes:
      raise UserError(f"--conditional needs a labelled dataset; "
                      f"{cfg.dataset!r} has no labels")
    if cfg.pack > 1 and self.num_classes:
      raise UserError("--pack > 1 with a conditional model is not supported")
    self.d_classes = self.num_classes if d_classes is None else d_classes
    self.generator = models.build("g", cfg, self.shape, self.num_classes)
    self.discriminator = models.build("d", cfg, self.shape, self.d_classes)
    self.loss = self.make_loss()
    self.penalties: Tuple[penalties_lib.Regularizer, ...] = tuple(
        penalties_lib.build(cfg, name) for name in cfg.penalties)

  def make_loss(self) -> losses_lib.Loss:
    return losses_lib.build(self.cfg)

  # --- networks ----------------------------------------------------------------

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

  def init_generator(self, key, z, y):
    return split_variables(self.generator.init(
        {"params": key, "dropout": key}, z, y, train=False))

  def init(self, key_g, key_d):
    n = max(2, self.cfg.pack)  # BatchNorm and packing need a batch of >= 2.
    z = self.sample_z(jax.random.PRNGKey(0), (n,))
    y = self.sample_labels(jax.random.PRNGKey(0), (n,))
    g_params, g_state = self.init_generator(key_g, z, y)
    x = jnp.zeros((n,) + self.shape, jnp.float32)
    y_d = y if self.d_classes else None
    d_params, d_state = split_variables(self.discriminator.init(
        {"params": key_d, "dropout": key_d}, self.pack(x), y_d, train=False))
    extra = {reg.state_key: jax.tree.map(jnp.float32, reg.state)
             for reg in self.penalties if reg.state is not None}
    return ({"G": g_params, "D": d_params}, {"G": g_state, "D": d_state},
            extra)

  def with_head(self, name: str, head, params, state, key_d):
    """``(params, state)`` with network ``name``, a head on D's sown
    features (``models.heads.Head``), initialised from ``key_d``."""
    x = jnp.zeros((max(2, self.cfg.pack),) + self.shape, jnp.float32)
    _, feats, _ = self.discriminate(params["D"], state["D"], x, None,
                                    train=False, features=True)
    h_params, h_state = split_variables(head.init(
        jax.random.fold_in(key_d, 1), feats, train=False))
    return {**params, name: h_params}, {**state, name: h_state}

  def generate(self, params, state, z, y, train: bool, rng=None):
    """G(z, y) -> (samples, G's updated non-trainable state)."""
    variables = {"params": params, **state}
    rngs = {"dropout": rng} if rng is not None else {}
    if train:
      x, new_state = self.generator.apply(
          variables, z, y, train=True, mutable=list(state), rngs=rngs)
      return x, {**state, **new_state}
    return self.generator.apply(variables, z, y, train=False, rngs=rngs), state

  def discriminate(self, params, state, x, y, train: bool, rng=None,
                   features: bool = False):
    """D(pack(x), y) -> (logits, D's updated non-trainable state), and with
    ``features`` the features D's architecture sows (``layers.features``)
    before its output layer: (logits, features, state)."""
    variables = {"params": params, **state}
    rngs = {"dropout": rng} if rng is not None else {}
    x = self.pack(x)
    y = y if self.d_classes else None
    if not (train or features):
      return self.discriminator.apply(variables, x, y, train=False,
                                      rngs=rngs), state
    mutable = (list(state) if train else []) + (
        ["intermediates"] if features else [])
    logits, new_state = self.discriminator.apply(
        variables, x, y, train=train, mutable=mutable, rngs=rngs)
    new_state = dict(new_state)
    inter = new_state.pop("intermediates", None)
    state = {**state, **new_state}
    if features:
      return logits, _features(inter, self.cfg.discriminator), state
    return logits, state

  def sample_images(self, params, net_state, z, y):
    return self.generate(params["G"], net_state["G"], z, y, train=False)[0]

  # --- objectives --------------------------------------------------------------

  def objective(self, side, params, state, batch, ctx):
    if side == "d":
      return self.d_objective(params, state, batch, ctx)
    return self.g_objective(params, state, self.g_batch(batch, ctx))

  def g_batch(self, batch: Batch, ctx: Batch) -> Batch:
    """G's batch: with a loss that reads D on real data, the step's last D
    batch is its real batch (the authors' code draws a new one:
    docs/losses.md)."""
    if self.loss.g_reads_real:
      d = ctx["inputs"]["d"]
      batch = {**batch, "real": d["real"][-1]}
      if "y_real" in d:
        batch["y_real"] = d["y_real"][-1]
    return batch

  def fake_for_d(self, params, state, batch, k_g, ctx):
    """The fakes of D's update (no gradient to G unless ``ctx`` says
    ``differentiable``: unrolled GAN) and G's updated state (dropped)."""
    fake, _ = self.generate(params["G"], state.net_state["G"], batch["z"],
                            batch.get("y_fake"), train=True,
                            rng=steps.device_key(k_g))
    if not ctx.get("differentiable"):
      fake = lax.stop_gradient(fake)
    return fake

  def d_logits(self, d_params, d_state, real, y_real, fake, y_fake, k_d,
               together: bool):
    """D's logits on real then fake rows, and its updated state.

    BatchNorm in D: real and fake go in separate calls, as in the DCGAN
    reference code. On a mixed batch D normalizes with statistics G's
    update never sees (G's D call gets a fake-only batch), and G then
    trains against a different function than the one D fit: D wins at once
    while g_loss reports G fooling it. Minibatch features likewise are
    computed over the batch D sees (Salimans et al.'s code shows D real and
    fake batches apart).
    """
    if together:
      x = jnp.concatenate([real, fake])
      y = None if y_real is None else jnp.concatenate([y_real, y_fake])
      return self.discriminate(d_params, d_state, x, y, train=True,
                               rng=steps.device_key(k_d))
    l_real, new_state = self.discriminate(d_params, d_state, real, y_real,
                                          train=True,
                                          rng=steps.device_key(k_d))
    l_fake, new_state = self.discriminate(
        d_params, spectral_from(new_state, d_state), fake, y_fake,
        train=True, rng=steps.device_key(jax.random.fold_in(k_d, 1)))
    return jnp.concatenate([l_real, l_fake]), new_state

  def d_features(self, d_params, d_state, real, fake, k_d):
    """D on real, then on fake (separate calls, as ``d_logits``), with the
    features each call sows for the heads: ``(real_logits, real_features,
    fake_logits, fake_features, D's updated state)``. For an unconditional
    D (heads carry what else D predicts)."""
    l_real, f_real, new_state = self.discriminate(
        d_params, d_state, real, None, train=True,
        rng=steps.device_key(k_d), features=True)
    l_fake, f_fake, new_state = self.discriminate(
        d_params, spectral_from(new_state, d_state), fake, None, train=True,
        rng=steps.device_key(jax.random.fold_in(k_d, 1)), features=True)
    return l_real, f_real, l_fake, f_fake, new_state

  def d_objective_on_features(self, params, state, batch, ctx, term):
    """D's objective for a method whose own networks read D's features
    (InfoGAN's Q, ACGAN's classifier): the loss of D's logits plus
    ``term(real_features, fake_features) -> (value, metrics, net_state)``,
    then the penalties. D sees real and fake apart (``d_features``);
    ``net_state`` holds the term's networks' updated state by name."""
    real = batch["real"]
    k_g, k_d, k_pen = jax.random.split(batch["key"], 3)
    fake = self.fake_for_d(params, state, batch, k_g, ctx).astype(real.dtype)
    d_state = state.net_state["D"]
    l_real, f_real, l_fake, f_fake, new_state = self.d_features(
        params["D"], d_state, real, fake, k_d)
    total, aux = self.d_loss(l_real, l_fake)
    value, metrics, term_state = term(f_real, f_fake)
    aux.update(metrics)
    total, extra = self.add_penalties(
        "d", total + value, aux, state, k_pen, ctx["index"], real=real,
        fake=fake, d_fn=self.d_fn(params["D"], d_state, None, k_d))
    return total, (aux, {"D": new_state, **term_state}, extra)

  def d_loss(self, real_logits, fake_logits):
    """(d_loss, metrics) of D's logits."""
    d_loss, d_real, d_fake = self.loss.d(real_logits, fake_logits)
    return d_loss, {"d_loss": d_loss, "d_loss_real": d_real,
                    "d_loss_fake": d_fake,
                    "d_real_logit": jnp.mean(real_logits),
                    "d_fake_logit": jnp.mean(fake_logits)}

  def d_objective(self, params, state, batch, ctx):
    """D's loss and penalties on this shard (``ctx``: ``index``, the D
    update's count over the run, spaces the lazy penalties)."""
    real = batch["real"]
    y_real, y_fake = batch.get("y_real"), batch.get("y_fake")
    k_g, k_d, k_pen = jax.random.split(batch["key"], 3)
    fake = self.fake_for_d(params, state, batch, k_g, ctx).astype(real.dtype)
    d_state = state.net_state["D"]
    together = getattr(self.discriminator, "minibatch", "none") == "none" \
        and not _has_batchnorm(d_state)
    logits, new_d_state = self.d_logits(params["D"], d_state, real, y_real,
                                        fake, y_fake, k_d, together)
    n = logits.shape[0] // 2
    total, aux = self.d_loss(logits[:n], logits[n:])
    extra = {}
    term = self.d_term(logits[:n], logits[n:], state)
    if term is not None:
      value, metrics, extra = term
      total = total + value
      aux.update(metrics)
    total, reg_extra = self.add_penalties(
        "d", total, aux, state, k_pen, ctx["index"], real=real, fake=fake,
        d_fn=self.d_fn(params["D"], d_state, y_real, k_d))
    return total, (aux, {"D": new_d_state}, {**extra, **reg_extra})

  def d_term(self, real_logits, fake_logits, state):
    """A term of D's loss that a subclass adds, with its metrics and the
    updates of its extra state: ``(value, metrics, extra)``, or None (the
    default: nothing). ``state.extra`` holds the values before this
    update; the engine averages the new ones over devices. A LeCam-style
    regularizer with EMA anchors is a few lines (docs/extending.md)."""
    del real_logits, fake_logits, state
    return None

  def d_fn(self, d_params, d_state, y, k_d):
    """D at ``d_params`` as a D-side penalty reads it: ``x -> logits``, its
    updated state discarded."""
    def fn(x):
      return self.discriminate(d_params, d_state, x, y, train=True,
                               rng=steps.device_key(k_d))[0]
    return fn

  def g_fn(self, g_params, g_state, y, k_g):
    """G at ``g_params`` as a G-side penalty reads it: ``z -> samples``,
    its updated state discarded."""
    def fn(z):
      return self.generate(g_params, g_state, z, y, train=True,
                           rng=steps.device_key(k_g))[0]
    return fn

  def add_penalties(self, side, total, aux, state, key, index, **inputs):
    """``(total plus side's regularizers, their updated states)``: each
    regularizer (``--penalties``) of ``side`` called with ``inputs`` and
    per-example ``keys`` every ``--<name>.every`` updates (``index``: the
    side's update count), scaled by it; each value is also put in
    ``aux`` as ``penalty/<name>``."""
    extra = {}
    n = inputs["real" if side == "d" else "z"].shape[0]
    mine = [reg for reg in self.penalties if reg.side == side]
    for i, reg in enumerate(mine):
      keys = steps.example_keys(jax.random.fold_in(key, i), n)
      call = functools.partial(reg.fn, keys=keys, **inputs)
      if reg.state is None:
        value = steps.lazy(index, reg.every, call)
      else:
        old = state.extra[reg.state_key]
        value, extra[reg.state_key] = steps.lazy(
            index, reg.every, functools.partial(call, state=old), state=old)
      aux[f"penalty/{reg.name}"] = value
      total = total + value
    return total, extra

  def add_g_penalties(self, total, aux, params, state, batch, k_g):
    """``add_penalties`` of the G side (its update count ``state.step``);
    G at ``params["G"]`` on ``batch``'s z and labels."""
    if not any(reg.side == "g" for reg in self.penalties):
      return total, {}
    return self.add_penalties(
        "g", total, aux, state, jax.random.fold_in(batch["key"], 2),
        state.step, z=batch["z"],
        g_fn=self.g_fn(params["G"], state.net_state["G"], batch.get("y"),
                       k_g))

  def after_update(self, side, params):
    clip = self.cfg.d_clip
    if side == "d" and clip > 0:
      # WGAN (Arjovsky et al. 2017), Algorithm 1 line 7.
      params = {**params, "D": jax.tree.map(
          lambda p: jnp.clip(p, -clip, clip), params["D"])}
    return params

  def g_objective(self, params, state, batch, d_params=None, d_state=None):
    """G's loss on this shard (and its updated state); D at ``d_params``,
    ``d_state`` if given (unrolled GAN), else the state's."""
    k_g, k_d = jax.random.split(batch["key"])
    d_params = params["D"] if d_params is None else d_params
    d_state = state.net_state["D"] if d_state is None else d_state
    fake, g_state = self.generate(params["G"], state.net_state["G"],
                                  batch["z"], batch.get("y"), train=True,
                                  rng=steps.device_key(k_g))
    logits, _ = self.discriminate(d_params, d_state, fake, batch.get("y"),
                                  train=True, rng=steps.device_key(k_d))
    if self.loss.g_reads_real:
      # A relativistic loss compares with D on real data (own call, as in
      # d_objective's separate path; D's state from it is dropped, like the
      # fake call's).
      real_logits, _ = self.discriminate(
          d_params, d_state, batch["real"], batch.get("y_real"), train=True,
          rng=steps.device_key(jax.random.fold_in(k_d, 1)))
      g_loss = self.loss.g(logits, real_logits)
    else:
      g_loss = self.loss.g(logits)
    metrics = {"g_loss": g_loss}
    total, extra = self.add_g_penalties(g_loss, metrics, params, state, batch,
                                        k_g)
    return total, (metrics, {"G": g_state}, extra)


def _features(intermediates, name: str):
  """The features D's architecture sowed, or a one-line error."""
  try:
    return intermediates["features"][0]
  except (KeyError, TypeError):
    raise UserError(f"discriminator {name!r} does not sow its features "
                    f"(gan_jax.models.layers.sow_features), which this "
                    f"method's heads read") from None


@METHODS.register("gan")
def gan(cfg, dataset) -> GAN:
  """The GAN of Goodfellow et al. (2014) and the losses, penalties and
  architectures of its successors (--loss, --penalties, --generator,
  --discriminator, --pack, --d_clip, --conditional)."""
  return GAN(cfg, dataset)
