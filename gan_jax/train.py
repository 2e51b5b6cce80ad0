"""The training loop: the only place with side effects.

``train_and_evaluate`` reads top to bottom in labelled sections: mesh, data
and method, train state, update step, checkpoint restore, evaluators, loop.
What a run holds and lets go of (the workdir lock, signals, the processes'
stop vote, the shutdown) is ``run_guard.RunGuard``'s; the loop's work at a
step boundary is ``_Logger`` (log steps), ``_save`` (checkpoint steps) and
``_NonFinite`` (the NaN/Inf guard).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from gan_jax import checkpoint as ckpt_lib
from gan_jax import errors
from gan_jax import evaluate as evaluate_lib
from gan_jax import flags as flags_lib
from gan_jax import gan as gan_lib
from gan_jax import host_input
from gan_jax import plots
from gan_jax import profiling
from gan_jax import run_guard
from gan_jax import sampler as sampler_lib
from gan_jax import state as state_lib
from gan_jax import steps as steps_lib
from gan_jax import writers
from gan_jax.errors import UserError
from gan_jax.metrics import toy as toy_metrics


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
    samples = sampler_lib.toy_eval_samples(
        sampler, state, evaluate_lib.samples_per_evaluation(gan.cfg, "toy"))
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
  z, y, rows = sampler_lib.grid_inputs(gan, state.rng)
  image = plots.grid(sampler(state, z, y), rows=rows)
  if writer.enabled:
    with writer.local_writes():
      plots.save_png(path, image)
      writer.write_image(step, image_name, image)
  for name, (z, y, rows) in gan.latent_traversals(state.rng).items():
    # The method's latent traversals (InfoGAN: one grid per code).
    image = plots.grid(sampler(state, z, y), rows=rows)
    if writer.enabled:
      with writer.local_writes():
        plots.save_png(os.path.join(out_dir, f"{name}_step_{step:07d}.png"),
                       image)
  pairs, points = gan.cfg.interp_pairs, gan.cfg.interp_points
  if pairs > 0:
    # Every process samples (one SPMD program over all devices); process 0
    # writes.
    z, y = sampler_lib.interpolation_inputs(gan, state.rng, pairs, points)
    image = plots.grid(sampler(state, z, y), rows=2 * pairs)
    if writer.enabled:
      with writer.local_writes():
        plots.save_png(os.path.join(out_dir, f"interp_step_{step:07d}.png"),
                       image)
        writer.write_image(step, f"interpolation/{tag}" if tag
                           else "interpolation", image)
  return {}


def visualize_replicas(gan, sampler, state, step, workdir, writer,
                       real_toy=None) -> Dict[str, float]:
  """``visualize`` for each replica of a --num_seeds state."""
  cfg = gan.cfg
  if cfg.num_seeds == 1:
    return visualize(gan, sampler, state, step, workdir, writer, real_toy)
  per = [visualize(gan, sampler, state_lib.replica(state, i), step, workdir,
                   writer, real_toy, tag=f"seed_{cfg.seed + i}")
         for i in range(cfg.num_seeds)]
  return evaluate_lib.replica_scalars(cfg, per) if per[0] else {}


def last_scalars(cfg, metrics) -> Dict[str, float]:
  """The last step's metrics; per replica and mean with --num_seeds."""
  metrics = jax.device_get(metrics)
  if cfg.num_seeds == 1:
    return {k: float(v[-1]) for k, v in metrics.items()}
  return evaluate_lib.replica_scalars(
      cfg, [{k: v[-1, i] for k, v in metrics.items()}
            for i in range(cfg.num_seeds)])


def _restore(cfg, workdir: str, ckpts, target, mesh):
  """``(state, step)`` of the newest checkpoint that reads back intact.

  The structure is checked on the saved config before any array is read;
  unreadable or corrupt newest steps fall back to older ones.
  """
  state, saved, start = ckpts.restore(
      target, check=lambda saved: check_resume(saved, cfg, workdir),
      quarantine=True)
  logging.info("resumed from step %d", start)
  trained_on = saved.get("mesh_devices")
  if trained_on not in (None, mesh.size):
    logging.warning(
        "resuming on %d devices a run trained on %d: BatchNorm "
        "statistics and dropout draws are per device, so from here it "
        "trains as a %d-device run would (the same device count "
        "resumes exactly)", mesh.size, trained_on, mesh.size)
  return state, start


def _nothing_to_train(cfg, workdir: str, writer, start: int):
  """A run already at or past --num_steps: its last logged record.
  flags.txt keeps the config that trained it."""
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


class _MemoryHint:
  """Out of device memory, once the train state's shapes are known
  (``state``), becomes one line naming the flags that make the state or
  the batch big (a huge --z_dim was blamed on --batch_size)."""

  def __init__(self, cfg):
    self.cfg = cfg
    self.state = None

  def __enter__(self):
    return self

  def __exit__(self, exc_type, error, tb):
    if (isinstance(error, Exception) and self.state is not None
        and errors.is_device_out_of_memory(error)):
      detail = str(error).strip().splitlines()[0][:300]
      raise UserError(f"out of device memory ({detail}): "
                      f"{memory_hint(self.cfg, self.state)}") from error
    return False


