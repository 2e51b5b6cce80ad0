"""The training loop: the only place with side effects.

Reads top to bottom: workdir and flags record, mesh, input, model and
optimizer, train state (fresh or restored), compiled step, evaluators, loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import inspect
import os
import signal
import socket
import sys
import time
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from gan_jax import checkpoint as ckpt_lib
from gan_jax import distributed
from gan_jax import errors
from gan_jax import flags as flags_lib
from gan_jax import gan as gan_lib
from gan_jax import interpolate as interp_lib
from gan_jax import plots
from gan_jax import state as state_lib
from gan_jax import steps as steps_lib
from gan_jax import writers
from gan_jax.errors import UserError
from gan_jax.metrics import toy as toy_metrics

# Fixed keys for what must not change over a run: the sample grid's noise and
# the evaluation samples.
_GRID_KEY = 1_000_001
_EVAL_KEY = 1_000_002  # toy metrics (toy_eval_samples)
_INTERP_KEY = 1_000_003


def make_mesh(cfg) -> jax.sharding.Mesh:
  """A 1-D ``data`` mesh over all devices (every process's, when several)."""
  if jax.process_count() > 1:
    devices = jax.devices()
  else:
    devices = jax.local_devices()
    if cfg.num_devices:
      if cfg.num_devices > len(devices):
        raise UserError(f"--num_devices={cfg.num_devices} but only "
                        f"{len(devices)} devices are available")
      devices = devices[:cfg.num_devices]
  return jax.make_mesh((len(devices),), (steps_lib.AXIS,), devices=devices)


# The config checks live with the flags (the benchmark makes them without
# importing the training loop and its orbax); the names stay here too.
check_new_run = flags_lib.check_new_run
check_config = flags_lib.check_config


class _Preemption:
  """Turns SIGTERM/SIGINT into a flag the loop polls between calls."""

  def __init__(self):
    self.signal: Optional[int] = None
    self._first = 0.0
    self._previous = {}

  def __enter__(self):
    if errors.take_interrupt():  # a Ctrl-C Python swallowed at startup
      self.signal, self._first = signal.SIGINT, time.monotonic()
    for sig in (signal.SIGTERM, signal.SIGINT):
      if signal.getsignal(sig) is signal.SIG_IGN:
        continue  # started ignoring it (``cmd &`` in a script): keep to that
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  # A repeat of the signal this soon is the same request delivered twice
  # (to the process group and again by a sweep passing it on, or by a
  # scheduler signalling every process of a job): ignored.
  REPEAT_S = 3.0

  def _handle(self, signum, frame):
    del frame
    now = time.monotonic()
    if self.signal == signum:
      if now - self._first < self.REPEAT_S:
        return
      # A second signal of the same kind, later: end the process at once.
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    self.signal, self._first = signum, now

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class _Profile:
  """``--profile_steps``: a jax.profiler trace of whole compiled calls into
  WORKDIR/profile, from ``--profile_start`` (default: after this start's
  first call, so its compilation stays out)."""

  def __init__(self, cfg, workdir: str):
    self.count, self.start = cfg.profile_steps, cfg.profile_start
    self.directory = os.path.join(workdir, "profile")
    if jax.process_count() > 1:  # one trace per process
      self.directory = os.path.join(self.directory,
                                    f"process_{jax.process_index()}")
    self.first: Optional[int] = None  # this process's first step
    self.began: Optional[int] = None
    self.last = 0
    self.done = not self.count

  def before_call(self, step: int):
    if self.first is None:
      self.first = step
    if self.done or self.began is not None:
      return
    if self.start >= 0 and step >= self.start + self.count:
      self.done = True  # a resumed run already past the traced steps
    elif (step >= self.start) if self.start >= 0 else step > self.first:
      jax.profiler.start_trace(self.directory)
      self.began = self.last = step

  def after_call(self, step: int, state):
    if self.began is not None:
      self.last = step
      if step >= self.began + self.count:
        jax.block_until_ready(state)
        self.close()

  def close(self):
    """Stops an open trace (at the end of its steps, or when the loop ends
    first)."""
    if self.began is not None:
      jax.profiler.stop_trace()
      logging.info("wrote a profile of steps %d-%d to %s", self.began + 1,
                   self.last, self.directory)
    self.began, self.done = None, True


def call_length(step: int, total: int, steps_per_loop: int,
                cadences) -> int:
  """Steps fused into the call that starts at ``step``: at most
  ``steps_per_loop``, ending at the next multiple of it and at the next
  multiple of each cadence (log, checkpoint, evaluation steps; 0 = none)
  and at ``total``. The calls are a function of the step alone, so a
  resumed run runs the same compiled programs on the same steps as an
  uninterrupted one (bitwise-equal results); a cadence that is not a
  multiple of ``steps_per_loop`` costs a program per distinct length."""
  n = min(steps_per_loop - step % steps_per_loop, total - step)
  for every in cadences:
    if every:
      n = min(n, every - step % every)
  return n


class _ProgressBar:
  """tqdm's bar over the steps that have finished, not merely been
  dispatched: JAX runs calls asynchronously, so counting a call when it is
  queued showed 100/100 while the last calls still ran for minutes. The bar
  waits for the previous call when the next one is queued (one call stays
  in flight, so the device is never idle for the host)."""

  def __init__(self, total: int, initial: int):
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    self._bar = tqdm(total=total, initial=initial, unit="step",
                     dynamic_ncols=True, mininterval=1.0)
    self._pending = None  # (an output of the call in flight, its steps)

  def queued(self, output, n: int):
    self.finish()
    self._pending = (output, n)

  def finish(self):
    """Counts the call in flight once it has finished."""
    if self._pending is not None:
      output, n = self._pending
      self._pending = None
      jax.block_until_ready(output)
      self._bar.update(n)

  def write(self, line: str, scalars=None):
    """``line`` above the bar; the bar itself shows the losses."""
    self.finish()
    self._bar.write(line)
    if scalars:
      self._bar.set_postfix({k: f"{float(scalars[k]):.4g}"
                             for k in ("d_loss", "g_loss") if k in scalars})

  def close(self):
    self._pending = None  # (a failed call's output must not be waited on)
    self._bar.close()


def _size(nbytes: float) -> str:
  """``nbytes`` for people: 512 B, 3.2 MB, 6.4 TB."""
  unit = "B"
  for unit in ("B", "KB", "MB", "GB", "TB"):
    if nbytes < 1000 or unit == "TB":
      break
    nbytes /= 1000
  return f"{nbytes:.0f} B" if unit == "B" else f"{nbytes:.1f} {unit}"


def memory_hint(cfg, abstract_state) -> str:
  """What makes this run big, for an out-of-memory error: the train state's
  size and its largest array with the flags whose values are its
  dimensions, and a step's batch (--batch_size, --d_steps, --z_dim)."""
  leaves = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
  total = sum(l.size * l.dtype.itemsize for _, l in leaves)
  parts = []
  if leaves:
    path, big = max(leaves, key=lambda pl: pl[1].size * pl[1].dtype.itemsize)
    # Structural integer flags (the batch size shapes no parameter).
    ints = {k: v for k, v in cfg.to_dict().items()
            if isinstance(v, int) and not isinstance(v, bool) and v > 1
            and not flags_lib.SAFE.get(k, True) and k != "batch_size"}
    named = [f"--{k}={v}" for k, v in sorted(ints.items(), key=lambda kv:
                                            -kv[1]) if v in big.shape]
    parts.append(
        f"the train state takes {_size(total)}, its largest array "
        f"{jax.tree_util.keystr(path, simple=True, separator='/')} of shape "
        f"{tuple(big.shape)} ({_size(big.size * big.dtype.itemsize)})"
        + (f", sized by {', '.join(named)}" if named else ""))
  per_step = cfg.batch_size * (cfg.d_steps + 1) * cfg.z_dim * 4
  parts.append(f"a step's noise takes {_size(per_step)} (--batch_size="
               f"{cfg.batch_size} x (--d_steps={cfg.d_steps} + 1) x "
               f"--z_dim={cfg.z_dim})")
  return "; ".join(parts)


# Named first when several metrics go non-finite in the same step.
_PRIMARY_METRICS = ("d_loss", "g_loss")


@jax.jit
def _track_nonfinite(record, metrics, first_step):
  """Folds a call's stacked metrics into ``(first bad step, bad names mask)``.

  Runs on device after every call (no host sync), so the host learns the
  exact step and metric of the first NaN/Inf at its next log or save point.
  Metrics row i of a call starting at ``first_step`` belongs to step
  ``first_step + i + 1``.
  """
  names = sorted(metrics)
  bad = jnp.stack([~jnp.all(jnp.isfinite(
      jnp.reshape(metrics[k], (metrics[k].shape[0], -1))), axis=1)
                   for k in names], axis=1)
  rows = jnp.any(bad, axis=1)
  new = (record[0] < 0) & jnp.any(rows)
  row = jnp.argmax(rows)
  return (jnp.where(new, first_step + row + 1, record[0]),
          jnp.where(new, bad[row], record[1]))


def _first_nonfinite(record, names):
  """``(step, metric, other metrics)`` of the first NaN/Inf, or None."""
  step, mask = jax.device_get(record)
  if step < 0:
    return None
  bad = [n for n, b in zip(names, np.asarray(mask)) if b]
  culprit = next((n for n in _PRIMARY_METRICS if n in bad), bad[0])
  return int(step), culprit, [n for n in bad if n != culprit]


def check_resume(saved: Dict[str, Any], cfg, workdir: str):
  """Refuses to resume a run of another config schema, or with flags that
  change the model or optimizer."""
  old = flags_lib.saved_config(saved, workdir)
  diffs = flags_lib.structural_differences(old, cfg)
  if diffs:
    listing = flags_lib.describe_differences(old, cfg, diffs)
    raise UserError(f"cannot resume {workdir}: flags that change the model "
                    f"or optimizer differ: {listing}; use the old values or "
                    f"a new --workdir")


class Sampler:
  """Compiled sampling from G for plots and evaluation."""

  def __init__(self, gan, mesh):
    self.gan = gan
    self.mesh = mesh
    self._fn = jax.jit(lambda params, g_state, z, y: gan.generate(
        params, g_state, z, y, train=False)[0])

  def __call__(self, state, z, y=None):
    with jax.set_mesh(self.mesh):
      x = self._fn(state_lib.sampling_params(state), state.g_state, z, y)
    return np.asarray(jax.device_get(x), np.float32)

  def sample(self, state, key, n: int, batch: int = 2500):
    """``n`` samples (and their labels when conditional) from ``key``."""
    gan = self.gan
    out, labels = [], []
    for i in range(0, n, batch):
      k = jax.random.fold_in(key, i)
      m = min(batch, n - i)
      z = gan.sample_z(jax.random.fold_in(k, 0), (m,))
      y = gan.sample_labels(jax.random.fold_in(k, 1), (m,))
      out.append(self(state, z, y))
      if y is not None:
        labels.append(np.asarray(y))
    return np.concatenate(out), (np.concatenate(labels) if labels else None)


def _accepts(fn, name: str) -> bool:
  """Whether ``fn`` takes the keyword argument ``name``."""
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):  # no signature to read: try it
    return True
  return any(p.name == name or p.kind == p.VAR_KEYWORD for p in params)


