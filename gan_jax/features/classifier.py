"""Small CNN classifiers for MNIST-like data: features for FID/KID/PR, logits.

The project trains them itself (``python -m gan_jax.features.train_classifier``)
and ships the weights in ``gan_jax/features/weights/<name>.msgpack``. Inputs are
``(N, 28, 28, 1)`` images in ``[-1, 1]``, scaled like the GAN data.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Tuple

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from gan_jax import writers
from gan_jax.errors import UserError

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")
NUM_CLASSES = 10
FEATURE_DIM = 128
INPUT_SIZE = (28, 28)  # other sizes are resized to it


class Classifier(nn.Module):
  """Conv-BN-ReLU CNN; returns (penultimate features, logits).

  28x28 -> conv32 -> pool -> conv64 -> pool -> conv128 -> pool(3x3) ->
  dense 128 (the features, after ReLU) -> dropout -> dense 10. Sized to
  train in minutes on two CPU cores.
  """
  num_classes: int = NUM_CLASSES
  feature_dim: int = FEATURE_DIM
  dropout: float = 0.3

  @nn.compact
  def __call__(self, x, train: bool = False):
    def block(h, width):
      h = nn.Conv(width, (3, 3), use_bias=False)(h)
      h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
      return nn.relu(h)

    h = block(x, 32)
    h = nn.max_pool(h, (2, 2), (2, 2))  # 14x14
    h = block(h, 64)
    h = nn.max_pool(h, (2, 2), (2, 2))  # 7x7
    h = block(h, 128)
    h = nn.max_pool(h, (3, 3), (2, 2))  # 3x3
    h = h.reshape((h.shape[0], -1))
    feats = nn.relu(nn.Dense(self.feature_dim)(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(feats)
    logits = nn.Dense(self.num_classes)(h)
    return feats, logits


def to_model_input(images) -> np.ndarray:
  """uint8 ``(N, 28, 28[, 1])`` images -> float32 in ``[-1, 1]`` NHWC."""
  x = np.asarray(images)
  if x.ndim == 3:
    x = x[..., None]
  return (x.astype(np.float32) / 127.5 - 1.0)


def weights_path(name: str) -> str:
  return os.path.join(WEIGHTS_DIR, f"{name}.msgpack")


def init_variables(seed: int = 0):
  model = Classifier()
  return model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 28, 28, 1)))


def save(variables, path: str) -> None:
  """Writes the weights beside ``path`` and renames them into place, so a
  failed write keeps the previous weights."""
  with writers.atomic_open(path, "wb") as f:
    f.write(flax.serialization.to_bytes(jax.device_get(variables)))


def load_variables(name_or_path: str):
  """Reads the classifier variables by dataset name or msgpack path."""
  path = name_or_path
  if not path.endswith(".msgpack"):
    path = weights_path(name_or_path)
  if not os.path.exists(path):
    available = sorted(f[:-8] for f in os.listdir(WEIGHTS_DIR)
                       if f.endswith(".msgpack")) if os.path.isdir(
                           WEIGHTS_DIR) else []
    raise UserError(f"classifier weights not found at {path}; available: "
                    f"{', '.join(available) or 'none'}; train them with "
                    "python -m gan_jax.features.train_classifier")
  with open(path, "rb") as f:
    variables = flax.serialization.msgpack_restore(f.read())
  expected = jax.eval_shape(init_variables)
  if jax.tree.structure(variables) != jax.tree.structure(expected) or any(
      a.shape != b.shape for a, b in zip(jax.tree.leaves(variables),
                                         jax.tree.leaves(expected))):
    raise UserError(f"{path} does not hold weights of the current "
                    "classifier architecture; retrain with "
                    "python -m gan_jax.features.train_classifier")
  return jax.tree.map(jnp.asarray, variables)


def load(name: str) -> Callable[[jnp.ndarray], Tuple[jnp.ndarray, jnp.ndarray]]:
  """A jitted ``apply(images in [-1, 1], NHWC) -> (features, logits)``."""
  variables = load_variables(name)
  model = Classifier()

  @jax.jit
  def apply_jit(v, x):
    x = jnp.asarray(x, jnp.float32)
    if x.ndim == 3:
      x = x[..., None]
    if x.shape[1:3] != INPUT_SIZE:
      # Another --data.image_size: to the classifier's 28x28 (bilinear, with
      # antialiasing when shrinking), as Inception resizes to 299.
      x = jax.image.resize(x, (x.shape[0], *INPUT_SIZE, x.shape[3]),
                           "linear")
    return model.apply(v, x, train=False)

  # Weights are an argument, not constants baked into the compiled program.
  return lambda x: apply_jit(variables, x)


def batched(apply_fn, x, batch_size: int = 1000):
  """Runs ``apply_fn`` over ``x`` in fixed-size batches; numpy outputs.

  The last batch is padded so only one shape is compiled.
  """
  x = np.asarray(x)
  n = x.shape[0]
  outs = []
  for start in range(0, n, batch_size):
    chunk = x[start:start + batch_size]
    m = chunk.shape[0]
    if m < batch_size and n > batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - m, 0)])
    res = jax.device_get(apply_fn(chunk))
    outs.append(jax.tree.map(lambda a, m=m: np.asarray(a)[:m], res))
  return jax.tree.map(lambda *a: np.concatenate(a, 0), *outs)


@functools.lru_cache(maxsize=None)
def cached(name: str):
  """``load(name)``, memoized (the evaluator asks once per metric)."""
  return load(name)