class _NonFinite:
  """The NaN/Inf guard: the first non-finite training metric, tracked on
  device after every call (``_track_nonfinite``, no host sync) and read at
  log and checkpoint steps (``check``)."""

  def __init__(self, cfg, ckpts):
    self._policy = cfg.nan_policy
    self._ckpts = ckpts
    self._names = None
    self.record = None  # (first bad step, bad names mask), on device
    self._warned = False

  def track(self, metrics, first_step: int):
    """Folds in the metrics of the call that starts at ``first_step``."""
    if self.record is None:
      self._names = sorted(metrics)
      self.record = (jnp.int32(-1), jnp.zeros((len(self._names),), bool))
    self.record = _track_nonfinite(self.record, metrics, first_step)

  def check(self, step: int):
    """--nan_policy=stop: an error naming the metric and its step (the
    last good checkpoint kept); warn: a warning, once."""
    bad = _first_nonfinite(self.record, self._names)
    if bad is None:
      return
    first, culprit, others = bad
    also = f" (also {', '.join(others)})" if others else ""
    if self._policy == "stop":
      self._ckpts.wait()
      kept = self._ckpts.latest_step()
      kept = (f"the last good checkpoint (step {kept}) is kept"
              if kept is not None else "no checkpoint was saved")
      raise UserError(f"non-finite {culprit} at step {first}{also}; "
                      f"stopped at step {step}, {kept} "
                      f"(--nan_policy=warn trains on)")
    if not self._warned:
      logging.warning("non-finite %s at step %d%s; training on "
                      "(--nan_policy=warn), no checkpoint will be saved "
                      "while the state is non-finite", culprit, first, also)
      self._warned = True


class _Logger:
  """A log step: the record (metrics.jsonl, TensorBoard), the pictures, the
  evaluator's metrics at evaluation steps, and the console line."""

  def __init__(self, gan, sampler, evaluator, workdir: str, writer,
               progress, step: int):
    self.gan, self.sampler, self.evaluator = gan, sampler, evaluator
    self.workdir, self.writer, self.progress = workdir, writer, progress
    self.real_toy = None  # the data under a toy run's scatter plots
    if gan.dataset.kind == "toy":
      self.real_toy = np.asarray(
          gan.dataset.sample(jax.random.PRNGKey(0), 20000)[0])
    self._time, self._step = time.time(), step

  def __call__(self, step: int, state, metrics,
               evaluate: bool) -> Dict[str, float]:
    """Logs ``step`` (and evaluates, if ``evaluate``); returns the record."""
    cfg = self.gan.cfg
    now = time.time()
    rate = (step - self._step) / max(now - self._time, 1e-9)
    self._time, self._step = now, step
    scalars = last_scalars(cfg, metrics)
    scalars.update(visualize_replicas(self.gan, self.sampler, state, step,
                                      self.workdir, self.writer,
                                      self.real_toy))
    evaluated = {}
    if evaluate:
      evaluated = evaluate_lib.evaluate_replicas(self.evaluator, cfg, state)
      scalars.update(evaluated)
    scalars["steps_per_sec"] = rate
    with self.writer.local_writes():
      self.writer.write_scalars(step, scalars)
    line = writers.format_line(
        step, cfg.num_steps, rate, scalars,
        extra=[k for k in evaluated
               if "/" not in k and not k.endswith("_std")])
    if self.progress is not None:
      self.progress.write(line, scalars)
    elif jax.process_index() == 0:  # the console is process 0's, as the summary
      logging.info(line)
    return scalars


def _save(cfg, ckpts, step: int, state, config_record, scalars,
          due: bool, all_logged: bool) -> bool:
  """Saves ``step`` if ``due``; whether it saved (a non-finite state is
  not). The first log with every metric source in it (``all_logged``: the
  evaluator's too) settles whether --best_metric names a logged metric; a
  typo ends the run there with its state saved, not a run without a best
  checkpoint."""
  unknown_best = bool(cfg.best_metric and scalars is not None and all_logged
                      and cfg.best_metric not in scalars)
  saved = False
  if due or unknown_best:
    saved = ckpts.save(step, state, config_record, metrics=scalars)
  if unknown_best:
    ckpts.wait()
    raise UserError(
        f"--best_metric={cfg.best_metric} is not a logged metric (step "
        f"{step} logged: {', '.join(sorted(scalars))}); stopped at step "
        f"{step}" + (", its checkpoint is kept" if saved else ""))
  return saved