class HostInput:
  """The loop's image batches, placed on the mesh; ``None`` for toy data.

  Full ``steps_per_loop`` chunks come from the datasets' background
  iterators (``dataset.iterator``), so reading the next chunk overlaps the
  current step; a partial chunk (the first after resuming mid-loop, the last)
  is read in place. Either way a chunk is ``dataset.batches(first, n, ...)``,
  a function of the step alone, so exact resume is unchanged. Close it (or
  use it as a context manager) to stop the reading threads.
  """

  def __init__(self, streams, cfg, sharding, prefetch: int = 2):
    self._streams = list(streams)
    self._cfg = cfg
    self._sharding = sharding
    self._prefetch = prefetch
    self._iters = None
    self._next = None  # the first step of the iterators' next chunk
    # The global batch rows this process's devices hold; passed only with
    # several processes (one process feeds them all).
    rows = None
    if self._streams:  # toy data: no host stream, maybe no sharding
      rows = distributed.process_rows(sharding.mesh.devices, cfg.batch_size)
    self._rows = {} if rows is None else {"rows": rows}
    for ds in self._streams:  # a user's dataset may take neither keyword
      for method in ("batches", "iterator"):
        fn = getattr(ds, method, None)
        if fn is not None and self._rows and not _accepts(fn, "rows"):
          raise UserError(
              f"dataset {cfg.dataset!r}: {method}() takes no rows= "
              f"argument, which multi-process training passes (the batch "
              f"rows of this process's devices; docs/data.md)")

  def _args(self):
    return self._cfg.d_steps, self._cfg.batch_size

  def _read(self, first: int, n: int):
    spl = self._cfg.steps_per_loop
    if n == spl and all(hasattr(ds, "iterator") for ds in self._streams):
      if self._iters is None or first != self._next:
        self.close()
        self._iters = [
            ds.iterator(first, spl, *self._args(), **self._rows,
                        **({"prefetch": self._prefetch}
                           if _accepts(ds.iterator, "prefetch") else {}))
            for ds in self._streams]
      self._next = first + spl
      return [next(it) for it in self._iters]
    return [ds.batches(first, n, *self._args(), **self._rows)
            for ds in self._streams]

  def __call__(self, first: int, n: int):
    """Steps ``[first, first + n)`` as global arrays (steps, [replicas,]
    d_steps, batch, ...)."""
    if not self._streams:
      return None
    parts = self._read(first, n)
    if len(parts) > 1:  # --num_seeds: (steps, replicas, k, B, ...)
      local = {k: np.stack([p[k] for p in parts], 1) for k in parts[0]}
    else:
      local = parts[0]
    return {k: jax.make_array_from_process_local_data(self._sharding, v)
            for k, v in local.items()}

  def close(self):
    for it in self._iters or ():
      it.close()
    self._iters = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def grid_inputs(gan, rng, n: int = 64):
  """The fixed noise of the sample grid (one row per class if conditional)."""
  key = jax.random.fold_in(rng, _GRID_KEY)
  if gan.num_classes:
    rows = min(gan.num_classes, 10)
    cols = max(n // rows, 1)
    z = gan.sample_z(key, (cols,))
    z = jnp.tile(z, (rows, 1))
    y = jnp.repeat(jnp.arange(rows), cols)
    return z, y, rows
  return gan.sample_z(key, (n,)), None, None


def toy_eval_samples(sampler, state, n: int) -> np.ndarray:
  """The samples of a toy run's mode metrics: the same noise at every log
  step, and in ``gan_jax.evaluate`` (which reproduces the logged numbers)."""
  return sampler.sample(state, jax.random.fold_in(state.rng, _EVAL_KEY), n)[0]


def interpolation_inputs(gan, rng, pairs: int, points: int):
  """Fixed noise of the interpolation strips: ``(z, y)`` with rows pair 0
  linear, pair 0 spherical, pair 1 linear, ... of ``points`` each.

  The same pairs (z0, z1) at every log interval, so the strips show how the
  latent space evolves; conditional models keep one label (pair i: class
  i mod classes) along both strips of a pair.
  """
  key = jax.random.fold_in(rng, _INTERP_KEY)
  z0 = gan.sample_z(jax.random.fold_in(key, 0), (pairs,))
  z1 = gan.sample_z(jax.random.fold_in(key, 1), (pairs,))
  linear, spherical = interp_lib.strips(z0, z1, points, gan.z_support)
  z = jnp.stack([linear, spherical], 1).reshape(2 * pairs * points, -1)
  y = None
  if gan.num_classes:
    y = jnp.repeat(jnp.arange(pairs) % gan.num_classes, 2 * points)
  return z, y


def visualize(gan, sampler, state, step, workdir, writer, real_toy=None,
              tag: str = ""):
  """Writes the step's picture; returns toy metrics when they apply.

  ``tag`` (e.g. ``seed_3``) names a replica of a --num_seeds run: its
  pictures go to samples/<tag>/ and the image summary samples/<tag>.
  """
  out_dir = os.path.join(workdir, "samples", tag)
  if writer.enabled:  # only process 0 writes (multi-host)
    with writer.local_writes():
      os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"step_{step:07d}.png")
  image_name = f"samples/{tag}" if tag else "samples"
  ds = gan.dataset
  if ds.kind == "toy":
    samples = toy_eval_samples(sampler, state, gan.cfg.eval_samples)
    scalars = {}
    if ds.modes is not None:
      scalars = toy_metrics.mode_metrics(samples, ds.modes, ds.std)
    title = f"{ds.name} step {step}"
    if scalars:
      title += (f": {scalars['modes']}/{len(ds.modes)} modes, "
                f"{100 * scalars['high_quality']:.1f}% HQ, "
                f"KL {scalars['reverse_kl']:.3f}")
    if writer.enabled:
      with writer.local_writes():
        image = plots.scatter_png(path, samples, real_toy, title, ds.modes)
        writer.write_image(step, image_name, image)
    return scalars
  z, y, rows = grid_inputs(gan, state.rng)
  image = plots.grid(sampler(state, z, y), rows=rows)
  if writer.enabled:
    with writer.local_writes():
      plots.save_png(path, image)
      writer.write_image(step, image_name, image)
  pairs, points = gan.cfg.interp_pairs, gan.cfg.interp_points
  if pairs > 0:
    # Every process samples (one SPMD program over all devices); process 0
    # writes.
    z, y = interpolation_inputs(gan, state.rng, pairs, points)
    image = plots.grid(sampler(state, z, y), rows=2 * pairs)
    if writer.enabled:
      with writer.local_writes():
        plots.save_png(os.path.join(out_dir, f"interp_step_{step:07d}.png"),
                       image)
        writer.write_image(step, f"interpolation/{tag}" if tag
                           else "interpolation", image)
  return {}


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


