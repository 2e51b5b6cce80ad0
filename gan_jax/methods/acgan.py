"""ACGAN (Odena et al. 2017): a class-conditional G and a discriminator
that also classifies. ``--method=acgan`` (on a labelled dataset).

G(z, c) is conditioned on a class c drawn uniformly (the architecture's
own conditioning, as ``--conditional`` gives a cGAN's G). D is
unconditional; an auxiliary classifier (network ``"C"``, a linear softmax
``models.heads.Head`` on the features D's trunk sows) predicts the class.
With L_S D's registered loss (``--loss``) and L_C the classifier's
cross-entropy (Sec. 3, eq. 2-3): D and C minimize L_S + w (L_C(real) +
L_C(fake)); G minimizes its L_S + w L_C(fake), ``w`` being
``--acgan.class_weight`` (1 in the paper). C shares D's optimizer.

Metrics: ``d_class_ce_real``, ``d_class_ce_fake``, ``g_class_ce`` and the
classifier's accuracy on real data (``d_class_accuracy_real``).
``--eval.metrics=class_accuracy`` scores the samples with the shipped
MNIST/Fashion-MNIST classifier against the classes G was given.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gan_jax import sections
from gan_jax import steps
from gan_jax.errors import UserError
from gan_jax.methods.base import METHODS, cross_entropy
from gan_jax.methods.gan import GAN
from gan_jax import models
from gan_jax.models import heads

sections.float_("acgan", "class_weight", 1.0, "w: the weight of the "
                "auxiliary classifier's cross-entropy in D's and G's "
                "losses.", bounds=">= 0")


class ACGAN(GAN):
  """G(z, c) against an unconditional D with an auxiliary classifier C."""

  d_networks = ("D", "C")

  def __init__(self, cfg, dataset, class_weight: float):
    if not dataset.num_classes:
      raise UserError(f"--method=acgan needs a labelled dataset; "
                      f"{cfg.dataset!r} has no labels")
    if cfg.pack > 1:
      raise UserError("--method=acgan does not take --pack > 1")
    self.class_weight = class_weight
    super().__init__(cfg, dataset, d_classes=0)
    if self.loss.g_reads_real:
      raise UserError(f"--method=acgan takes a loss whose G part reads "
                      f"fakes only; --loss={cfg.loss} reads real data too")
    self.classifier = heads.Head(out=dataset.num_classes, hidden=0,
                                 **models.common(cfg)._asdict())

  @property
  def num_classes(self) -> int:
    """G is always class-conditional."""
    return self.dataset.num_classes

  def init(self, key_g, key_d):
    params, state, extra = super().init(key_g, key_d)
    params, state = self.with_head("C", self.classifier, params, state,
                                   key_d)
    return params, state, extra

  def classify(self, params, feats):
    return self.classifier.apply({"params": params}, feats, train=True)

  def d_objective(self, params, state, batch, ctx):
    y_real = batch["y_real"]

    def class_term(f_real, f_fake):
      c_real = self.classify(params["C"], f_real)
      ce_real = cross_entropy(c_real, y_real)
      ce_fake = cross_entropy(self.classify(params["C"], f_fake),
                              batch["y_fake"])
      metrics = {"d_class_ce_real": ce_real, "d_class_ce_fake": ce_fake,
                 "d_class_accuracy_real": jnp.mean(
                     (jnp.argmax(c_real, -1) == y_real).astype(jnp.float32))}
      return self.class_weight * (ce_real + ce_fake), metrics, {}
    return self.d_objective_on_features(params, state, batch, ctx,
                                        class_term)

  def g_objective(self, params, state, batch, d_params=None, d_state=None):
    k_g, k_d = jax.random.split(batch["key"])
    fake, g_state = self.generate(params["G"], state.net_state["G"],
                                  batch["z"], batch["y"], train=True,
                                  rng=steps.device_key(k_g))
    logits, feats, _ = self.discriminate(
        params["D"], state.net_state["D"], fake, None, train=True,
        rng=steps.device_key(k_d), features=True)
    g_loss = self.loss.g(logits)
    ce = cross_entropy(self.classify(params["C"], feats), batch["y"])
    metrics = {"g_loss": g_loss, "g_class_ce": ce}
    total, extra = self.add_g_penalties(g_loss + self.class_weight * ce,
                                        metrics, params, state, batch, k_g)
    return total, (metrics, {"G": g_state}, extra)


@METHODS.register("acgan")
def acgan(cfg, dataset, class_weight: float = 1.0) -> ACGAN:
  """ACGAN with the weight of the [acgan] section."""
  return ACGAN(cfg, dataset, class_weight)
