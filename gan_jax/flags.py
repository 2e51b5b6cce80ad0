"""Every absl flag of gan_jax, defined in this one module.

Flags are grouped by the part of the library that reads them. ``Config`` is an
immutable snapshot of their values: the rest of the library reads a ``Config``
and never ``absl.flags.FLAGS``, so tests build configs without parsing argv.

Each flag is either *structural* (it shapes the model, optimizer, data stream
or update; changing it on resume is refused) or *safe* (logging cadence,
total steps, paths: changing it on resume is allowed).
"""

from __future__ import annotations

import math
import re
import sys
from typing import (Any, Callable, Dict, Iterable, List, NamedTuple, Optional,
                    Set, Tuple)

from absl import flags
from absl.flags import _flagvalues

from gan_jax.errors import UserError, describe_os_error, is_library_file

FLAGS = flags.FLAGS

# name -> whether it may change between a run and its resumption.
SAFE: Dict[str, bool] = {}

# Flags of tools and launchers (sweeps, multi-host setup) that are not part of
# an experiment: kept out of ``Config``, flags.txt and the resume check.
NOT_IN_CONFIG: Set[str] = set()


class Bounds(NamedTuple):
  """The values a numeric flag allows: ``>= 1``, ``> 0``, ``[0, 1)``, ..."""
  text: str
  low: float
  high: float
  low_open: bool
  high_open: bool

  @classmethod
  def parse(cls, text: str) -> "Bounds":
    m = re.fullmatch(r"(>=?)\s*(\S+)", text)
    if m:
      return cls(text, float(m.group(2)), math.inf, m.group(1) == ">", True)
    m = re.fullmatch(r"([\[(])\s*([^,\s]+)\s*,\s*([^\])\s]+)\s*([\])])", text)
    if not m:
      raise ValueError(f"bad bounds {text!r}")
    return cls(text, float(m.group(2)), float(m.group(3)), m.group(1) == "(",
               m.group(4) == ")")

  def __contains__(self, value) -> bool:
    above = value > self.low if self.low_open else value >= self.low
    below = value < self.high if self.high_open else value <= self.high
    return above and below


INT_LIMIT = 2**31 - 1  # integer flags without bounds of their own
# JAX keys keep 32 bits of a seed (2**32 trained seed 0's run); negative
# seeds, accepted before the bound, stay valid for the runs they trained.
SEED_BOUNDS = "[-2147483648, 4294967295]"

# Numeric flag -> the values it allows (checked when flags are parsed and
# when a GAN is built from a Config; float flags must also be finite).
BOUNDS: Dict[str, Bounds] = {}


def out_of_bounds(name: str, value: Any) -> Optional[str]:
  """Why ``value`` is not allowed for numeric flag ``name``, or None."""
  if value is None or isinstance(value, bool):
    return None
  if isinstance(value, float) and not math.isfinite(value):
    return "must be a finite number"
  bounds = BOUNDS.get(name)
  bounded = bounds is not None and math.isfinite(bounds.high) and (
      math.isfinite(bounds.low))
  if (isinstance(value, int) and not bounded
      and not -INT_LIMIT - 1 <= value <= INT_LIMIT):
    # Steps, counts and sizes are int32 in compiled code (a step counter
    # past 2**31 - 1 would wrap; larger values overflowed in a traceback).
    return f"must be at most {INT_LIMIT} in magnitude"
  if bounds is not None and value not in bounds:
    return (f"must be {bounds.text}" if bounds.text[0] in "<>"
            else f"must be in {bounds.text}")
  return None


def check_bounds(values) -> None:
  """UserError for the first numeric value out of its flag's bounds; takes
  a Config or a mapping of flag values."""
  for name, value in values.items():
    why = out_of_bounds(name, value)
    if why:
      raise UserError(f"--{name}={value} {why}")