def visualize_replicas(gan, sampler, state, step, workdir, writer,
                       real_toy=None) -> Dict[str, float]:
  """``visualize`` for each replica of a --num_seeds state."""
  cfg = gan.cfg
  if cfg.num_seeds == 1:
    return visualize(gan, sampler, state, step, workdir, writer, real_toy)
  per = [visualize(gan, sampler, state_lib.replica(state, i), step, workdir,
                   writer, real_toy, tag=f"seed_{cfg.seed + i}")
         for i in range(cfg.num_seeds)]
  return replica_scalars(cfg, per) if per[0] else {}


def evaluate_replicas(evaluator, cfg, state,
                      progress: bool = False) -> Dict[str, float]:
  """The evaluator's metrics (per replica and mean with --num_seeds)."""
  if cfg.num_seeds == 1:
    return evaluator(state, progress)
  return replica_scalars(cfg, [evaluator(state_lib.replica(state, i),
                                         progress)
                               for i in range(cfg.num_seeds)])


def last_scalars(cfg, metrics) -> Dict[str, float]:
  """The last step's metrics; per replica and mean with --num_seeds."""
  metrics = jax.device_get(metrics)
  if cfg.num_seeds == 1:
    return {k: float(v[-1]) for k, v in metrics.items()}
  return replica_scalars(cfg, [{k: v[-1, i] for k, v in metrics.items()}
                               for i in range(cfg.num_seeds)])


