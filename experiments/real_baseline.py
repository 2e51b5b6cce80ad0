"""The metrics' floor: real images against real images.

Usage: python experiments/real_baseline.py [--dataset=mnist] [--num=10000]

Scores ``--num`` training images (drawn without replacement, seed 0)
against ``--num`` test images with the same features and metric code as
``gan_jax.evaluate`` (the project's MNIST / Fashion-MNIST classifier;
FID, KID, Inception Score of the training sample, precision/recall with
k = 3). A generator's numbers at the same sample count are read against
these: a perfect generator would score about this, not 0 (FID and KID have
a finite-sample bias; precision and recall of two real samples are below 1).
Also the Parzen window log-likelihood of the ``--num`` test images under a
window on ``--num`` of the first 50,000 training images, its width chosen on
training images 50,000-50,999 (Goodfellow et al. 2014's protocol, with real
images in place of samples). Prints one JSON line and one Markdown table
row.
"""

import json
import sys

import numpy as np

from gan_jax import features as features_lib
from gan_jax import metrics as metrics_lib
from gan_jax.data import images
from gan_jax.errors import UserError

USAGE = "usage: real_baseline.py [--dataset=mnist|fashion_mnist] [--num=N]"


def to_unit(x: np.ndarray) -> np.ndarray:
  """uint8 NHWC -> float32 in [-1, 1], as the GAN data and the evaluator."""
  return x.astype(np.float32) / 127.5 - 1.0


def baseline(dataset: str, num: int):
  train, _ = images.load_arrays(dataset, "train")
  test, _ = images.load_arrays(dataset, "test")
  if not 2 <= num <= min(len(train), len(test)):
    raise UserError(f"--num={num} must be in [2, {min(len(train), len(test))}]")
  pick = np.random.default_rng(0).choice(len(train), num, replace=False)
  protocol = features_lib.protocol(dataset)
  fake = features_lib.compute(protocol.extractor, to_unit(train[np.sort(pick)]))
  real = features_lib.compute(protocol.extractor, to_unit(test[:num]))
  result = {"dataset": dataset, "num": num, "features": protocol.extractor}
  for name in ("fid", "kid", "inception_score", "precision_recall"):
    result.update(metrics_lib.METRICS.get(name)(real, fake))
  held_out = 50_000
  centers = np.random.default_rng(0).choice(held_out, num, replace=False)
  result.update(metrics_lib.parzen_lib.parzen(
      pixels(train[np.sort(centers)]), pixels(test[:num]),
      valid=pixels(train[held_out:held_out + 1000])))
  return result


def pixels(x: np.ndarray) -> np.ndarray:
  """uint8 NHWC -> flattened float32 pixels in [0, 1] (the Parzen scale)."""
  return x.reshape(len(x), -1).astype(np.float32) / 255.0


def main(argv):
  args = dict(dataset="mnist", num="10000")
  for a in argv[1:]:
    if a in ("-h", "--help"):
      print(USAGE + "\n\n" + __doc__.split("\n\n", 1)[1].strip())
      return
    name, eq, value = a.lstrip("-").partition("=")
    if not a.startswith("--") or not eq or name not in args:
      sys.exit(f"error: unknown argument {a} ({USAGE})")
    args[name] = value
  try:
    num = int(args["num"])
    if args["dataset"] not in ("mnist", "fashion_mnist"):
      raise UserError(f"--dataset={args['dataset']}: mnist or fashion_mnist "
                      f"(the datasets with the project's classifier)")
    result = baseline(args["dataset"], num)
  except ValueError:
    sys.exit(f"error: --num={args['num']} is not a whole number")
  except UserError as e:
    sys.exit(f"error: {e}")
  print(json.dumps(result))
  print(f"| real train vs test ({result['dataset']}, {num:,} each) | "
        f"{result['fid']:.2f} | {result['kid']:.3f} | "
        f"{result['inception_score']:.2f} | {result['precision']:.3f} | "
        f"{result['recall']:.3f} | {result['parzen_ll']:.1f} +- "
        f"{result['parzen_ll_se']:.1f} (sigma {result['parzen_sigma']:.3f}) |")


if __name__ == "__main__":
  main(sys.argv)
