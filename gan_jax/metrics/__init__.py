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
``fn(real, fake, seed, **knobs) -> {result name: float}`` and what it
needs. ``real`` and ``fake`` are dicts of arrays computed by the evaluator
from real data and generated samples, keyed by ``FEATURES`` ("features":
penultimate features, ``(N, D)``), ``LOGITS`` ("logits": class logits,
``(N, C)``), ``DIGITS`` ("digits": Stacked MNIST per-channel digits,
``(N, 3)``), ``LABELS`` ("labels": for ``fake``, the labels the method gave
its samples, ``(N,)``) and ``PIXELS`` ("pixels": the images themselves in
[0, 1], flattened, ``(N, H*W*C)``; for ``real`` also "valid_pixels",
held-out training images, for a metric that asks for them). ``seed`` is the
run's ``--seed`` (for a metric that draws random numbers: KID's subsets).

A metric's knobs are its section (``--kid.subsets``, ``--parzen.sigma``):
the keyword arguments of its function, defined with ``gan_jax.sections``
(``owner="metric"``); ``build(cfg, name)`` binds them. Register your own
from outside the package::

    from gan_jax import metrics, sections

    sections.integer("my_metric", "k", 5, "Neighbours.", owner="metric")

    @metrics.register("my_metric", needs=(metrics.FEATURES,))
    def my_metric(real, fake, seed, k=5): return {"my_metric": ...}
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

from absl import logging

from gan_jax import sections
from gan_jax.errors import UserError

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
  """A registered metric: ``fn(real, fake, seed, **knobs) -> {name: float}``.

  ``needs``: the array keys it reads; ``needs_real``: whether it reads
  ``real`` at all (IS and Stacked MNIST modes do not). Optional, each a
  function of the knobs: ``more_needs(**knobs)``, keys it reads with these
  knobs only (the Parzen window's held-out images when it chooses its
  width); ``check(num_samples, **knobs)``, a ``UserError`` for knobs that
  this many samples cannot meet, raised before any sampling;
  ``describe(real, num_fake, **knobs)``, what shaped its numbers, for
  eval.json (default: its knobs).
  """
  fn: Callable[..., Dict[str, float]]
  needs: Tuple[str, ...] = (FEATURES,)
  needs_real: bool = True
  more_needs: Optional[Callable[..., Tuple[str, ...]]] = None
  check: Optional[Callable[..., None]] = None
  describe: Optional[Callable[..., Dict[str, Any]]] = None

  def __call__(self, real, fake, seed: int = 0, **knobs) -> Dict[str, float]:
    return self.fn(real, fake, seed, **knobs)


class Scorer(NamedTuple):
  """A metric bound to its section's knobs and the run's seed
  (``build``)."""
  name: str
  metric: Metric
  knobs: Dict[str, Any]
  seed: int = 0

  @property
  def needs(self) -> Tuple[str, ...]:
    more = self.metric.more_needs
    return self.metric.needs + (tuple(more(**self.knobs)) if more else ())

  def __call__(self, real, fake) -> Dict[str, float]:
    return self.metric.fn(real, fake, self.seed, **self.knobs)

  def check(self, num_samples: int) -> None:
    if self.metric.check is not None:
      self.metric.check(num_samples, **self.knobs)

  def settings(self, real, num_fake: int) -> Dict[str, Any]:
    if self.metric.describe is not None:
      return self.metric.describe(real, num_fake, **self.knobs)
    return {f"{self.name}.{k}": v for k, v in self.knobs.items()}


def register(name: str, needs=(FEATURES,), needs_real: bool = True,
             override: bool = False, **hooks):
  """Decorator: registers ``fn(real, fake, seed, **knobs)`` as metric
  ``name``; ``hooks``: ``Metric``'s ``more_needs``, ``check``,
  ``describe``."""

  def add(fn):
    METRICS.register(name, Metric(fn, tuple(needs), needs_real, **hooks),
                     override=override)
    return fn

  return add


def build(cfg, name: str) -> Scorer:
  """Metric ``name`` with the knobs of its section in ``cfg`` (a key its
  function does not take is a one-line error)."""
  metric = METRICS.get(name)
  knobs = sections.keys_for(metric.fn, cfg, name, 3, f"metric {name}")
  return Scorer(name, metric, knobs, cfg.seed)


@register("fid")
def _fid(real, fake, seed):
  del seed
  return {"fid": fid(real[FEATURES], fake[FEATURES])}


sections.integer("kid", "subsets", 100, "KID: number of random subsets "
                 "(Binkowski et al. 2018).", owner="metric", safe=True,
                 bounds=">= 1")
sections.integer("kid", "subset_size", 1000, "KID: samples per subset (at "
                 "most the smaller sample set).", owner="metric", safe=True,
                 bounds=">= 2")


def _kid_check(num_samples, subsets, subset_size):
  del subsets
  if num_samples <= subset_size:
    logging.warning(
        "KID with %d samples and --kid.subset_size=%d: every subset is the "
        "whole set, so its std is 0, not a spread (use more samples or "
        "smaller subsets)", num_samples, subset_size)


def _kid_describe(real, num_fake, subsets, subset_size):
  return {"kid.subsets": subsets,
          "kid.subset_size": min(subset_size, num_fake,
                                 len(real[FEATURES]))}


