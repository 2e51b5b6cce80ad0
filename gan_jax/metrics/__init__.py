"""Sample-quality metrics on feature arrays, and their registry.

Library functions (numpy in, float64 where it matters)::

    fid(features_a, features_b) -> float
    kid(features_a, features_b, num_subsets=100, subset_size=1000)
        -> (mean, std)
    inception_score(logits, splits=10) -> (mean, std)
    precision_recall(real_features, fake_features, k=3)
        -> (precision, recall)
    stacked_mnist.mode_stats(digit_predictions) -> dict(modes, kl)
    parzen.parzen(samples, test, sigma=None, valid=None)
        -> dict(parzen_ll, parzen_ll_se, parzen_sigma)

``METRICS`` maps a name to a ``Metric``: its function
``fn(real, fake, cfg) -> {result name: float}`` and what it needs. ``real``
and ``fake`` are dicts of arrays computed by the evaluator from real data and
generated samples, keyed by ``FEATURES`` ("features": penultimate features,
``(N, D)``), ``LOGITS`` ("logits": class logits, ``(N, C)``) and ``DIGITS``
("digits": Stacked MNIST per-channel digits, ``(N, 3)``) and ``PIXELS``
``LABELS`` ("labels": for ``fake``, the labels the method gave its samples,
``(N,)``) and ``PIXELS``
("pixels": the images themselves in [0, 1], flattened, ``(N, H*W*C)``; for
``real`` also "valid_pixels", held-out training images, when the Parzen
window chooses its width on them). ``cfg`` is a
``gan_jax.flags.Config`` or None (then the defaults below apply). Register
your own from outside the package::

    from gan_jax import metrics

    @metrics.register("my_metric", needs=(metrics.FEATURES,))
    def my_metric(real, fake, cfg): return {"my_metric": ...}
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Tuple

from gan_jax.metrics import labels as labels_lib
from gan_jax.metrics import parzen as parzen_lib
from gan_jax.metrics import stacked_mnist
from gan_jax.metrics.fid import fid, frechet_distance, gaussian_stats
from gan_jax.metrics.inception_score import inception_score
from gan_jax.metrics.kid import kid
from gan_jax.metrics.precision_recall import precision_recall
from gan_jax.registry import Registry

FEATURES = "features"
LOGITS = "logits"
DIGITS = "digits"
PIXELS = "pixels"
VALID_PIXELS = "valid_pixels"
# The labels of generated samples (``Method.eval_inputs``: the class a
# conditional G was given, InfoGAN's categorical code), (N,) ints.
LABELS = "labels"

METRICS = Registry("metric")


@dataclasses.dataclass(frozen=True)
class Metric:
  """A registered metric: ``fn(real, fake, cfg) -> {name: float}``.

  ``needs``: the array keys it reads; ``needs_real``: whether it reads
  ``real`` at all (IS and Stacked MNIST modes do not).
  """
  fn: Callable[[Dict[str, Any], Dict[str, Any], Any], Dict[str, float]]
  needs: Tuple[str, ...] = (FEATURES,)
  needs_real: bool = True

  def __call__(self, real, fake, cfg=None) -> Dict[str, float]:
    return self.fn(real, fake, cfg)


def register(name: str, needs=(FEATURES,), needs_real: bool = True,
             override: bool = False):
  """Decorator: registers ``fn(real, fake, cfg)`` as metric ``name``."""

  def add(fn):
    METRICS.register(name, Metric(fn, tuple(needs), needs_real),
                     override=override)
    return fn

  return add


def _opt(cfg, name: str, default):
  value = getattr(cfg, name, None) if cfg is not None else None
  return default if value is None else value


@register("fid")
def _fid(real, fake, cfg):
  del cfg
  return {"fid": fid(real[FEATURES], fake[FEATURES])}


@register("kid")
def _kid(real, fake, cfg):
  mean, std = kid(real[FEATURES], fake[FEATURES],
                  num_subsets=_opt(cfg, "kid_subsets", 100),
                  subset_size=_opt(cfg, "kid_subset_size", 1000),
                  seed=_opt(cfg, "seed", 0))
  return {"kid": mean, "kid_std": std}


@register("inception_score", needs=(LOGITS,), needs_real=False)
def _is(real, fake, cfg):
  del real
  mean, std = inception_score(fake[LOGITS], splits=_opt(cfg, "is_splits", 10))
  return {"inception_score": mean, "inception_score_std": std}


@register("precision_recall")
def _pr(real, fake, cfg):
  p, r = precision_recall(real[FEATURES], fake[FEATURES],
                          k=_opt(cfg, "pr_k", 3))
  return {"precision": p, "recall": r}


@register("stacked_mnist_modes", needs=(DIGITS,), needs_real=False)
def _stacked(real, fake, cfg):
  del real, cfg
  stats = stacked_mnist.mode_stats(fake[DIGITS])
  return {"modes": float(stats["modes"]), "kl": stats["kl"]}


@register("parzen", needs=(PIXELS,))
def _parzen(real, fake, cfg):
  """Goodfellow et al. 2014's Table 1 estimate: the real (test) images' mean
  log density under a Gaussian Parzen window on the generated samples, its
  width given (``--parzen_sigma``) or chosen on held-out training images."""
  sigma = _opt(cfg, "parzen_sigma", 0.0) or None
  return parzen_lib.parzen(fake[PIXELS], real[PIXELS], sigma=sigma,
                           valid=real.get(VALID_PIXELS))


@register("class_accuracy", needs=(LOGITS, LABELS), needs_real=False)
def _class_accuracy(real, fake, cfg):
  """How often the classifier names the class G was asked for (ACGAN,
  cGAN: Odena et al. 2017's measure of class-conditional samples)."""
  del real, cfg
  return {"class_accuracy": labels_lib.class_accuracy(fake[LOGITS],
                                                      fake[LABELS])}


@register("cluster_accuracy", needs=(LOGITS, LABELS), needs_real=False)
def _cluster_accuracy(real, fake, cfg):
  """How well an unsupervised code (InfoGAN's categorical code) matches the
  classifier's classes, after the best one-to-one matching of code values
  to classes (Chen et al. 2016, Sec. 7.1: 5% error on MNIST)."""
  del real, cfg
  return {"cluster_accuracy": labels_lib.cluster_accuracy(fake[LOGITS],
                                                          fake[LABELS])}


__all__ = [
    "DIGITS", "FEATURES", "LABELS", "LOGITS", "METRICS", "Metric", "PIXELS",
    "VALID_PIXELS", "fid", "frechet_distance", "gaussian_stats",
    "inception_score", "kid", "parzen_lib", "precision_recall", "register",
    "stacked_mnist",
]