def _define(kind: str, name: str, default: Any, help_: str, *, safe=False,
            in_config=True, bounds: Optional[str] = None,
            validator: Optional[Callable[[Any], Optional[str]]] = None,
            **kwargs):
  if name in SAFE or name in NOT_IN_CONFIG:
    caller = sys._getframe(2).f_code.co_filename  # pylint: disable=protected-access
    if not is_library_file(caller):  # a user module's flag: no silent clash
      raise ValueError(f"flag --{name} is already defined; give yours "
                       f"another name")
    return
  if bounds is not None:
    BOUNDS[name] = Bounds.parse(bounds)
    help_ = f"{help_} Allowed: {bounds}."
  define = getattr(flags, f"DEFINE_{kind}")
  if kind == "enum":
    define(name, default, kwargs.pop("enum_values"), help_, **kwargs)
  else:
    define(name, default, help_, **kwargs)
  if kind in ("integer", "float"):
    def check(value, name=name):
      why = out_of_bounds(name, value)
      if why:
        raise flags.ValidationError(why)
      return True
    flags.register_validator(name, check)
  if validator is not None:
    def run_validator(value, validator=validator):
      why = validator(value)
      if why:
        raise flags.ValidationError(why)
      return True
    flags.register_validator(name, run_validator)
  if in_config:
    SAFE[name] = safe
  else:
    NOT_IN_CONFIG.add(name)


def string(name, default, help_, *, safe=False, **kw):
  _define("string", name, default, help_, safe=safe, **kw)


def integer(name, default, help_, *, safe=False, **kw):
  """An integer flag; ``bounds=">= 1"`` (or ``"[0, 10]"``, ...) limits it."""
  _define("integer", name, default, help_, safe=safe, **kw)


def float_(name, default, help_, *, safe=False, **kw):
  """A finite float flag; ``bounds="> 0"`` (or ``"[0, 1)"``, ...) limits it."""
  _define("float", name, default, help_, safe=safe, **kw)


def boolean(name, default, help_, *, safe=False, **kw):
  _define("bool", name, default, help_, safe=safe, **kw)


def enum(name, default, values, help_, *, safe=False, **kw):
  _define("enum", name, default, help_, safe=safe, enum_values=values, **kw)


def strings(name, default, help_, *, safe=False, **kw):
  _define("list", name, default, help_, safe=safe, **kw)


def multi_strings(name, default, help_, *, safe=False, **kw):
  """A repeatable string flag (``--name=a --name=b``; no comma splitting)."""
  _define("multi_string", name, default, help_, safe=safe, **kw)


def not_a_url(value: Optional[str]) -> Optional[str]:
  """Why a directory flag's value is not usable (a URL), or None: gan_jax
  writes its directories with ordinary file operations (and locks with
  flock), so ``gs://bucket/run`` would become a local ``gs:`` folder."""
  if value and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", value):
    return ("must be a local or mounted directory, not a URL (mount the "
            "bucket, e.g. with gcsfuse, and pass the mount's path)")
  return None


def _open_flagfile(file, mode="r", *args, **kwargs):
  """absl's ``open`` for flagfiles: UTF-8, and a leading byte-order mark
  (Windows editors save one) is skipped instead of becoming an
  "unexpected argument" the user cannot see."""
  if "b" not in mode and "r" in mode and not args and "encoding" not in kwargs:
    kwargs["encoding"] = "utf-8-sig"
  return open(file, mode, *args, **kwargs)  # pylint: disable=unspecified-encoding


# absl reads flagfiles with the built-in open() of its _flagvalues module.
_flagvalues.open = _open_flagfile

# ---------------------------------------------------------------- run / loop
string("workdir", None, "Run directory: flags.txt, metrics.jsonl, "
       "TensorBoard events, images and checkpoints. Resumes if it holds "
       "checkpoints.", safe=True, validator=not_a_url)
strings("extra_modules", [], "Python modules imported before the other "
        "flags are parsed, so they can register losses, models, datasets, "
        "metrics and define flags of their own (gan_jax.flags.float_, ...; "
        "docs/extending.md). They should define and register, not compute: "
        "multi-process runs start jax.distributed after them.",
        safe=True)
boolean("traceback", False, "An exception raised in your own code (an "
        "--extra_modules module or what it registered) ends in one line "
        "naming your file and line; with --traceback, in the whole Python "
        "traceback instead.", in_config=False)
integer("seed", 0, "Seed of the run: initialization, noise, data order. "
        "32 bits: JAX's keys keep no more, so larger seeds would repeat "
        "smaller ones (seed + --num_seeds - 1 too).", bounds=SEED_BOUNDS)
integer("num_steps", 2000, "Number of training steps (one step = d_steps "
        "discriminator updates + one generator update).", safe=True,
        bounds=">= 0")
