"""Evaluates a run with the metrics that fit its dataset.

    python -m gan_jax.evaluate --workdir=DIR [--num_samples=N] [--step=S]

Toy mixtures get the PacGAN mode metrics; MNIST and Fashion-MNIST get FID,
KID, IS and precision/recall on the project's classifier features; Stacked
MNIST gets modes covered and KL; other image sets the same four metrics on
Inception-v3 features (``--inception_weights``). Which network and metrics
fit a dataset is ``gan_jax.features.protocol``. The CLI prints a table and
writes ``DIR/eval.json`` (and appends it to ``DIR/eval.jsonl``, the run's
evaluation history); the training loop calls the same ``Evaluator``
every ``--eval.every`` steps (into metrics.jsonl and TensorBoard).

The evaluation's section, ``--eval.*``, is defined here; each metric's own
knobs are its section (``--kid.subsets``, ``gan_jax.metrics``).
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
from gan_jax import sections
from gan_jax import state as state_lib
from gan_jax import writers
from gan_jax.features import classifier as classifier_lib
from gan_jax.errors import UserError
from gan_jax.metrics import toy as toy_metrics

FLAGS = flags_lib.FLAGS

# A fixed key for evaluation samples: the same noise at every evaluation.
_EVAL_KEY = 1_000_003

# Samples per evaluation by default (--eval.num_samples unset).
TOY_SAMPLES = 2500  # PacGAN's protocol
IMAGE_SAMPLES = 10_000

sections.integer("eval", "every", 0, "Evaluate the dataset's metrics every N "
                 "steps into metrics.jsonl and TensorBoard; 0 = off. Toy "
                 "sets get their mode metrics at every log step regardless.",
                 owner="run", safe=True, bounds=">= 0")
sections.integer("eval", "num_samples", None, "Generated samples per "
                 "evaluation (for images also the real ones used); default "
                 f"{TOY_SAMPLES} for toy sets (PacGAN's protocol), "
                 f"{IMAGE_SAMPLES} for images.", owner="run", safe=True,
                 bounds=">= 2")
sections.strings("eval", "metrics", [], "Metrics of image evaluations, by "
                 "registered name (gan_jax.metrics.METRICS; yours too, "
                 "registered from a module given to --extra_modules); their "
                 "knobs are their sections (--kid.subsets, ...). Empty: the "
                 "dataset's own (fid, kid, inception_score, precision_recall;"
                 " stacked_mnist_modes for Stacked MNIST).", owner="run",
                 safe=True)
sections.enum("eval", "real_split", "test", ["test", "train"], "Image "
              "evaluations: the split whose first N images (N = the "
              "generated samples) are the real set of FID/KID/precision-"
              "recall. PyTorch-StudioGAN's CIFAR-10 FIDs use train with "
              "50,000 samples; Mimicry's too.", owner="run", safe=True)


def section(cfg) -> Dict[str, Any]:
  """The eval section of ``cfg``: ``{every, num_samples, metrics,
  real_split}``."""
  return sections.knobs(cfg, "eval")


def samples_per_evaluation(cfg, kind: str) -> int:
  """Samples per evaluation: ``--eval.num_samples``, or the default of the
  data's kind ("toy" or "image")."""
  n = section(cfg)["num_samples"]
  if n is not None:
    return n
  return TOY_SAMPLES if kind == "toy" else IMAGE_SAMPLES


