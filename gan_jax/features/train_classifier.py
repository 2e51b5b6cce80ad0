"""Trains the MNIST / Fashion-MNIST feature classifier shipped with gan_jax.

    python -m gan_jax.features.train_classifier --dataset=mnist \
        --out=gan_jax/features/weights/mnist.msgpack

AdamW with a one-cycle cosine schedule, light augmentation (MNIST: random
shifts of up to 2 pixels; Fashion-MNIST: horizontal flips), inputs in
[-1, 1] like the GAN data. Prints the test accuracy at the end of every epoch.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gan_jax import flags as gflags
from gan_jax.errors import UserError
from gan_jax.features import classifier

FLAGS = gflags.FLAGS
DATASETS = ("mnist", "fashion_mnist")


def load_split(name: str, split: str):
  """(uint8 NHWC images, int32 labels) of an official split."""
  from gan_jax.data import images  # pylint: disable=g-import-not-at-top
  x, y = images.load_arrays(name, split)
  return np.asarray(x, np.uint8), np.asarray(y, np.int32)


def augment(key, x, shift: bool, flip: bool):
  """Random shifts of up to 2 pixels (padding with -1) and/or flips."""
  n, h, w, _ = x.shape
  k1, k2 = jax.random.split(key)
  if shift:
    offs = jax.random.randint(k1, (n, 2), 0, 5)
    xp = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-1.0)
    x = jax.vmap(lambda im, o: jax.lax.dynamic_slice(
        im, (o[0], o[1], 0), (h, w, im.shape[-1])))(xp, offs)
  if flip:
    do = jax.random.bernoulli(k2, 0.5, (n, 1, 1, 1))
    x = jnp.where(do, x[:, :, ::-1], x)
  return x


def make_step(model, tx, shift: bool, flip: bool):
  """The jitted update ``(params, batch_stats, opt, x, y, key) -> ...``."""

  @jax.jit
  def step(params, batch_stats, opt_state, x, y, key):
    k_aug, k_drop = jax.random.split(key)
    x = augment(k_aug, x, shift, flip)

    def loss_fn(p):
      (_, logits), new = model.apply(
          {"params": p, "batch_stats": batch_stats}, x, train=True,
          mutable=["batch_stats"], rngs={"dropout": k_drop})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, (new["batch_stats"], logits)

    (loss, (batch_stats, logits)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    acc = jnp.mean(jnp.argmax(logits, -1) == y)
    return params, batch_stats, opt_state, loss, acc

  return step


@jax.jit
def _logits(variables, x):
  return classifier.Classifier().apply(variables, x, train=False)[1]


def accuracy(variables, x, y, batch_size: int = 1000) -> float:
  """Top-1 accuracy on uint8 images ``x`` with labels ``y``."""
  preds = classifier.batched(lambda b: _logits(variables, b),
                             classifier.to_model_input(x), batch_size)
  return float(np.mean(np.argmax(preds, -1) == y))


def train(name: str, epochs: int, batch_size: int, lr: float, seed: int = 0,
          log=print):
  """Trains on the train split; returns (variables, test accuracy)."""
  x_train, y_train = load_split(name, "train")
  x_test, y_test = load_split(name, "test")
  xf = classifier.to_model_input(x_train)
  model = classifier.Classifier()
  variables = classifier.init_variables(seed)
  params, batch_stats = variables["params"], variables["batch_stats"]
  steps_per_epoch = len(xf) // batch_size
  total = epochs * steps_per_epoch
  schedule = optax.cosine_onecycle_schedule(total, lr, pct_start=0.15)
  tx = optax.adamw(schedule, weight_decay=5e-4)
  opt_state = tx.init(params)
  fashion = name == "fashion_mnist"
  step = make_step(model, tx, shift=not fashion, flip=fashion)
  rng = np.random.default_rng(seed)
  key = jax.random.PRNGKey(seed)
  start = time.time()
  for epoch in range(epochs):
    order = rng.permutation(len(xf))
    losses, accs = [], []
    for i in range(steps_per_epoch):
      idx = order[i * batch_size:(i + 1) * batch_size]
      params, batch_stats, opt_state, loss, acc = step(
          params, batch_stats, opt_state, xf[idx], y_train[idx],
          jax.random.fold_in(key, epoch * steps_per_epoch + i))
      losses.append(loss)
      accs.append(acc)
    variables = {"params": params, "batch_stats": batch_stats}
    test_acc = accuracy(variables, x_test, y_test)
    loss = np.mean(jax.device_get(losses))
    log(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f} train acc "
        f"{np.mean(jax.device_get(accs)):.4f} test acc {test_acc:.4f} "
        f"({time.time() - start:.0f} s)")
  return variables, test_acc


def main(argv):
  del argv  # run_cli refuses positional arguments
  gflags.check_tool_flags("features.train_classifier")
  name = FLAGS.dataset
  if name not in DATASETS:
    raise UserError(f"--dataset must be one of {', '.join(DATASETS)}, "
                    f"got {name!r}")
  out = FLAGS.out or classifier.weights_path(name)
  variables, test_acc = train(name, FLAGS.classifier_epochs,
                              FLAGS.classifier_batch_size,
                              FLAGS.classifier_lr, FLAGS.seed)
  classifier.save(variables, out)
  print(f"wrote {out}: {name} test accuracy {test_acc:.4f}")


if __name__ == "__main__":
  from gan_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run_cli(main)
