"""An image-to-image task written outside the package, as a user would
(``--extra_modules=paired_translation``): it checks that the image-
conditional family (pix2pix, CycleGAN, super-resolution) fits the method
API without changes to the engine.

* ``negative_digits``: a paired dataset, tiny_digits' 8x8 images as targets
  (``image``) with their negatives as sources (``source``): a dataset's
  batches may carry any arrays by name, laid out like ``image``, and the
  host input shards them all.
* ``translate``: a pix2pix-style method (Isola et al. 2017, eq. 4): G maps a
  source to a target, D judges (source, image) pairs, G's loss adds
  ``--translate.l1`` times the L1 distance to the paired target. Its
  sampling input (``sample_z``) is a held-out source instead of noise, so
  the sample grids, interpolation strips and evaluations show
  translations.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gan_jax import losses, sections
from gan_jax.data import DATASETS
from gan_jax.data import images
from gan_jax.methods import METHODS
from gan_jax.methods.base import Method
from gan_jax.state import split_variables

import tiny_image_data


class NegativePairs(images.ImageDataset):
  """Each target image with its source, the negative image."""

  def batches(self, *args, **kwargs):
    out = super().batches(*args, **kwargs)
    out["source"] = -out["image"]
    return out

  def sources(self, split: str) -> np.ndarray:
    """The sources of a split's images, in [-1, 1]."""
    x, _ = self.eval_arrays(split)
    return -(x.astype(np.float32) / 127.5 - 1.0)


def make_pairs(context):
  base = tiny_image_data.make(context)
  x, y = base.images, base.labels
  # (Its test split is its training set: tiny_digits has no other.)
  return NegativePairs(x, y, base.num_classes, context.seed,
                       "negative_digits", eval_loader=lambda split: (x, y))


class Translator(nn.Module):
  """G: a source image to a target image."""

  @nn.compact
  def __call__(self, x, y=None, train=False):
    del y, train
    h = nn.relu(nn.Conv(8, (3, 3))(x))
    return jnp.tanh(nn.Conv(x.shape[-1], (3, 3))(h))


class PairCritic(nn.Module):
  """D: a logit for each (source, image) pair (pix2pix's conditional D)."""

  @nn.compact
  def __call__(self, source, x):
    h = jnp.concatenate([source, x], axis=-1)
    h = nn.leaky_relu(nn.Conv(8, (3, 3), strides=2)(h), 0.2)
    return nn.Dense(1)(h.reshape(h.shape[0], -1))[:, 0]


sections.float_("translate", "l1", 100.0, "Weight of G's L1 distance to "
                "the paired target (pix2pix: 100).", bounds=">= 0")


class Translate(Method):
  """pix2pix's objective on any paired dataset with ``source`` batches."""

  def __init__(self, cfg, dataset, l1=100.0):
    super().__init__(cfg, dataset)
    self.l1 = l1
    self.loss = losses.build(cfg)
    self.g, self.d = Translator(), PairCritic()
    self.bank = dataset.sources("test")  # what the sampler translates

  def sample_z(self, key, batch_shape):
    index = jax.random.randint(key, tuple(batch_shape), 0, len(self.bank))
    return jnp.asarray(self.bank)[index]

  def init(self, key_g, key_d):
    x = jnp.zeros((2,) + self.shape, jnp.float32)
    g_params, g_state = split_variables(self.g.init(key_g, x))
    d_params, d_state = split_variables(self.d.init(key_d, x, x))
    return {"G": g_params, "D": d_params}, {"G": g_state, "D": d_state}, {}

  def sample_inputs(self, key, host):
    """D's batches are the step's pairs; G's the last of them."""
    pairs = {"real": host["image"], "source": host["source"]}
    return {"d": pairs, "g": {k: v[-1] for k, v in pairs.items()},
            "key": key}

  def objective(self, side, params, state, batch, ctx):
    del state, ctx
    source, real = batch["source"], batch["real"]
    fake = self.g.apply({"params": params["G"]}, source)
    critic = lambda x: self.d.apply({"params": params["D"]}, source, x)
    if side == "d":
      d_loss, d_real, d_fake = self.loss.d(critic(real),
                                           critic(lax.stop_gradient(fake)))
      return d_loss, ({"d_loss": d_loss, "d_loss_real": d_real,
                       "d_loss_fake": d_fake}, {}, {})
    g_loss = self.loss.g(critic(fake))
    l1 = losses.batch_mean(jnp.abs(fake - real))
    return g_loss + self.l1 * l1, ({"g_loss": g_loss, "l1": l1}, {}, {})

  def sample_images(self, params, net_state, z, y):
    del net_state, y
    return self.g.apply({"params": params["G"]}, z)


if "negative_digits" not in DATASETS:
  DATASETS.register("negative_digits", make_pairs)
  METHODS.register("translate", Translate)