integer("batch_size", 100, "Global batch size (samples per D/G update, all "
        "devices together). Must divide by the number of devices.",
        bounds=">= 1")
integer("d_steps", 1, "Discriminator updates per generator update (k in "
        "Algorithm 1 of Goodfellow et al. 2014). At most 100: the papers use "
        "1 to 5 (WGAN's 100 warm-up updates are the most), and each call "
        "reads d_steps batches.", bounds="[1, 100]")
integer("steps_per_loop", 1, "Training steps fused into one compiled call "
        "with lax.scan (fewer host round trips), at most: a call also ends "
        "at every log, evaluation and checkpoint step.",
        safe=True, bounds=">= 1")
integer("log_every", 500, "Log metrics (metrics.jsonl, TensorBoard, "
        "console) and write sample images every N steps.", safe=True,
        bounds=">= 1")
integer("num_devices", 0, "Local devices to run data-parallel on; 0 = all.",
        safe=True, bounds=">= 0")
boolean("progress", True, "On a terminal (stderr a TTY), a progress bar "
        "with step, steps/s, ETA and the losses; a log file gets the plain "
        "lines of each log step only.", safe=True)
enum("compute_dtype", "float32", ["float32", "bfloat16"], "Dtype of "
     "activations; parameters and optimizer states stay float32.")

# ------------------------------------------------------------------- data
string("dataset", "ring", "Dataset name: toy sets (ring, grid, ...) sampled "
       "on device, or image datasets read through tensorflow-datasets.")

# ----------------------------------------------------------------- models
string("generator", "pacgan_mlp", "Generator architecture (registry name, "
       "gan_jax.models); its knobs are the --g.<key> flags.")
string("discriminator", "pacgan_maxout", "Discriminator architecture "
       "(registry name); its knobs are the --d.<key> flags.")
integer("z_dim", 2, "Dimension of the generator's noise.", bounds=">= 1")
enum("z_dist", "normal", ["normal", "uniform"], "Noise distribution: N(0, I) "
     "or U(-1, 1).")
boolean("conditional", False, "Condition G and D on the dataset's labels "
        "(conditional GAN, Mirza & Osindero 2014).")
boolean("cross_replica_bn", False, "BatchNorm statistics over the global "
        "batch (all devices) instead of each device's shard.")

# ------------------------------------------------------------------ method
string("method", "gan", "GAN method (registry name, gan_jax.methods): gan "
       "(G against D with --loss and --penalties), madgan, unrolled, "
       "infogan, acgan, or one an --extra_modules module registers. Its "
       "knobs are the --<method>.<key> flags of its section.")

# ------------------------------------------------------- losses / penalties
string("loss", "ns", "GAN loss (registry name, gan_jax.losses): minimax, ns "
       "(non-saturating), lsgan, wgan, hinge, rasgan, ralsgan, rahinge; its "
       "knobs are the --loss.<key> flags.")

# ------------------------------------------------------------- optimizers
string("g_optimizer", "adam", "Generator optimizer (registry name, "
       "gan_jax.optim: adam, rmsprop, sgd); its knobs are the "
       "--g_optimizer.<key> flags (lr, b1, b2, ...).")
string("d_optimizer", "adam", "Discriminator optimizer (registry name); "
       "its knobs are the --d_optimizer.<key> flags.")
string("lr_schedule", "constant", "Learning-rate schedule of both "
       "optimizers (registry name, gan_jax.optim): constant, linear and "
       "cosine (decay to 0 over --num_steps), exponential (divides the rate "
       "by --lr_schedule.decay_factor after every update, down to "
       "--lr_schedule.lr_min: pylearn2's ExponentialDecay, Goodfellow et "
       "al. 2014's code).")

# ---------------------------------------------------- checkpoints (issue 6)
integer("checkpoint_every", 1000, "Save a checkpoint every N steps (and at "
        "the end, and on SIGTERM/SIGINT). 0 = only at the end.", safe=True,
        bounds=">= 0")
integer("keep_checkpoints", 3, "How many recent checkpoints to keep (>= 1; "
        "plus the best one with --best_metric).", safe=True, bounds=">= 1")
