"""Feature networks for the sample-quality metrics, chosen per dataset.

* ``mnist`` / ``fashion_mnist``: the project's own small CNN classifiers
  (``classifier.py``; weights shipped in ``weights/``): 128-d penultimate
  features for FID/KID/PR, 10 logits for IS.
* ``stacked_mnist``: the MNIST classifier applied to each channel, for mode
  counting (``gan_jax.metrics.stacked_mnist``).
* anything else (CIFAR-10, CelebA, ...): the FID Inception-v3
  (``inception.py``), 2048-d pool3 features and 1008 logits, with weights
  from pytorch-fid's file given by ``--inception_weights``.

FID from a classifier is only comparable with other FIDs from the same
classifier, never with published Inception FIDs.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from gan_jax.errors import UserError

CLASSIFIER_DATASETS = ("mnist", "fashion_mnist")


@dataclasses.dataclass(frozen=True)
class Protocol:
  """Which feature network and which registered metrics fit a dataset."""
  extractor: str  # "mnist", "fashion_mnist", "mnist_channels" or "inception"
  metrics: Tuple[str, ...]


# What each feature network gives the metrics (``compute``'s keys).
GIVES = {"mnist": ("features", "logits"),
         "fashion_mnist": ("features", "logits"),
         "inception": ("features", "logits"),
         "mnist_channels": ("digits",)}


def protocol(dataset: str, metrics: Tuple[str, ...] = ()) -> Protocol:
  """The dataset's feature network and metrics; ``metrics`` (registered
  names, e.g. ``--eval.metrics``) replaces the default list, checked
  against the registry and what the feature network gives."""
  default = _default_protocol(dataset)
  if not metrics:
    return default
  from gan_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  # The images themselves ("pixels") come with any feature network.
  gives = GIVES[default.extractor] + ("pixels", "labels")
  for name in metrics:
    missing = [k for k in metrics_lib.METRICS.get(name).needs
               if k not in gives]
    if missing:
      raise UserError(
          f"--eval.metrics: metric {name!r} needs {', '.join(missing)}, "
          f"which the feature network of --dataset={dataset} "
          f"({default.extractor}) does not give (it gives "
          f"{', '.join(gives)})")
  return Protocol(default.extractor, tuple(dict.fromkeys(metrics)))


def _default_protocol(dataset: str) -> Protocol:
  if dataset in CLASSIFIER_DATASETS:
    return Protocol(dataset, ("fid", "kid", "inception_score",
                              "precision_recall"))
  if dataset == "stacked_mnist":
    return Protocol("mnist_channels", ("stacked_mnist_modes",))
  return Protocol("inception", ("fid", "kid", "inception_score",
                                "precision_recall"))


def extractor(name: str, inception_weights: Optional[str] = None
              ) -> Callable:
  """``apply(images in [-1, 1], NHWC) -> (features, logits)`` by name.

  Raises ``UserError`` (one line) when weights are missing.
  """
  # pylint: disable=g-import-not-at-top
  if name in ("mnist", "mnist_channels", "fashion_mnist"):
    from gan_jax.features import classifier
    return classifier.cached("mnist" if name == "mnist_channels" else name)
  if name == "inception":
    from gan_jax.features import inception
    if not inception_weights:
      raise UserError(inception.missing_weights_message(inception_weights))
    return inception.cached(inception_weights)
  raise UserError(f"unknown feature extractor {name!r}")


def compute(name: str, images, inception_weights: Optional[str] = None,
            batch_size: int = 500) -> Dict[str, np.ndarray]:
  """The arrays the metrics read, for images in [-1, 1] (NHWC).

  ``{"features", "logits"}`` for a feature network, ``{"digits"}`` (N, 3)
  for ``mnist_channels`` (Stacked MNIST).
  """
  # pylint: disable=g-import-not-at-top
  from gan_jax.features import classifier
  if name == "mnist_channels":
    from gan_jax.metrics import stacked_mnist
    return {"digits": stacked_mnist.classify_channels(
        images, extractor(name), batch_size)}
  feats, logits = classifier.batched(extractor(name, inception_weights),
                                     images, batch_size)
  return {"features": feats, "logits": logits}
