"""Evaluates a run with the metrics that fit its dataset.

    python -m gan_jax.evaluate --workdir=DIR [--num_samples=N] [--step=S]

Toy mixtures get the PacGAN mode metrics; MNIST and Fashion-MNIST get FID,
KID, IS and precision/recall on the project's classifier features; Stacked
MNIST gets modes covered and KL; other image sets the same four metrics on
Inception-v3 features (``--inception_weights``). Which network and metrics
fit a dataset is ``gan_jax.features.protocol``. The CLI prints a table and
writes ``DIR/eval.json`` (and appends it to ``DIR/eval.jsonl``, the run's
evaluation history); the training loop calls the same ``Evaluator``
every ``--eval_every`` steps (into metrics.jsonl and TensorBoard).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

import jax
import numpy as np
from absl import logging

from gan_jax import features as features_lib
from gan_jax import flags as flags_lib
from gan_jax import metrics as metrics_lib
from gan_jax import sampler as sampler_lib
from gan_jax import state as state_lib
from gan_jax import writers
from gan_jax.features import classifier as classifier_lib
from gan_jax.errors import UserError
from gan_jax.metrics import toy as toy_metrics

FLAGS = flags_lib.FLAGS

# A fixed key for evaluation samples: the same noise at every evaluation.
_EVAL_KEY = 1_000_003


class Evaluator:
  """Generates ``num_samples`` and computes the dataset's metrics.

  Real-data arrays (features of the first ``num_samples`` images of
  ``--eval_real_split``) are computed once and cached. Generated images are
  quantized to the real images' 256 levels before their features are taken
  (as when samples are saved as PNG and scored, pytorch-fid's way), so the
  two sets differ in content, not in precision.
  Construction checks that the feature network can be loaded, so a missing
  weight file fails before training starts, not at the first evaluation.
  """

  def __init__(self, gan, sampler, num_samples: int, batch: int = 500):
    self.gan = gan
    self.cfg = gan.cfg
    self.sampler = sampler
    self.num_samples = num_samples
    self.batch = batch
    self._real = None
    self.protocol = None
    if gan.dataset.kind != "toy":
      self.protocol = features_lib.protocol(self.cfg.dataset,
                                            tuple(self.cfg.eval_metrics))
      self._check_settings()
      features_lib.extractor(self.protocol.extractor,
                             self.cfg.inception_weights)
      size = tuple(gan.dataset.shape[:2])
      if (self.protocol.extractor in features_lib.GIVES
          and self.protocol.extractor != "inception"
          and size != classifier_lib.INPUT_SIZE):
        logging.warning(
            "evaluating %dx%d images with the 28x28 %s classifier: they "
            "are resized to 28x28 for it, so compare these numbers only "
            "with runs at the same --data.image_size", *size,
            self.protocol.extractor)

  def _check_settings(self):
    """Metric settings that this many samples cannot meet fail here, before
    any sampling (and, with ``--eval_every``, before training)."""
    n, cfg, names = self.num_samples, self.cfg, self.protocol.metrics
    where = (f"evaluating {n} samples (--num_samples, or --eval_num_samples "
             "in training)")
    if "precision_recall" in names and n <= cfg.pr_k:
      raise UserError(f"--pr_k={cfg.pr_k} needs more than {cfg.pr_k} "
                      f"samples; {where}")
    if "kid" in names and n <= cfg.kid_subset_size:
      logging.warning(
          "KID with %d samples and --kid_subset_size=%d: every subset is the "
          "whole set, so its std is 0, not a spread (use more samples or "
          "smaller subsets)", n, cfg.kid_subset_size)
    if "inception_score" in names and cfg.is_splits > n:
      raise UserError(f"--is_splits={cfg.is_splits} needs at least "
                      f"{cfg.is_splits} samples; {where}")
    if metrics_lib.LABELS in self._needs() and self.gan.eval_inputs(
        jax.random.PRNGKey(0), 1)[2] is None:
      names = [m for m in names
               if metrics_lib.LABELS in metrics_lib.METRICS.get(m).needs]
      raise UserError(
          f"--eval_metrics={names[0]} scores samples against their labels; "
          f"--method={cfg.method} gives its samples none (a conditional G "
          f"or InfoGAN's categorical code does)")
    if self._parzen_validation():
      try:
        self.gan.dataset.eval_arrays("valid")
      except UserError as e:
        raise UserError(f"the parzen metric chooses its kernel width on "
                        f"held-out training images (or give --parzen_sigma)"
                        f": {e}") from None

  def _needs(self):
    return {k for n in self.protocol.metrics
            for k in metrics_lib.METRICS.get(n).needs}

  def _parzen_validation(self) -> bool:
    """Whether the Parzen metric chooses its width on held-out images."""
    return "parzen" in self.protocol.metrics and not self.cfg.parzen_sigma

  def _arrays(self, images):
    needs = self._needs() - {metrics_lib.LABELS}
    out = {}
    if needs - {metrics_lib.PIXELS}:  # a feature network's arrays
      out = features_lib.compute(self.protocol.extractor, images,
                                 self.cfg.inception_weights, self.batch)
    if metrics_lib.PIXELS in needs:
      out[metrics_lib.PIXELS] = _pixels(images)
    return out

  def _real_arrays(self):
    if self._real is None:
      images, _ = self.gan.dataset.eval_arrays(self.cfg.eval_real_split)
      images = images[:self.num_samples].astype(np.float32) / 127.5 - 1.0
      self._real = self._arrays(images)
      if self._parzen_validation():
        valid, _ = self.gan.dataset.eval_arrays("valid")
        valid = valid[:self.cfg.parzen_valid_examples]
        self._real[metrics_lib.VALID_PIXELS] = _pixels(
            valid.astype(np.float32) / 127.5 - 1.0)
    return self._real

  def _generate(self, state, progress: bool):
    if self.gan.dataset.kind == "toy":
      # The draw of the mode metrics training logs (same numbers).
      return sampler_lib.toy_eval_samples(self.sampler, state,
                                          self.num_samples)
    key = jax.random.fold_in(state.rng, _EVAL_KEY)
    chunks = range(0, self.num_samples, self.batch)
    if progress:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      chunks = tqdm(chunks, desc="sampling", unit="batch")
    out, labels = [], []
    for i in chunks:
      n = min(self.batch, self.num_samples - i)
      x, y = self.sampler.sample(state, jax.random.fold_in(key, i), n,
                                 batch=n)
      out.append(quantize(x))  # per chunk: no full-size float copies
      if y is not None:
        labels.append(y)
    return np.concatenate(out), (np.concatenate(labels) if labels else None)

  def __call__(self, state, progress: bool = False) -> Dict[str, float]:
    fake = self._generate(state, progress)
    # The metrics place their own arrays (feature networks on one device,
    # precision/recall's blocks per device), also when the training loop
    # has its data-parallel mesh in context.
    with jax.set_mesh(None):
      if self.protocol is None:
        return self._metrics(fake)
      return self._metrics(*fake)

  def _metrics(self, fake, labels=None) -> Dict[str, float]:
    ds = self.gan.dataset
    if self.protocol is None:
      if ds.modes is None:
        return {}
      return toy_metrics.mode_metrics(fake, ds.modes, ds.std)
    fake_arrays = self._arrays(fake)
    if labels is not None:
      fake_arrays[metrics_lib.LABELS] = labels
    out: Dict[str, float] = {}
    for name in self.protocol.metrics:
      metric = metrics_lib.METRICS.get(name)
      real = self._real_arrays() if metric.needs_real else None
      out.update({k: float(v) for k, v in
                  metric(real, fake_arrays, self.cfg).items()})
    return out

  def settings(self) -> Dict[str, Any]:
    """What shaped the numbers: the feature network, the real samples used
    and the metrics' parameters (KID's subset size as used: at most the
    smaller sample set)."""
    if self.protocol is None:
      ds = self.gan.dataset
      if ds.modes is None:
        return {}
      # PacGAN's protocol (gan_jax.metrics.toy): nearest mode, measured in
      # standard deviations; high quality within 3.
      return {"features": "samples", "num_modes": len(ds.modes),
              "mode_std": [float(s) for s in np.ravel(ds.std)],
              "high_quality_within_std": 3.0}
    cfg, names = self.cfg, self.protocol.metrics
    out: Dict[str, Any] = {"features": self.protocol.extractor}
    out["generated"] = "quantized to 8 bits"
    if any(metrics_lib.METRICS.get(n).needs_real for n in names):
      out["real_split"] = cfg.eval_real_split
      out["num_real"] = len(next(iter(self._real_arrays().values())))
    if "kid" in names:
      out["kid_subsets"] = cfg.kid_subsets
      out["kid_subset_size"] = min(cfg.kid_subset_size, self.num_samples,
                                   out["num_real"])
    if "precision_recall" in names:
      out["pr_k"] = cfg.pr_k
    if "inception_score" in names:
      out["is_splits"] = cfg.is_splits
    if "parzen" in names:
      if cfg.parzen_sigma:
        out["parzen_sigma"] = cfg.parzen_sigma
      else:
        out["parzen_sigma_chosen_on"] = (
            f"{len(self._real_arrays()[metrics_lib.VALID_PIXELS])} held-out "
            "training images")
        out["parzen_sigmas"] = list(metrics_lib.parzen_lib.DEFAULT_SIGMAS)
    return out


def _pixels(images: np.ndarray) -> np.ndarray:
  """[-1, 1] images -> [0, 1] pixels, one flattened row per image."""
  x = (np.asarray(images, np.float32) + 1.0) * np.float32(0.5)
  return x.reshape(len(x), -1)


def quantize(images: np.ndarray) -> np.ndarray:
  """[-1, 1] floats -> the nearest of the 256 levels uint8 / 127.5 - 1 that
  real images take."""
  levels = np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5),
                   0, 255)
  return levels / np.float32(127.5) - np.float32(1.0)


def format_table(results: Dict[str, float]) -> str:
  width = max(len(k) for k in results) if results else 0
  return "\n".join(f"{k:<{width}}  {v:.6g}" for k, v in results.items())


def replica_scalars(cfg, per_replica) -> Dict[str, float]:
  """--num_seeds: ``name/seed_S`` for each replica (S = its seed) and, under
  the plain ``name``, the mean over replicas."""
  out = {}
  for i, scalars in enumerate(per_replica):
    for name, value in scalars.items():
      out[f"{name}/seed_{cfg.seed + i}"] = float(value)
  for name in per_replica[0]:
    out[name] = float(np.mean([r[name] for r in per_replica]))
  return out


def evaluate_replicas(evaluator, cfg, state,
                      progress: bool = False) -> Dict[str, float]:
  """The evaluator's metrics (per replica and mean with --num_seeds)."""
  if cfg.num_seeds == 1:
    return evaluator(state, progress)
  return replica_scalars(cfg, [evaluator(state_lib.replica(state, i),
                                         progress)
                               for i in range(cfg.num_seeds)])