string("best_metric", None, "Also keep the checkpoint with the best value "
       "of this logged metric (a key of metrics.jsonl, e.g. reverse_kl or "
       "fid); only checkpoints saved at a log step are ranked.", safe=True)
enum("best_mode", "min", ["min", "max"], "Whether --best_metric is best "
     "when smallest or largest.", safe=True)
enum("nan_policy", "stop", ["stop", "warn"], "When a training metric is "
     "NaN/Inf: stop with an error naming the metric and step (the last good "
     "checkpoint is kept), or warn and go on. Non-finite states are never "
     "saved.", safe=True)

# ----------------------------------------------- sample CLI (issue 6)
# Read by gan_jax.sample only (which also reads --workdir, --out, --seed);
# the model comes from the checkpoint's saved config, not from flags.
integer("num", 64, "Sample: number of samples (with --interpolate: number "
        "of latent pairs).", in_config=False, bounds=">= 1")
integer("step", None, "Sample: checkpoint step (default: the newest "
        "readable).", in_config=False, bounds=">= 0")
strings("labels", [], "Sample: class labels to condition on (conditional "
        "models), cycled to --num; default: random labels.",
        in_config=False)
boolean("interpolate", False, "Sample: write latent interpolation strips, "
        "linear and spherical, between --num random pairs of z.",
        in_config=False)
integer("interpolate_steps", 8, "Sample: points per interpolation strip.",
        in_config=False, bounds=">= 2")
integer("replica", 0, "Sample: which replica of a --num_seeds run.",
        in_config=False, bounds=">= 0")

# ------------------------------------------------------ images (issue 3)
string("tfds_data_dir", None, "tensorflow-datasets data dir holding prepared "
       "datasets (default: tfds' own, ~/tensorflow_datasets or "
       "$TFDS_DATA_DIR).", safe=True)
string("tfds_manual_dir", None, "Folder with the original files to prepare "
       "a dataset from offline (MNIST family: the four official "
       "*-idx?-ubyte.gz files). Default for mnist/fashion_mnist: "
       "<repo>/../shared/data/<dataset> when it exists.", safe=True)
integer("interp_pairs", 4, "Image runs: latent interpolation strips written "
        "at every log interval (samples/interp_step_N.png, TensorBoard), one "
        "linear and one spherical row for each of N fixed noise pairs; 0 = "
        "none.", safe=True, bounds=">= 0")
integer("interp_points", 10, "Image runs: points per interpolation strip, "
        "endpoints included.", safe=True, bounds=">= 2")

# ---------------------------------------------- losses/penalties (issue 4)
strings("penalties", [], "Regularizers (registry names, gan_jax.penalties), "
        "e.g. gp or r1 on D's side, pl on G's; composable: gp,r1. Each has "
        "its section: its weight (--gp.weight, --r1.gamma, --pl.weight) and "
        "its lazy interval (--r1.every=16).")
float_("d_clip", 0.0, "WGAN weight clipping: clip every critic parameter "
       "to [-c, c] after each update; 0 disables.", bounds=">= 0")

# --------------------------------------------------- evaluation (issue 5)
# The evaluation's own section, --eval.*, is gan_jax.evaluate's; each
# metric's knobs are its section (gan_jax.metrics).
integer("num_samples", None, "Evaluate CLI: generated samples (default: "
        "the run's --eval.num_samples).", in_config=False, bounds=">= 2")
string("inception_weights", None, "Path to pytorch-fid's "
       "pt_inception-2015-12-05-6726825d.pth (Inception-v3 FID weights, read "
       "without PyTorch); needed for Inception FID/KID/IS/PR.", safe=True)
string("out", None, "Output file of a tool, e.g. the classifier weights of "
       "gan_jax.features.train_classifier.", safe=True)
integer("classifier_epochs", 5, "Epochs of gan_jax.features.train_classifier"
        ".", safe=True, bounds=">= 1")
integer("classifier_batch_size", 128, "Batch size of "
        "gan_jax.features.train_classifier.", safe=True, bounds=">= 1")
float_("classifier_lr", 2e-3, "Peak learning rate (one-cycle cosine) of "
       "gan_jax.features.train_classifier.", safe=True, bounds="> 0")

