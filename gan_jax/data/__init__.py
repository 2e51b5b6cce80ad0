"""Datasets, chosen by name (``--dataset``).

Two kinds, one registry (``DATASETS``: name -> factory ``(context,
**knobs) -> dataset``; ``context`` is a ``DataContext``, the knobs the keys
of the ``data`` section it takes, e.g. ``image_size``):

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

from typing import NamedTuple, Optional

from gan_jax import sections
from gan_jax.errors import UserError
from gan_jax.registry import Registry

DATASETS = Registry("dataset")


class DataContext(NamedTuple):
  """What every dataset factory gets from the run (run-level flags)."""
  name: str                   # --dataset
  seed: int                   # --seed: the order of the examples
  data_dir: Optional[str]     # --tfds_data_dir
  manual_dir: Optional[str]   # --tfds_manual_dir


def context(cfg) -> DataContext:
  return DataContext(cfg.dataset, cfg.seed, cfg.tfds_data_dir,
                     cfg.tfds_manual_dir)


sections.integer("data", "image_size", None, "Image datasets: resize the "
                 "images to this height and width at load time (bilinear), "
                 "e.g. 32 or 64 to run DCGAN variants on 28x28 MNIST; unset: "
                 "the native resolution.", owner="dataset",
                 bounds="[1, 1024]")
sections.integer("data", "train_examples", 0, "Image datasets: train on "
                 "the first N images of the train split only; the rest are "
                 "held out as its 'valid' split (what the Parzen window "
                 "metric chooses its width on). Goodfellow et al. 2014 "
                 "trained on MNIST's first 50000 and validated on the last "
                 "10000. 0 = the whole train split.", owner="dataset",
                 bounds=">= 0")

from gan_jax.data import toy  # noqa: E402,F401
# Image sets: importing them is cheap (tfds loads on first use).
from gan_jax.data import images  # noqa: E402
from gan_jax.data import stacked_mnist  # noqa: E402,F401


def get(cfg):
  """The dataset named by ``cfg.dataset`` (registered names first) with the
  keys of the data section it takes, trained on its first
  ``--data.train_examples`` images when that is set."""
  if cfg.dataset in DATASETS:
    dataset = sections.build(DATASETS, cfg, "dataset", "data", context(cfg),
                             exclude=("train_examples",))
  elif images.is_tfds_name(cfg.dataset):
    # Any other tensorflow-datasets image dataset (see gan_jax.data.images).
    dataset = images.make(context(cfg), **sections.keys_for(
        images.make, cfg, "data", 1, f"--dataset={cfg.dataset}",
        exclude=("train_examples",)))
  else:
    raise UserError(f"unknown dataset {cfg.dataset!r}; valid: "
                    f"{', '.join(DATASETS.names())} or a tensorflow-datasets "
                    f"image dataset name")
  n = getattr(cfg, "data.train_examples")
  if n:
    if not isinstance(dataset, images.ImageDataset):
      raise UserError(f"--data.train_examples={n} selects training images; "
                      f"--dataset={cfg.dataset} is not an image set")
    dataset = dataset.held_out(n)
  return dataset