def run_evaluate(workdir: str, num_samples: Optional[int],
                 step: Optional[int],
                 overrides: Optional[Dict[str, Any]] = None
                 ) -> Dict[str, float]:
  """Evaluates a run's checkpoint; ``overrides``: flags over the run's
  saved config, as the CLI passes those given on its command line: safe
  ones (``--inception_weights``, ``--kid_subset_size``, data paths, ...)
  replace the run's values, structural ones must equal them."""
  from gan_jax import sample  # pylint: disable=g-import-not-at-top
  # Every replica of a --num_seeds run: name/seed_S each, and their mean.
  gan, state, step, mesh = sample.load(workdir, step, replica=None,
                                       overrides=overrides)
  n = num_samples or (gan.cfg.eval_samples if gan.dataset.kind == "toy"
                      else gan.cfg.eval_num_samples)
  if n < 2:
    raise UserError(f"--num_samples must be >= 2, got {n}")
  evaluator = Evaluator(gan, sampler_lib.Sampler(gan, mesh), n)
  results = {"step": float(step), "num_samples": float(n),
             **evaluate_replicas(evaluator, gan.cfg, state, progress=True)}
  # Non-finite values as "inf" / "nan" strings, as in metrics.jsonl (JSON
  # has no Infinity: strict parsers refuse Python's bare one).
  record = {k: (int(v) if k in ("step", "num_samples") else
                writers.clean_value(v))
            for k, v in results.items()}
  settings = evaluator.settings()
  if settings:
    record["settings"] = settings
  # eval.json: this evaluation, replaced whole (never half-written);
  # eval.jsonl: every evaluation of the run, so evaluating another step or
  # with other settings loses no earlier result.
  with writers.atomic_open(os.path.join(workdir, "eval.json")) as f:
    json.dump(record, f, indent=2)
  writers.append_line(os.path.join(workdir, "eval.jsonl"), json.dumps(record))
  return results


def main(argv):
  del argv  # run_cli refuses positional arguments
  flags_lib.check_tool_flags("evaluate")
  if not FLAGS.workdir:
    raise UserError("--workdir is required (the run directory to evaluate)")
  results = run_evaluate(FLAGS.workdir, FLAGS.num_samples, FLAGS.step,
                         flags_lib.config_flags_given())
  print(format_table(results))
  print(f"wrote {os.path.join(FLAGS.workdir, 'eval.json')} (and appended "
        "to eval.jsonl)")


if __name__ == "__main__":
  from gan_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run_cli(main)