# ----------------------------------------------- mode collapse (issue 7)
integer("pack", 1, "PacGAN packing (Lin et al. 2018): D judges m samples "
        "concatenated (features/channels). 1 = no packing. The batch size "
        "counts samples, so it must divide by pack.", bounds=">= 1")
integer("num_seeds", 1, "Train N independent replicas (seeds seed .. "
        "seed+N-1: own initialization, noise and data) in one compiled "
        "program (jax.vmap over a leading replica axis of the train state).",
        bounds=">= 1")
enum("seed_batching", "vmap", ["vmap", "map"], "How --num_seeds replicas "
     "share the compiled step: vmap = one step batched over the replicas "
     "(the PacGAN MLPs train 1.5x faster than as separate runs on CPU); map "
     "= lax.map, the replicas one after another inside the step (for "
     "convolutional models on CPU, where XLA's batched convolutions are "
     "slower than running replicas in turn: DCGAN 0.98x of separate runs "
     "against 0.77x with vmap). Same state layout, so a resumed run may "
     "change it.", safe=True)

# -------------------------------------------------- scale-out (issue 8)
# How this process joins a multi-process job; not part of the experiment.
enum("distributed", "auto", ["auto", "on", "off"], "Multi-process training "
     "with jax.distributed: auto = initialize when a SLURM (srun, >1 task), "
     "Open MPI (>1 rank) or multi-host TPU environment, or "
     "--coordinator_address, is present; on = always call "
     "jax.distributed.initialize (JAX detects the cluster); off = never.",
     in_config=False)
string("coordinator_address", None, "host:port of process 0's coordinator "
       "for jax.distributed (explicit multi-process launch, e.g. "
       "10.0.0.1:1234 or 127.0.0.1:PORT for several processes on one "
       "machine).", in_config=False)
integer("num_processes", 0, "Number of processes of an explicit "
        "multi-process launch (with --coordinator_address).",
        in_config=False, bounds=">= 0")
integer("process_id", -1, "This process's index, 0 .. num_processes-1, in "
        "an explicit multi-process launch. Process 0 writes logs, images "
        "and TensorBoard.", in_config=False)
integer("distributed_timeout", 300, "Seconds a process waits for the "
        "others to join the job (jax.distributed's initialization_timeout); "
        "with --coordinator_address, processes other than 0 first wait this "
        "long for the coordinator to accept connections and end in one line "
        "if it never does (JAX itself aborts the process).",
        in_config=False, bounds="[1, 86400]")

# ------------------------------------------------------- sweeps (issue 8)
# Read by gan_jax.sweep only; each run gets a plain gan_jax.main command line.
string("sweep_base", None, "Sweep: the experiment flagfile every run starts "
       "from, e.g. experiments/quickstart.flags.", in_config=False)
multi_strings("sweep_grid", [], "Sweep: a grid axis FLAG:V1,V2,... "
              "(repeatable; the runs are the product of all axes).",
              in_config=False)
multi_strings("sweep_random", [], "Sweep: a random axis "
              "FLAG:DIST:LO:HI with DIST uniform, loguniform or int "
              "(inclusive), or FLAG:choice:A:B:...; --sweep_num_random "
              "points are drawn jointly over all random axes.",
              in_config=False)
integer("sweep_num_random", 4, "Sweep: points drawn for the random axes.",
        in_config=False, bounds=">= 1")
integer("sweep_seed", 0, "Sweep: seed of the random axes' draws (not the "
        "runs' --seed).", in_config=False, bounds=SEED_BOUNDS)
strings("sweep_seeds", [], "Sweep: values of --seed, an axis averaged over "
        "in the results table (mean +- standard error), e.g. 0,1,2 or 0-9.",
        in_config=False)
multi_strings("sweep_set", [], "Sweep: a fixed override FLAG=VALUE for "
              "every run, not part of the run names (repeatable).",
              in_config=False)
string("sweep_dir", None, "Sweep: directory of the run workdirs, "
       "results.csv, results.md and the plot.", in_config=False,
       validator=not_a_url)
integer("sweep_workers", 1, "Sweep: runs trained in parallel (local "
        "subprocesses).", in_config=False, bounds=">= 1")
boolean("sweep_print_only", False, "Sweep: print one gan_jax.main command "
        "per run (for job arrays) and run nothing.", in_config=False)
string("sweep_metric", "modes", "Sweep: metric (a key of metrics.jsonl) "
       "plotted and listed first in results.md.", in_config=False)