@register("kid", check=_kid_check, describe=_kid_describe)
def _kid(real, fake, seed, subsets=100, subset_size=1000):
  mean, std = kid(real[FEATURES], fake[FEATURES], num_subsets=subsets,
                  subset_size=subset_size, seed=seed)
  return {"kid": mean, "kid_std": std}


def _evaluating(num_samples: int) -> str:
  return (f"evaluating {num_samples} samples (--num_samples, or "
          f"--eval.num_samples in training)")


sections.integer("inception_score", "splits", 10, "Inception Score: number "
                 "of splits.", owner="metric", safe=True, bounds=">= 1")


def _is_check(num_samples, splits):
  if splits > num_samples:
    raise UserError(f"--inception_score.splits={splits} needs at least "
                    f"{splits} samples; {_evaluating(num_samples)}")


@register("inception_score", needs=(LOGITS,), needs_real=False,
          check=_is_check)
def _is(real, fake, seed, splits=10):
  del real, seed
  mean, std = inception_score(fake[LOGITS], splits=splits)
  return {"inception_score": mean, "inception_score_std": std}


sections.integer("precision_recall", "k", 3, "Precision/recall: k of the "
                 "k-NN radii (Kynkaanniemi et al. 2019).", owner="metric",
                 safe=True, bounds=">= 1")


def _pr_check(num_samples, k):
  if num_samples <= k:
    raise UserError(f"--precision_recall.k={k} needs more than {k} "
                    f"samples; {_evaluating(num_samples)}")


@register("precision_recall", check=_pr_check)
def _pr(real, fake, seed, k=3):
  del seed
  p, r = precision_recall(real[FEATURES], fake[FEATURES], k=k)
  return {"precision": p, "recall": r}


@register("stacked_mnist_modes", needs=(DIGITS,), needs_real=False)
def _stacked(real, fake, seed):
  del real, seed
  stats = stacked_mnist.mode_stats(fake[DIGITS])
  return {"modes": float(stats["modes"]), "kl": stats["kl"]}


sections.float_("parzen", "sigma", 0.0, "Parzen window: the Gaussian "
                "kernel's width on pixels in [0, 1]; 0 = chosen on held-out "
                "training images (--parzen.valid_examples of the 'valid' "
                "split, which needs --data.train_examples) among 10 widths "
                "log-spaced from 0.1 to 1, as Goodfellow et al. 2014's "
                "script does.", owner="metric", safe=True, bounds=">= 0")
sections.integer("parzen", "valid_examples", 1000, "Parzen window: held-out "
                 "training images the kernel width is chosen on (the "
                 "authors' script: 1000).", owner="metric", safe=True,
                 bounds=">= 1", inert_unless=(
                     lambda p: not p["sigma"],
                     "it sizes the held-out set the width is chosen on, "
                     "and --parzen.sigma gives the width"))


def _parzen_more_needs(sigma, valid_examples):
  del valid_examples
  return () if sigma else (VALID_PIXELS,)


def _parzen_describe(real, num_fake, sigma, valid_examples):
  del num_fake
  if sigma:
    return {"parzen.sigma": sigma}
  n = min(valid_examples, len(real[VALID_PIXELS]))
  return {"parzen_sigma_chosen_on": f"{n} held-out training images",
          "parzen_sigmas": list(parzen_lib.DEFAULT_SIGMAS)}


@register("parzen", needs=(PIXELS,), more_needs=_parzen_more_needs,
          describe=_parzen_describe)
def _parzen(real, fake, seed, sigma=0.0, valid_examples=1000):
  """Goodfellow et al. 2014's Table 1 estimate: the real (test) images' mean
  log density under a Gaussian Parzen window on the generated samples, its
  width given (``--parzen.sigma``) or chosen on the first
  ``valid_examples`` held-out training images."""
  del seed
  valid = real.get(VALID_PIXELS)
  return parzen_lib.parzen(fake[PIXELS], real[PIXELS], sigma=sigma or None,
                           valid=None if valid is None
                           else valid[:valid_examples])


@register("class_accuracy", needs=(LOGITS, LABELS), needs_real=False)
def _class_accuracy(real, fake, seed):
  """How often the classifier names the class G was asked for (ACGAN,
  cGAN: Odena et al. 2017's measure of class-conditional samples)."""
  del real, seed
  return {"class_accuracy": labels_lib.class_accuracy(fake[LOGITS],
                                                      fake[LABELS])}


@register("cluster_accuracy", needs=(LOGITS, LABELS), needs_real=False)
def _cluster_accuracy(real, fake, seed):
  """How well an unsupervised code (InfoGAN's categorical code) matches the
  classifier's classes, after the best one-to-one matching of code values
  to classes (Chen et al. 2016, Sec. 7.1: 5% error on MNIST)."""
  del real, seed
  return {"cluster_accuracy": labels_lib.cluster_accuracy(fake[LOGITS],
                                                          fake[LABELS])}


__all__ = [
    "DIGITS", "FEATURES", "LABELS", "LOGITS", "METRICS", "Metric", "PIXELS",
    "Scorer", "VALID_PIXELS", "build", "fid", "frechet_distance",
    "gaussian_stats", "inception_score", "kid", "parzen_lib", "precision_recall", "register",
    "stacked_mnist",
]