def _try_lock(workdir: str):
  """(open lock file or None, error message or None) for ``DIR/.lock``."""
  os.makedirs(workdir, exist_ok=True)
  f = None
  try:
    f = open(os.path.join(workdir, ".lock"), "a+")  # pylint: disable=consider-using-with
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip() or "unknown"
    f.close()
    return None, (f"--workdir={workdir} is in use by another run (process "
                  f"{holder}); wait for it or stop it")
  except OSError as e:  # a read-only workdir, a file system without flock
    if f is not None:
      f.close()
    logging.warning("no lock on --workdir (%s); make sure no other run "
                    "uses it", e)
    return None, None
  f.seek(0)
  f.truncate()
  f.write(f"{os.getpid()} on {socket.gethostname()}\n")
  f.flush()
  return f, None


@contextlib.contextmanager
def exclusive_workdir(workdir: str):
  """Holds an exclusive lock on ``workdir`` (``DIR/.lock``, flock) while a
  run trains there: a second run started on the same workdir (a sweep
  launched twice, a job restarted while the old one still runs) stops with
  one line instead of truncating the first one's metrics.jsonl and racing
  its checkpoints. The lock goes with the process, so a killed run leaves
  none behind. Where the file system cannot lock, a warning. Multi-host:
  process 0 takes the lock and every process learns whether it got it (all
  stop together, none is left waiting in a collective)."""
  f, error = _try_lock(workdir) if jax.process_index() == 0 else (None, None)
  if jax.process_count() > 1:
    ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if not int(ok):
      error = error or (f"--workdir={workdir} is in use by another run "
                        "(process 0 could not lock it)")
  if error:
    raise UserError(error)
  try:
    yield
  finally:
    if f is not None:
      fcntl.flock(f, fcntl.LOCK_UN)
      f.close()


