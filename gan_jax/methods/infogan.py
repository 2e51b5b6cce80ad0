"""InfoGAN (Chen et al. 2016): latent codes c that G must keep recoverable
from its samples. ``--method=infogan``.

G's input is [z, c]: ``--z_dim`` noise dimensions (``--z_dist``), then a
one-hot categorical code of ``--infogan.categories`` values, then
``--infogan.continuous`` codes, each Uniform(-1, 1). A head Q (network
``"Q"``, ``models.heads.Head``) on the features D's trunk sows predicts c
from x: a softmax over the categories, and for each continuous code the
mean of a Gaussian of fixed unit std (the authors' ``fix_std=True``). The
mutual-information bound's variable part, L_I = E[-log Q(c|G(z, c))], is
added with weight ``--infogan.info_weight`` (lambda) to G's loss and to D's
(the authors' code trains Q's variables with D's: they are in D's scope;
Sec. 5 of the paper: lambda = 1 for MNIST). D and Q share D's optimizer.

Metrics: ``info/cat_ce`` and ``info/cont_ce`` (the two parts of L_I, in
nats; with ``info/cat_accuracy``: how often Q names the categorical code of
a fake) on both sides. Pictures: one traversal grid per code
(``latent_traversals``): rows are the code's values, columns fixed draws of
everything else. ``--eval.metrics=cluster_accuracy`` scores how well the
categorical code matches the classes the shipped classifier sees.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import sections
from gan_jax import steps
from gan_jax.errors import UserError
from gan_jax.methods.base import METHODS, cross_entropy
from gan_jax.methods.gan import GAN
from gan_jax import models
from gan_jax.models import heads

sections.integer("infogan", "categories", 10, "Values of the categorical "
                 "code (0: none).", bounds="[0, 1000]")
sections.integer("infogan", "continuous", 2, "Continuous codes, each "
                 "Uniform(-1, 1).", bounds="[0, 100]")
sections.float_("infogan", "info_weight", 1.0, "lambda: the weight of the "
                "mutual-information term L_I in G's and D's losses.",
                bounds=">= 0")
sections.integer("infogan", "q_hidden", 128, "Width of Q's hidden layer "
                 "(0: Q is linear on D's features).", bounds="[0, 65536]")


class InfoGAN(GAN):
  """G(z, c) against D, with Q(c | x) on D's trunk."""

  d_networks = ("D", "Q")

  def __init__(self, cfg, dataset, categories: int, continuous: int,
               info_weight: float, q_hidden: int):
    if categories + continuous == 0:
      raise UserError("--method=infogan needs a code: --infogan.categories "
                      "or --infogan.continuous above 0")
    if cfg.conditional or cfg.pack > 1:
      raise UserError("--method=infogan does not take --conditional or "
                      "--pack > 1")
    self.categories, self.continuous = categories, continuous
    self.info_weight = info_weight
    super().__init__(cfg, dataset)
    if self.loss.g_reads_real:
      raise UserError(f"--method=infogan takes a loss whose G part reads "
                      f"fakes only; --loss={cfg.loss} reads real data too")
    self.q = heads.Head(out=categories + continuous, hidden=q_hidden,
                        **models.common(cfg)._asdict())

  # --- the latent code ---------------------------------------------------------

  @property
  def z_dim(self) -> int:
    return self.cfg.z_dim + self.categories + self.continuous

  @property
  def z_support(self):
    return (-1.0, 1.0) if self.cfg.z_dist == "uniform" else None

  def latent(self, noise, cat, cont):
    parts = [noise]
    if self.categories:
      parts.append(jax.nn.one_hot(cat, self.categories, dtype=noise.dtype))
    return jnp.concatenate(parts + [cont.astype(noise.dtype)], axis=-1)

  def sample_z(self, key, batch_shape):
    k_noise, k_cat, k_cont = jax.random.split(key, 3)
    shape = tuple(batch_shape)
    if self.cfg.z_dist == "uniform":
      noise = jax.random.uniform(k_noise, shape + (self.cfg.z_dim,),
                                 minval=-1.0, maxval=1.0)
    else:
      noise = jax.random.normal(k_noise, shape + (self.cfg.z_dim,))
    cat = jax.random.randint(k_cat, shape, 0, max(self.categories, 1))
    cont = jax.random.uniform(k_cont, shape + (self.continuous,),
                              minval=-1.0, maxval=1.0)
    return self.latent(noise, cat, cont)

  def codes(self, z):
    """(categorical code (b,) or None, continuous codes (b, n)) of z."""
    n, k = self.cfg.z_dim, self.categories
    cat = jnp.argmax(z[:, n:n + k], axis=-1) if k else None
    return cat, z[:, n + k:]

  def eval_inputs(self, key, n: int):
    z = self.sample_z(jax.random.fold_in(key, 0), (n,))
    return z, None, self.codes(z)[0]

  def latent_traversals(self, rng, values: int = 10, columns: int = 10):
    """One grid per code: row i sets the code to its i-th value (the
    category i; the continuous code at -1 + 2i / (values - 1), as the
    authors' visualize_all_factors), column j keeps draw j of the rest."""
    key = jax.random.fold_in(rng, 1_000_004)
    base = jnp.tile(self.sample_z(key, (columns,)), (values, 1))
    n, k = self.cfg.z_dim, self.categories
    out = {}
    if k:
      rows = min(k, values)
      cat = jnp.repeat(jnp.arange(rows), columns)
      z = base[:rows * columns].at[:, n:n + k].set(
          jax.nn.one_hot(cat, k, dtype=base.dtype))
      out["code_categorical"] = (z, None, rows)
    grid = np.linspace(-1.0, 1.0, values, dtype=np.float32)
    for i in range(self.continuous):
      z = base.at[:, n + k + i].set(jnp.repeat(jnp.asarray(grid), columns))
      out[f"code_continuous_{i}"] = (z, None, values)
    return out

  # --- networks ----------------------------------------------------------------

  def init(self, key_g, key_d):
    params, state, extra = super().init(key_g, key_d)
    params, state = self.with_head("Q", self.q, params, state, key_d)
    return params, state, extra

  def info_loss(self, q_params, q_state, feats, z, train: bool = True):
    """(lambda-free L_I, its metrics, Q's updated state)."""
    out, new_state = self.q.apply({"params": q_params, **q_state}, feats,
                                  train=train, mutable=list(q_state))
    cat, cont = self.codes(z)
    k = self.categories
    metrics, loss = {}, 0.0
    if k:
      ce = cross_entropy(out[:, :k], cat)
      metrics["info/cat_ce"] = ce
      metrics["info/cat_accuracy"] = jnp.mean(
          (jnp.argmax(out[:, :k], -1) == cat).astype(jnp.float32))
      loss = loss + ce
    if self.continuous:
      # -log N(c; mu, 1) summed over the codes, without its constant.
      nll = jnp.mean(jnp.sum(0.5 * (cont - out[:, k:]) ** 2, axis=-1))
      metrics["info/cont_ce"] = nll
      loss = loss + nll
    return loss, metrics, {**q_state, **new_state}

  # --- objectives --------------------------------------------------------------

  def d_objective(self, params, state, batch, ctx):
    def info_term(f_real, f_fake):
      del f_real
      info, metrics, q_state = self.info_loss(
          params["Q"], state.net_state["Q"], f_fake, batch["z"])
      return (self.info_weight * info,
              {f"d_{k}": v for k, v in metrics.items()}, {"Q": q_state})
    return self.d_objective_on_features(params, state, batch, ctx,
                                        info_term)

  def g_objective(self, params, state, batch, d_params=None, d_state=None):
    k_g, k_d = jax.random.split(batch["key"])
    fake, g_state = self.generate(params["G"], state.net_state["G"],
                                  batch["z"], None, train=True,
                                  rng=steps.device_key(k_g))
    logits, feats, _ = self.discriminate(
        params["D"], state.net_state["D"], fake, None, train=True,
        rng=steps.device_key(k_d), features=True)
    g_loss = self.loss.g(logits)
    info, info_metrics, _ = self.info_loss(params["Q"], state.net_state["Q"],
                                           feats, batch["z"])
    metrics = {"g_loss": g_loss, **{f"g_{k}": v
                                    for k, v in info_metrics.items()}}
    total, extra = self.add_g_penalties(g_loss + self.info_weight * info,
                                        metrics, params, state, batch, k_g)
    return total, (metrics, {"G": g_state}, extra)


@METHODS.register("infogan")
def infogan(cfg, dataset, categories: int = 10, continuous: int = 2,
            info_weight: float = 1.0, q_hidden: int = 128) -> InfoGAN:
  """InfoGAN with the codes and weight of the [infogan] section."""
  return InfoGAN(cfg, dataset, categories, continuous, info_weight, q_hidden)
