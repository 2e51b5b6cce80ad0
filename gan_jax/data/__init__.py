"""Datasets, chosen by name (``--dataset``).

Two kinds, one registry (``DATASETS``: name -> factory ``cfg -> dataset``):

* Toy sets (``kind == "toy"``) are sampled on device inside the compiled step:
  ``dataset.sample(key, n) -> (x, y)`` is a pure JAX function (``y`` is None
  or int labels). Every sample is a function of its key alone.
* Image sets (``kind == "image"``) are read on the host and fed to the step.
  Their order is a function of ``(seed, epoch)``, and the batch of a training
  step is a function of the step alone, so a resumed run reads exactly what an
  uninterrupted one would.

Both expose ``shape`` (one sample, e.g. ``(2,)`` or ``(28, 28, 1)``) and
``num_classes`` (0 when unlabelled).
"""

from gan_jax.errors import UserError
from gan_jax.registry import Registry

DATASETS = Registry("dataset")

from gan_jax.data import toy  # noqa: E402,F401
# Image sets: importing them is cheap (tfds loads on first use).
from gan_jax.data import images  # noqa: E402
from gan_jax.data import stacked_mnist  # noqa: E402,F401


def get(cfg):
  """The dataset named by ``cfg.dataset`` (registered names first), trained
  on its first ``--train_examples`` images when that is set."""
  if cfg.dataset in DATASETS:
    dataset = DATASETS.get(cfg.dataset)(cfg)
  elif images.is_tfds_name(cfg.dataset):
    # Any other tensorflow-datasets image dataset (see gan_jax.data.images).
    dataset = images.make(cfg)
  else:
    raise UserError(f"unknown dataset {cfg.dataset!r}; valid: "
                    f"{', '.join(DATASETS.names())} or a tensorflow-datasets "
                    f"image dataset name")
  n = getattr(cfg, "train_examples", 0)
  if n:
    if not isinstance(dataset, images.ImageDataset):
      raise UserError(f"--train_examples={n} selects training images; "
                      f"--dataset={cfg.dataset} is not an image set")
    dataset = dataset.held_out(n)
  return dataset