def train_and_evaluate(cfg, workdir: str) -> Dict[str, Any]:
  """Trains ``cfg`` in ``workdir`` (resuming if it holds checkpoints).

  Returns the last logged scalars; after a signal's orderly stop before
  ``--num_steps``, raises ``errors.Stopped`` (its checkpoint saved).
  """
  flags_lib.check_bounds(cfg)
  if not ckpt_lib.has_steps(os.path.join(workdir, "checkpoints")):
    check_new_run(cfg)
  # ---------------------------------------------------------------- mesh
  mesh = make_mesh(cfg)
  check_config(cfg, mesh.devices.size)
  shapes = {}
  with exclusive_workdir(workdir):
    try:
      return _train(cfg, workdir, mesh, shapes)
    except Exception as e:  # pylint: disable=broad-except
      if errors.is_device_out_of_memory(e) and "state" in shapes:
        # Name the flags that make the state or the batch big (a huge
        # --z_dim was blamed on --batch_size).
        detail = str(e).strip().splitlines()[0][:300]
        raise UserError(f"out of device memory ({detail}): "
                        f"{memory_hint(cfg, shapes['state'])}") from e
      raise


def _train(cfg, workdir: str, mesh, shapes) -> Dict[str, Any]:
  is_chief = jax.process_index() == 0

  # ----------------------------------------------- input, model, optimizer
  gan = gan_lib.build(cfg)
  dataset = gan.dataset

  # ---------------------------------------------------------- train state
  replicated = NamedSharding(mesh, P())
  init = jax.jit(lambda: state_lib.create_replicas(gan, cfg.seed,
                                                   cfg.num_seeds),
                 out_shardings=replicated)
  ckpts = ckpt_lib.Checkpoints(os.path.join(workdir, "checkpoints"),
                               keep=cfg.keep_checkpoints,
                               best_metric=cfg.best_metric,
                               best_mode=cfg.best_mode)
  # With several processes a failed write of process 0's files is agreed
  # on (all stop together) instead of ending process 0 alone.
  writer = writers.MetricWriter(workdir, enabled=is_chief,
                                defer_failures=jax.process_count() > 1)
  with jax.set_mesh(mesh):
    abstract = jax.eval_shape(init)
    shapes["state"] = abstract  # for an out-of-memory error's hint
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
        abstract)
    if ckpts.latest_step() is not None:
      # The structure is checked on the saved config before any array is
      # read; unreadable or corrupt newest steps fall back to older ones.
      state, saved, start = ckpts.restore(
          abstract, check=lambda saved: check_resume(saved, cfg, workdir),
          quarantine=True)
      logging.info("resumed from step %d", start)
      trained_on = saved.get("mesh_devices")
      if trained_on not in (None, mesh.size):
        logging.warning(
            "resuming on %d devices a run trained on %d: BatchNorm "
            "statistics and dropout draws are per device, so from here it "
            "trains as a %d-device run would (the same device count "
            "resumes exactly)", mesh.size, trained_on, mesh.size)
    else:
      state = init()
      start = 0
    # Records past the restored step (or all, if none) were written by a run
    # that died before checkpointing them; they are redone identically.
    with writer.local_writes():
      writer.truncate_after(start)
  if start and start >= cfg.num_steps:
    # Nothing to train; flags.txt keeps the config that trained the run.
    ckpts.close()
    writer.close()
    if writer.failure is not None:  # process 0's truncation of the logs
      raise writer.failure
    if start > cfg.num_steps:
      logging.warning("nothing to train: the run is at step %d, past "
                      "--num_steps=%d (raise --num_steps to train on)",
                      start, cfg.num_steps)
    else:
      logging.info("nothing to train: the run is complete (step %d of "
                   "--num_steps=%d)", start, cfg.num_steps)
    logged = [r for r in writers.read_metrics(workdir) if r["step"] <= start]
    return logged[-1] if logged else {}
  if is_chief:
    with writer.local_writes(), writers.atomic_open(
        os.path.join(workdir, "flags.txt")) as f:
      f.write("\n".join(flags_lib.flagfile_lines(cfg)) + "\n")
  with jax.set_mesh(mesh):
    stop_vote = distributed.StopVote(mesh, steps_lib.AXIS)
    if stop_vote.now(distributed.FAILED if writer.failure
                     else distributed.CONTINUE) == distributed.FAILED:
      ckpts.close()
      writer.close()
      raise _write_failure(writer, "; no process started training")

  # -------------------------------------------------------- compiled step
  spl = cfg.steps_per_loop
  cadences = [cfg.log_every, cfg.checkpoint_every]
  step_fns = {}

  def step_fn(n):
    if n not in step_fns:
      step_fns[n] = steps_lib.make_train_step(gan, mesh, n)
    return step_fns[n]

  host_sharding = NamedSharding(mesh, P(None, None, steps_lib.AXIS))
  streams = [] if dataset.kind == "toy" else [dataset]
  if cfg.num_seeds > 1 and dataset.kind != "toy":
    # Replica i reads the stream of seed + i: (steps, replicas, k, B, ...).
    host_sharding = NamedSharding(mesh, P(None, None, None, steps_lib.AXIS))
    streams = [dataset.with_seed(cfg.seed + i) for i in range(cfg.num_seeds)]
  host_batches = HostInput(streams, cfg, host_sharding)

  # ---------------------------------------------------------- evaluators
  sampler = Sampler(gan, mesh)
  evaluator = None
  if cfg.eval_every and dataset.kind != "toy":
    from gan_jax import evaluate  # pylint: disable=g-import-not-at-top
    evaluator = evaluate.Evaluator(gan, sampler, cfg.eval_num_samples)
    cadences.append(cfg.eval_every)
  real_toy = None
  if dataset.kind == "toy":
    real_toy = np.asarray(dataset.sample(jax.random.PRNGKey(0), 20000)[0])

  # ----------------------------------------------------------------- loop
  last: Dict[str, Any] = {}
  step = start
  total = cfg.num_steps
  # The config and its schema, and the device count that per-device
  # BatchNorm and dropout depend on (a resume on another count is warned
  # about).
  config_record = {**flags_lib.config_record(cfg), "mesh_devices": mesh.size}
  progress = None
  if cfg.progress and is_chief and sys.stderr.isatty():
    # A terminal gets the bar; a log file gets the plain lines only.
    progress = _ProgressBar(total, min(step, total))
  t_last, step_last = time.time(), step
  rate = None
  names, record = None, None  # the NaN/Inf tracker (_track_nonfinite)
  warned_nonfinite = False
  profile = _Profile(cfg, workdir)
  stopped = None  # errors.Stopped after a signal's orderly stop
  try:
    with _Preemption() as preempt, jax.set_mesh(mesh):
      while step < total:
        n = call_length(step, total, spl, cadences)
        profile.before_call(step)
        state, metrics = step_fn(n)(state, host_batches(step, n))
        if record is None:
          names = sorted(metrics)
          record = (jnp.int32(-1), jnp.zeros((len(names),), bool))
        record = _track_nonfinite(record, metrics, step)
        prev, step = step, step + n
        profile.after_call(step, state)
        if progress is not None:
          progress.queued(record, n)
        debug_signal = prev < cfg.debug_signal_at_step <= step and (
            cfg.debug_signal_process in (-1, jax.process_index()))
        if debug_signal and cfg.debug_signal != "KILL":
          os.kill(os.getpid(), getattr(signal, "SIG" + cfg.debug_signal))
        # With several processes, all stop after the same step (the first
        # boundary after any of them was signalled, or process 0's writes
        # failed, one call later).
        verdict = stop_vote(
            distributed.FAILED if writer.failure is not None
            else distributed.SIGNALLED + preempt.signal
            if preempt.signal is not None else distributed.CONTINUE)
        if verdict == distributed.FAILED:
          # No save: the failure may be the disk the checkpoints are on.
          ckpts.wait()
          kept = ckpts.latest_step()
          kept = (f"the checkpoint of step {kept} is kept" if kept is not None
                  else "no checkpoint was saved")
          raise _write_failure(
              writer, f"; every process stopped at step {step}, {kept}")
        stop = verdict >= distributed.SIGNALLED
        eval_now = evaluator is not None and (
            step % cfg.eval_every == 0 or step == total)
        # An evaluation step is also a log step: one record per step.
        log_now = step % cfg.log_every == 0 or step == total or eval_now
        save_now = (stop or step == total or bool(
            cfg.checkpoint_every and step % cfg.checkpoint_every == 0))
        if log_now or save_now:
          bad = _first_nonfinite(record, names)
          if bad is not None:
            first, culprit, others = bad
            also = f" (also {', '.join(others)})" if others else ""
            if cfg.nan_policy == "stop":
              ckpts.wait()
              kept = ckpts.latest_step()
              kept = (f"the last good checkpoint (step {kept}) is kept"
                      if kept is not None else "no checkpoint was saved")
              raise UserError(f"non-finite {culprit} at step {first}{also}; "
                              f"stopped at step {step}, {kept} "
                              f"(--nan_policy=warn trains on)")
            if not warned_nonfinite:
              logging.warning("non-finite %s at step %d%s; training on "
                              "(--nan_policy=warn), no checkpoint will be "
                              "saved while the state is non-finite",
                              culprit, first, also)
              warned_nonfinite = True
        scalars = None
        if log_now:
          scalars = last_scalars(cfg, metrics)
          now = time.time()
          rate = (step - step_last) / max(now - t_last, 1e-9)
          t_last, step_last = now, step
          scalars.update(visualize_replicas(gan, sampler, state, step,
                                            workdir, writer, real_toy))
          evaluated = {}
          if eval_now:
            evaluated = evaluate_replicas(evaluator, cfg, state)
            scalars.update(evaluated)
          scalars["steps_per_sec"] = rate
          with writer.local_writes():
            writer.write_scalars(step, scalars)
          last = {"step": step, **scalars}
          line = writers.format_line(
              step, total, rate, scalars,
              extra=[k for k in evaluated
                     if "/" not in k and not k.endswith("_std")])
          if progress is not None:
            progress.write(line, scalars)
          elif is_chief:  # the console is process 0's, as the summary
            logging.info(line)
        # The first log with every metric source in it (the evaluator's
        # too) settles whether --best_metric names a logged metric; a typo
        # ends the run there with its state saved, not a run without a best
        # checkpoint.
        unknown_best = (cfg.best_metric and scalars is not None
                        and (evaluator is None or eval_now)
                        and cfg.best_metric not in scalars)
        if save_now or unknown_best:
          saved = ckpts.save(step, state, config_record, metrics=scalars)
        if unknown_best:
          ckpts.wait()
          raise UserError(
              f"--best_metric={cfg.best_metric} is not a logged metric "
              f"(step {step} logged: {', '.join(sorted(scalars))}); stopped "
              f"at step {step}" + (", its checkpoint is kept" if saved
                                   else ""))
        if stop:
          cause = (f"signal {preempt.signal}" if preempt.signal is not None
                   else "another process was signalled")
          logging.warning("%s: %s at step %d, exiting", cause,
                          "saved a checkpoint" if saved
                          else "could not save a checkpoint", step)
          signum = (preempt.signal if preempt.signal is not None
                    else verdict - distributed.SIGNALLED)
          if step >= total:  # the signal came with the last call: done
            break
          stopped = errors.Stopped(
              f"stopped by {signal.Signals(signum).name}"
              + ("" if preempt.signal is not None
                 else " (sent to another process)")
              + f" at step {step} of {total}, "
              + ("its checkpoint saved: rerun the same command to resume"
                 if saved else "no checkpoint saved at this step"),
              signum)
          break
        if debug_signal and cfg.debug_signal == "KILL":
          if not save_now:  # earlier saves committed; this step's in flight
            ckpts.wait()
          os.kill(os.getpid(), signal.SIGKILL)
      # A failure in the last calls' writes, not yet read from the vote:
      # agreed on now (every process exits with an error, none with 0).
      if stop_vote.now(distributed.FAILED if writer.failure is not None
                       else distributed.CONTINUE) == distributed.FAILED:
        ckpts.wait()
        raise _write_failure(writer, f" in the run's last steps; every "
                             f"process stopped at step {step}")
  except BaseException as e:
    # The error on its way out is the one to report: a failure to close
    # (the same full disk) must not replace it. But if closing left native
    # threads failing (orbax's writes, tensorboardX's writer, whose exit
    # hook would print tracebacks), the exit skips the interpreter's
    # teardown (errors.die's at_once) whatever the error.
    failures = _close_all(profile, host_batches, progress, ckpts, writer,
                          quiet=True)
    if any(getattr(f, "at_once", False) for f in failures):
      try:
        e.at_once = True
      except AttributeError:  # an exception type without attributes
        pass
    raise
  if progress is not None:
    progress.finish()
  _close_all(profile, host_batches, progress, ckpts, writer)
  if stopped is not None:  # after the saves committed (close waited)
    raise stopped
  return last


def _write_failure(writer, where: str) -> UserError:
  """The error every process stops with once process 0's writes failed:
  process 0's own, the others' pointing to it (``where``: when)."""
  return writer.failure or UserError(
      f"process 0 could not write to the workdir (its stderr says why)"
      f"{where}")


def _close_all(profile, host_batches, progress, ckpts, writer,
               quiet: bool = False):
  """Ends the loop's helpers, each even if one before it fails; raises
  the first failure, or, if ``quiet`` (another error is already on its way
  out), returns the failures."""
  closers = [profile.close, host_batches.close, ckpts.close, writer.close]
  if progress is not None:
    closers.insert(2, progress.close)
  failures, interrupt = [], None
  for close in closers:
    try:
      close()
    except Exception as e:  # pylint: disable=broad-except
      failures.append(e)
    except BaseException as e:  # a signal (Terminated, Ctrl-C): close the
      interrupt = interrupt or e  # rest first, then let it through
  if interrupt is not None:
    raise interrupt
  if failures and not quiet:
    raise failures[0]
  return failures