string("sweep_plot_axis", None, "Sweep: axis on the plot's x axis "
       "(default: the first axis with several values).", in_config=False)
boolean("sweep_vectorize_seeds", False, "Sweep: train the seeds of each "
        "setting as one program with --num_seeds instead of one process per "
        "seed (the results are split back into one row per seed).",
        in_config=False)


class Config:
  """An immutable, hashable snapshot of flag values (attribute access)."""

  __slots__ = ("_values",)

  def __init__(self, values: Dict[str, Any]):
    frozen = {k: tuple(v) if isinstance(v, list) else v
              for k, v in values.items()}
    object.__setattr__(self, "_values", frozen)

  def __getattr__(self, name):
    try:
      return self._values[name]
    except KeyError:
      raise AttributeError(f"Config has no field {name!r}") from None

  def __setattr__(self, name, value):
    raise AttributeError("Config is immutable; use .replace()")

  def replace(self, **updates) -> "Config":
    unknown = set(updates) - set(self._values)
    if unknown:
      raise UserError(f"unknown config field(s): {', '.join(sorted(unknown))}")
    return Config({**self._values, **updates})

  def to_dict(self) -> Dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in self._values.items()}

  def items(self) -> Iterable[Tuple[str, Any]]:
    return self._values.items()

  def __eq__(self, other):
    return isinstance(other, Config) and self._values == other._values

  def __hash__(self):
    return hash(tuple(sorted(self._values.items())))

  def __repr__(self):
    inner = ", ".join(f"{k}={v!r}" for k, v in sorted(self._values.items()))
    return f"Config({inner})"


def defaults(**overrides) -> Config:
  """The config of the flag defaults, with overrides (for tests and APIs)."""
  values = {name: FLAGS[name].default for name in SAFE}
  return Config(values).replace(**overrides)


def config_flags_given(tool_flags: Iterable[str] = ()) -> Dict[str, Any]:
  """The config's flags set on this command line, but ``tool_flags`` (those
  a tool reads for itself, like gan_jax.sample's --seed of its noise).
  Tools that load a saved run (gan_jax.evaluate, gan_jax.sample) apply the
  safe ones over its config (metric settings, data and weight paths, ...)
  and refuse a structural one that differs from the run's."""
  return {name: FLAGS[name].value for name in SAFE
          if FLAGS[name].present and name not in tool_flags}


def from_flags() -> Config:
  """The config of the parsed command-line flags."""
  return Config({name: FLAGS[name].value for name in SAFE})


def serialize(config: Config) -> List[str]:
  """Flag lines that replay ``config`` (``--flagfile`` format)."""
  lines = []
  for name, value in sorted(config.items()):
    if value is None:
      continue
    if isinstance(value, bool):
      lines.append(f"--{name}" if value else f"--no{name}")
    elif isinstance(value, tuple):
      lines.append(f"--{name}={','.join(str(v) for v in value)}")
    else:
      lines.append(f"--{name}={value}")
  return lines