def train_and_evaluate(cfg, workdir: str) -> Dict[str, Any]:
  """Trains ``cfg`` in ``workdir`` (resuming if it holds checkpoints).

  Returns the last logged scalars; after a signal's orderly stop before
  ``--num_steps``, raises ``errors.Stopped`` (its checkpoint saved).
  """
  flags_lib.check_bounds(cfg)
  if not ckpt_lib.has_steps(os.path.join(workdir, "checkpoints")):
    check_new_run(cfg)
  is_chief = jax.process_index() == 0
  total = cfg.num_steps

  # ---------------------------------------------------------------- mesh
  mesh = make_mesh(cfg)
  replicated = NamedSharding(mesh, P())
  with run_guard.RunGuard(workdir) as guard, _MemoryHint(cfg) as oom:

    # ------------------------------------------------------ data and method
    # One build resolves both: the dataset's shape sizes the networks.
    gan = gan_lib.build(cfg)
    check_config(cfg, mesh.devices.size, *gan.batch_multiple)
    host = guard.closes(host_input.for_run(gan.dataset, cfg, mesh))

    # --------------------------------------------------------- train state
    init = jax.jit(lambda: state_lib.create_replicas(gan, cfg.seed,
                                                     cfg.num_seeds),
                   out_shardings=replicated)
    with jax.set_mesh(mesh):
      oom.state = jax.eval_shape(init)  # nothing allocated yet

    # --------------------------------------------------------- update step
    step_fns = {}

    def step_fn(n):  # one compiled program per call length (call_length)
      if n not in step_fns:
        step_fns[n] = steps_lib.make_train_step(gan, mesh, n)
      return step_fns[n]

    # -------------------------------------------------- checkpoint restore
    # With several processes a failed write of process 0's files is agreed
    # on (all stop together) instead of ending process 0 alone.
    writer = guard.closes(writers.MetricWriter(
        workdir, enabled=is_chief, defer_failures=jax.process_count() > 1))
    ckpts = guard.closes(ckpt_lib.Checkpoints(
        os.path.join(workdir, "checkpoints"), keep=cfg.keep_checkpoints,
        best_metric=cfg.best_metric, best_mode=cfg.best_mode))
    with jax.set_mesh(mesh):
      if ckpts.latest_step() is not None:
        target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(
            a.shape, a.dtype, sharding=replicated), oom.state)
        state, start = _restore(cfg, workdir, ckpts, target, mesh)
      else:
        state, start = init(), 0
      # Records past the restored step (or all, if none) were written by a
      # run that died before checkpointing them; they are redone
      # identically.
      with writer.local_writes():
        writer.truncate_after(start)
    if start and start >= total:
      return _nothing_to_train(cfg, workdir, writer, start)
    if is_chief:
      with writer.local_writes(), writers.atomic_open(
          os.path.join(workdir, "flags.txt")) as f:
        f.write("\n".join(flags_lib.flagfile_lines(cfg)) + "\n")
    guard.watch(mesh, writer, ckpts, total)

    # ---------------------------------------------------------- evaluators
    sampler = sampler_lib.Sampler(gan, mesh)
    evaluator = None
    cadences = [cfg.log_every, cfg.checkpoint_every]
    eval_every = evaluate_lib.section(cfg)["every"]
    if eval_every and gan.dataset.kind != "toy":
      evaluator = evaluate_lib.Evaluator(
          gan, sampler, evaluate_lib.samples_per_evaluation(cfg, "image"))
      cadences.append(eval_every)

    # ---------------------------------------------------------------- loop
    # The config and its schema, and the device count that per-device
    # BatchNorm and dropout depend on (a resume on another count is warned
    # about).
    config_record = {**flags_lib.config_record(cfg),
                     "mesh_devices": mesh.size}
    progress = None
    if cfg.progress and is_chief and sys.stderr.isatty():
      # A terminal gets the bar; a log file gets the plain lines only.
      progress = guard.closes(_ProgressBar(total, min(start, total)))
    profile = guard.closes(profiling.Profile(cfg, workdir))
    log = _Logger(gan, sampler, evaluator, workdir, writer, progress, start)
    nonfinite = _NonFinite(cfg, ckpts)
    step, last = start, {}
    with guard.signals(), jax.set_mesh(mesh):
      while step < total:
        n = call_length(step, total, cfg.steps_per_loop, cadences)
        profile.before_call(step)
        state, metrics = step_fn(n)(state, host(step, n))
        nonfinite.track(metrics, step)
        step += n
        profile.after_call(step, state)
        if progress is not None:
          progress.queued(nonfinite.record, n)
        # Every process stops after the same step, saving it.
        stop = guard.vote(step)
        eval_now = evaluator is not None and (
            step % eval_every == 0 or step == total)
        # An evaluation step is also a log step: one record per step.
        log_now = step % cfg.log_every == 0 or step == total or eval_now
        save_now = stop or step == total or bool(
            cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
        if log_now or save_now:
          nonfinite.check(step)
        scalars = None
        if log_now:
          scalars = log(step, state, metrics, evaluate=eval_now)
          last = {"step": step, **scalars}
        saved = _save(cfg, ckpts, step, state, config_record, scalars,
                      due=save_now, all_logged=evaluator is None or eval_now)
        if guard.end_step(step, saved):
          break
      guard.last_vote(step)
    if progress is not None:
      progress.finish()
    return last