class Evaluator:
  """Generates ``num_samples`` and computes the dataset's metrics.

  Real-data arrays (features of the first ``num_samples`` images of
  ``--eval.real_split``) are computed once and cached. Generated images are
  quantized to the real images' 256 levels before their features are taken
  (as when samples are saved as PNG and scored, pytorch-fid's way), so the
  two sets differ in content, not in precision.
  Construction checks that the feature network can be loaded and that the
  metrics' knobs suit ``num_samples``, so a missing weight file or an
  impossible setting fails before training starts, not at the first
  evaluation.
  """

  def __init__(self, gan, sampler, num_samples: int, batch: int = 500):
    self.gan = gan
    self.cfg = gan.cfg
    self.sampler = sampler
    self.num_samples = num_samples
    self.batch = batch
    self._real = None
    self.protocol = None
    self.scorers = []
    if gan.dataset.kind != "toy":
      ev = section(self.cfg)
      self.protocol = features_lib.protocol(self.cfg.dataset,
                                            tuple(ev["metrics"]))
      self.scorers = [metrics_lib.build(self.cfg, name)
                      for name in self.protocol.metrics]
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
    any sampling (and, with ``--eval.every``, before training)."""
    for scorer in self.scorers:
      scorer.check(self.num_samples)
    needs = self._needs()
    if metrics_lib.LABELS in needs and self.gan.eval_inputs(
        jax.random.PRNGKey(0), 1)[2] is None:
      name = self._first_needing(metrics_lib.LABELS)
      raise UserError(
          f"--eval.metrics={name} scores samples against their labels; "
          f"--method={self.cfg.method} gives its samples none (a "
          f"conditional G or InfoGAN's categorical code does)")
    if metrics_lib.VALID_PIXELS in needs:
      name = self._first_needing(metrics_lib.VALID_PIXELS)
      try:
        self.gan.dataset.eval_arrays("valid")
      except UserError as e:
        raise UserError(f"the {name} metric needs held-out training images "
                        f"with its settings (--{name}.*): {e}") from None

  def _needs(self):
    return {k for s in self.scorers for k in s.needs}

  def _first_needing(self, key: str) -> str:
    """The name of the first metric that reads array ``key``."""
    return next(s.name for s in self.scorers if key in s.needs)

  def _arrays(self, images):
    needs = self._needs() - {metrics_lib.LABELS, metrics_lib.VALID_PIXELS}
    out = {}
    if needs - {metrics_lib.PIXELS}:  # a feature network's arrays
      out = features_lib.compute(self.protocol.extractor, images,
                                 self.cfg.inception_weights, self.batch)
    if metrics_lib.PIXELS in needs:
      out[metrics_lib.PIXELS] = _pixels(images)
    return out

  def _real_arrays(self):
    if self._real is None:
      split = section(self.cfg)["real_split"]
      images, _ = self.gan.dataset.eval_arrays(split)
      images = images[:self.num_samples].astype(np.float32) / 127.5 - 1.0
      self._real = self._arrays(images)
      if metrics_lib.VALID_PIXELS in self._needs():
        valid, _ = self.gan.dataset.eval_arrays("valid")
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
    for scorer in self.scorers:
      real = self._real_arrays() if scorer.metric.needs_real else None
      out.update({k: float(v) for k, v in scorer(real, fake_arrays).items()})
    return out

  def settings(self) -> Dict[str, Any]:
    """What shaped the numbers: the feature network, the real samples used
    and each metric's knobs as used (KID's subset size: at most the smaller
    sample set)."""
    if self.protocol is None:
      ds = self.gan.dataset
      if ds.modes is None:
        return {}
      # PacGAN's protocol (gan_jax.metrics.toy): nearest mode, measured in
      # standard deviations; high quality within 3.
      return {"features": "samples", "num_modes": len(ds.modes),
              "mode_std": [float(s) for s in np.ravel(ds.std)],
              "high_quality_within_std": 3.0}
    out: Dict[str, Any] = {"features": self.protocol.extractor}
    out["generated"] = "quantized to 8 bits"
    real = None
    if any(s.metric.needs_real for s in self.scorers):
      real = self._real_arrays()
      out["real_split"] = section(self.cfg)["real_split"]
      out["num_real"] = len(next(iter(real.values())))
    for scorer in self.scorers:
      out.update(scorer.settings(real, self.num_samples))
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
  ones (``--inception_weights``, ``--kid.subset_size``, data paths, ...)
  replace the run's values, structural ones must equal them."""
  from gan_jax import sample  # pylint: disable=g-import-not-at-top
  # Every replica of a --num_seeds run: name/seed_S each, and their mean.
  gan, state, step, mesh = sample.load(workdir, step, replica=None,
                                       overrides=overrides)
  n = num_samples or samples_per_evaluation(gan.cfg, gan.dataset.kind)
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