# What changed in each config schema (SCHEMA_VERSION):
#   0  runs saved before versions were recorded (no version in them);
#   1  the version recorded; --unit_pixels removed (the Goodfellow/cGAN
#      networks always compute the authors' functions of pixels in [0, 1])
#      and the rules that gave older runs the values flags added since had
#      before them (PREDATED: --mlp_init=lecun_normal, --nounit_pixels);
#      the test-only --debug_* flags removed (tests/faults.py);
#   2  methods (--method, gan_jax.methods): MAD-GAN is --method=madgan (the
#      madgan loss is gone), unrolled GAN --method=unrolled; the train state
#      holds networks by name (params, net_state, opt_state, ema, extra);
#   3  regularizers and methods are configured by their sections:
#      --gp_weight, --r1_gamma and the shared --penalty_every became
#      --gp.weight, --r1.gamma and each one's --<name>.every; MAD-GAN's
#      --num_generators is --madgan.generators, unrolled GAN's
#      --unroll_steps --unrolled.steps; the architectures' flags became
#      the g and d sections (--g_channels is --g.channels, --maxout_pieces
#      --d.pieces, --minibatch_disc --d.minibatch, --d_global_pool
#      --d.pool, --mlp_init --g.init and --d.init, ...), unset meaning the
#      architecture's own default; the losses' flags the loss section
#      (--label_smoothing is --loss.smoothing, --lsgan_a/b/c --loss.a/b/c);
#      the optimizers' the g_optimizer and d_optimizer sections (--g_lr is
#      --g_optimizer.lr, --g_beta1/2 --g_optimizer.b1/b2, SGD's momentum,
#      once --g_beta1, --g_optimizer.momentum, the momentum ramp
#      --g_optimizer.ramp_start/ramp_end/final_momentum), the schedule's
#      the lr_schedule section (--lr_decay_factor is
#      --lr_schedule.decay_factor, --lr_min --lr_schedule.lr_min); the
#      dataset's the data section (--image_size is --data.image_size,
#      --train_examples --data.train_examples; unset, not 0, is none);
#   4  the evaluation, the metrics, the EMA and the profiler are configured
#      by their sections: --eval_every, --eval_metrics, --eval_real_split
#      became --eval.every, --eval.metrics, --eval.real_split, and
#      --eval_samples (toy) and --eval_num_samples (images) the one
#      --eval.num_samples (unset: 2,500 for toy sets, 10,000 for images);
#      --kid_subsets/--kid_subset_size are --kid.subsets/subset_size, --pr_k
#      --precision_recall.k, --is_splits --inception_score.splits,
#      --parzen_sigma/--parzen_valid_examples --parzen.sigma/valid_examples;
#      --ema_decay/--ema_start --ema.decay/start, --profile_steps/
#      --profile_start --profile.steps/start.
SCHEMA_VERSION = 4
"""The config schema: what a saved run's flag values mean. Bump it when a
change makes saved runs mean something else (a flag removed, renamed, or
whose default or meaning changes) and say what changed above: a saved run of
another schema is refused (``check_schema``), not translated. A new flag
whose default does what the code did before it needs no bump (a saved run
without it reads the default)."""

# The version's key in a checkpoint's config JSON (``config_record``).
SCHEMA_KEY = "config_schema"
# flags.txt's first line. A comment, not a flag: replaying flags.txt
# (``--flagfile``) starts a new run, always of the current schema, so a flag
# would be a setting that means nothing; absl skips the comment, and the
# file stays the flagfile that replays the run.
SCHEMA_LINE = "# gan_jax config schema "  # then the version


def config_record(config: Config) -> Dict[str, Any]:
  """The JSON of ``config`` a checkpoint keeps: its flags and the schema."""
  return {**config.to_dict(), SCHEMA_KEY: SCHEMA_VERSION}


def flagfile_lines(config: Config) -> List[str]:
  """flags.txt's lines: the schema line, then ``serialize(config)``."""
  return [f"{SCHEMA_LINE}{SCHEMA_VERSION}"] + serialize(config)


def flagfile_schema(path: str) -> Optional[int]:
  """The schema a flags.txt records in its first line (None: none)."""
  try:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
      first = f.readline()
  except OSError as e:
    raise UserError(describe_os_error(e)) from e
  version = first.strip()[len(SCHEMA_LINE):]
  if first.startswith(SCHEMA_LINE) and version.isdecimal():
    return int(version)
  return None


def check_schema(version: Optional[int], run: str,
                 remedy: str = "train it again, or use the gan_jax commit "
                 "that wrote it") -> None:
  """Refuses, in one line, a saved run (``run``: its workdir) written by
  another config schema than this code's (``version`` None: none recorded).
  Every reader of a saved run checks it: resume, gan_jax.sample and
  gan_jax.evaluate (``saved_config``), the sweep (its runs' flags.txt)."""
  if version == SCHEMA_VERSION:
    return
  wrote = ("schema 0 (before versions were recorded)" if version is None
           else f"schema {version}")
  raise UserError(f"{run} was written by gan_jax config {wrote}; this "
                  f"gan_jax reads schema {SCHEMA_VERSION}: {remedy}")


def saved_config(saved: Dict[str, Any], run: str) -> Config:
  """The Config of a checkpoint's config JSON (``config_record``) of run
  ``run``, refused if of another schema (``check_schema``). Keys that are
  not flags are ignored; a flag it lacks (added since) takes its default."""
  check_schema(saved.get(SCHEMA_KEY), run)
  return defaults().replace(**{k: v for k, v in saved.items() if k in SAFE})


def describe_differences(old: Config, new: Config,
                         names: Iterable[str]) -> str:
  """``--name (was OLD, now NEW), ...`` for flags that differ (an empty
  list flag shows as none; an unset section key, whose component's own
  default applies, as default)."""
  def show(value):
    if isinstance(value, (list, tuple)):
      return ",".join(map(str, value)) or "none"
    return "default" if value is None else value
  return ", ".join(f"--{n} (was {show(getattr(old, n))}, now "
                   f"{show(getattr(new, n))})" for n in names)


def structural_differences(old: Config, new: Config) -> List[str]:
  """Names of structural flags whose values differ between two configs.

  ``num_steps`` is safe only with a constant learning rate: a decaying
  schedule is laid out over num_steps, so changing it changes the update.
  """
  diffs = []
  # (The exponential schedule is per update, whatever num_steps is.)
  decaying = bool({"linear", "cosine"} & {old.lr_schedule, new.lr_schedule})
  for name, value in new.items():
    if SAFE.get(name, False) and not (name == "num_steps" and decaying):
      continue
    if getattr(old, name) != value:
      diffs.append(name)
  return sorted(diffs)


def check_new_run(cfg):
  """Checks for a run that starts from scratch only (a run saved before a
  check existed still resumes, samples and evaluates as it was trained)."""
  last_seed = cfg.seed + cfg.num_seeds - 1
  if cfg.num_seeds > 1 and last_seed > 2**32 - 1:
    raise UserError(f"--seed={cfg.seed} with --num_seeds={cfg.num_seeds} "
                    f"reaches seed {last_seed}: seeds have 32 bits (at most "
                    f"{2**32 - 1}; a larger one repeats a smaller one)")
  repeated = sorted({p for p in cfg.penalties if cfg.penalties.count(p) > 1})
  if repeated:
    raise UserError(f"--penalties={','.join(cfg.penalties)} names "
                    f"{', '.join(repeated)} more than once (it would count "
                    f"twice)")


def check_config(cfg, n_devices: int, multiple: int = 1,
                 why: str = ""):
  """Flag combinations that cannot work, as one-line errors. ``multiple``:
  what each device's batch must divide by (the method's
  ``batch_multiple``, ``why`` naming it)."""
  unit = n_devices * multiple
  if cfg.batch_size <= 0 or cfg.batch_size % unit:
    what = f"{n_devices} devices" + (f" x {why}" if multiple > 1 else "")
    raise UserError(f"--batch_size={cfg.batch_size} must be a positive "
                    f"multiple of {unit} ({what})")
  # Names are checked whatever the data (toy data ignores them with a
  # warning, but a typo should not wait for the next image run).
  from gan_jax.metrics import METRICS  # pylint: disable=g-import-not-at-top
  for name in getattr(cfg, "eval.metrics", ()):
    METRICS.get(name)


# Flags read by some command-line tools only (gan_jax.<tool>): the others
# refuse them when given (on the command line or in a flagfile) instead of
# ignoring them, e.g. a sweep file passed to gan_jax.main as a flagfile,
# which trained a default run.
# (Flags of the run's config, which flags.txt lists, are accepted by all.)
_SAMPLE = ("interpolate", "interpolate_steps", "labels", "num", "replica")
TOOL_FLAGS: Dict[str, Tuple[str, ...]] = {
    **{name: ("sample",) for name in _SAMPLE},
    "step": ("sample", "evaluate"),
    "num_samples": ("evaluate",),
}


def check_tool_flags(tool: str) -> None:
  """UserError for the first given flag that ``gan_jax.<tool>`` does not
  read (``TOOL_FLAGS``, and the sweep's ``--sweep_*``)."""
  for name in FLAGS:
    owners = TOOL_FLAGS.get(name) or (
        ("sweep",) if name.startswith("sweep_") else None)
    if owners is None or tool in owners or not FLAGS[name].present:
      continue
    raise UserError(
        f"--{name} is a flag of "
        + " and ".join(f"gan_jax.{o}" for o in owners)
        + f", not of gan_jax.{tool}"
        + (" (a sweep file goes to python -m gan_jax.sweep)"
           if owners == ("sweep",) else "")
        + "; drop it")
