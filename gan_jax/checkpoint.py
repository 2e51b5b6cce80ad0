"""Orbax checkpoints, behind this one module.

Layout of ``WORKDIR/checkpoints/<step>/`` (one orbax ``CheckpointManager``
step, items of an ``ocp.args.Composite``; see docs/checkpoints.md):
  ``state/``   the ``TrainState`` pytree (``StandardSave``: step, rng, and
               per network name params, net_state, opt_state, ema; the
               method's extra state);
  ``config/``  JSON of the fully resolved flags the run was started with;
  ``meta/``    JSON ``{"step", "fingerprint"}``: one uint32 checksum per state
               leaf, checked on restore to detect silent corruption;
  ``metrics/`` JSON ``{best_metric: value}`` (orbax's own item; only with
               ``--best_metric``, at steps where the metric was logged).

Saves are asynchronous: ``save`` returns once the arrays are copied off the
devices and orbax writes them in a background thread. A step directory
appears only once complete (orbax writes to a temporary directory and renames
it), and older steps are deleted only after the newer one is committed, so a
kill -9 at any point leaves the previous checkpoint readable. A checkpoint
that is present but unreadable, or whose checksum does not match, is skipped
with a warning in favour of the previous one.
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import re
import shutil
import signal
import sys
import threading
import warnings
from typing import Any, Callable, Dict, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from absl import logging
from jax import lax

from gan_jax.errors import (UserError, describe_os_error, die,
                             is_out_of_memory)

_POLICIES = ocp.checkpoint_managers


@jax.jit
def _inspect(state):
  """(per-leaf uint32 checksums, whether every float leaf is finite).

  The checksum is sum_i bits(x_i) * (2 i + 1) mod 2^32 over the leaf's raw
  bits: exact integer arithmetic, so it is reproducible and any changed,
  zeroed or reordered word is caught (with probability ~1 - 2^-32).
  """
  sums, finite = [], jnp.array(True)
  for x in jax.tree.leaves(state):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
      finite &= jnp.all(jnp.isfinite(x))
    if x.dtype == jnp.bool_:
      bits = x.astype(jnp.uint32)
    elif jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      bits = jax.random.key_data(x).astype(jnp.uint32)
    else:
      width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}.get(
          x.dtype.itemsize)
      if width is None:  # 64-bit: fold both halves.
        bits = lax.bitcast_convert_type(x, jnp.uint32)
      else:
        bits = lax.bitcast_convert_type(x, width).astype(jnp.uint32)
    bits = bits.ravel()
    weights = (2 * jnp.arange(bits.size, dtype=jnp.uint32) + 1)
    sums.append(jnp.sum(bits * weights, dtype=jnp.uint32))
  return (jnp.stack(sums) if sums else jnp.zeros((0,), jnp.uint32)), finite


def fingerprint(state) -> Tuple[list, bool]:
  """Per-leaf checksums of ``state`` (ints) and whether it is all finite."""
  sums, finite = jax.device_get(_inspect(state))
  return [int(s) for s in np.asarray(sums)], bool(finite)


def steps_on_disk(directory: str) -> list:
  """The committed steps in ``directory``, read from the file system (not
  orbax's list, which already leaves out steps due for deletion)."""
  try:
    return sorted(int(name) for name in os.listdir(directory)
                  if name.isdigit())
  except OSError:
    return []


def has_steps(directory: str) -> bool:
  """Whether ``directory`` holds a step directory (without opening orbax)."""
  return bool(steps_on_disk(directory))


class Checkpoints:
  """Saves train states, keeps the last ``keep`` (plus the best by
  ``best_metric`` when given), restores the newest readable one."""

  def __init__(self, directory: str, *, keep: int = 3,
               best_metric: Optional[str] = None, best_mode: str = "min",
               async_save: bool = True, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric or None
    if best_mode not in ("min", "max"):
      raise UserError(f"--best_mode must be min or max, got {best_mode!r}")
    if keep < 1:
      raise UserError(f"--keep_checkpoints must be >= 1, got {keep}")
    if read_only and not os.path.isdir(self.directory):
      raise UserError(f"no checkpoint in {self.directory}")
    policies = [_POLICIES.LatestN(n=keep)]
    best_fn = None
    if self.best_metric:
      name = self.best_metric
      best_fn = lambda metrics: float(metrics[name])  # pylint: disable=unnecessary-lambda-assignment
      # BestN keeps the last n after sorting ascending (descending if
      # reverse): reverse for "min" keeps the smallest.
      policies.append(_POLICIES.BestN(
          get_metric_fn=best_fn, reverse=(best_mode == "min"), n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=(None if read_only else
                             _POLICIES.AnyPreservationPolicy(policies)),
        best_fn=best_fn,
        best_mode=best_mode,
        enable_async_checkpointing=async_save,
        create=not read_only,
        read_only=read_only,
        save_interval_steps=0 if read_only else 1,
        cleanup_tmp_directories=not read_only,  # saves killed mid-write
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._writing = None  # the step of the save in flight
    self._write_error = None  # once a save failed: the one-line reason

  @contextlib.contextmanager
  def _write_errors(self):
    """A failed save (disk full, no permission, an I/O error) becomes one
    UserError naming the step and what is kept; orbax reports it in a later
    call (the next save or a wait), since saves run in the background."""
    try:
      yield
    except UserError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      reason = _io_reason(e)
      if reason is None:  # not the file system's doing: a bug, keep it whole
        raise
      step = self._writing
      self._writing = None
      kept = [s for s in steps_on_disk(self.directory) if s != step]
      if kept:
        after = (f"the steps saved before it are kept "
                 f"({', '.join(map(str, kept))}): make room and rerun the "
                 f"same command to resume from step {kept[-1]}")
      else:
        after = ("no checkpoint was saved before it: make room and rerun "
                 "the same command (it starts over)")
      self._write_error = (
          f"writing the checkpoint of step {step} to {self.directory} "
          f"failed ({reason}); {after}")
      error = UserError(self._write_error)
      # The failed save's other writes are still winding down in native
      # threads: exit without the interpreter's teardown.
      error.at_once = True
      raise error from None

  def steps(self):
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    steps = self.steps()
    return steps[-1] if steps else None

  def best_step(self) -> Optional[int]:
    """The kept step with the best ``best_metric`` (latest if none)."""
    return self._manager.best_step()

  def save(self, step: int, state, config: Dict[str, Any],
           metrics: Optional[Dict[str, float]] = None) -> bool:
    """Starts an asynchronous save of ``state`` at ``step``.

    Refuses (returns False, with a warning) a state with a non-finite float,
    so a checkpoint is never a NaN. ``metrics`` may hold ``best_metric``.
    """
    sums, finite = fingerprint(state)
    if not finite:
      logging.warning("not saving a checkpoint at step %d: the train state "
                      "holds NaN/Inf", step)
      return False
    ranked = None
    if self.best_metric and metrics is not None:
      value = metrics.get(self.best_metric)
      if value is not None and np.isfinite(value):
        ranked = {self.best_metric: float(value)}
    if self._write_error is not None:
      raise UserError(self._write_error)
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(config),
        meta=ocp.args.JsonSave({"step": int(step), "fingerprint": sums}))
    _ignore_orphaned_io()
    with self._write_errors():
      self._manager.wait_until_finished()  # the previous save's failure
      self._writing = int(step)
      return self._manager.save(int(step), args=args, metrics=ranked,
                                force=True)

  def read_config(self, step: int) -> Dict[str, Any]:
    out = self._manager.restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return dict(out["config"])

  def read_state(self, step: int):
    """The raw state pytree of ``step`` as nested dicts (no target needed)."""
    out = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return out["state"]

  def restore(self, abstract: Union[Any, Callable[[Dict[str, Any]], Any]],
              step: Optional[int] = None, *,
              check: Optional[Callable[[Dict[str, Any]], None]] = None,
              quarantine: bool = False) -> Tuple[Any, Dict[str, Any], int]:
    """Restores ``step`` (default: the newest that reads back intact).

    ``abstract``: the restore target (shape/dtype/sharding stand-ins), or a
    function of the checkpoint's config returning it. ``check(config)`` runs
    before the state is read and may raise UserError (e.g. flags that change
    the structure). A newest checkpoint that cannot be read or fails its
    checksum is skipped with a warning and the previous one is used
    (running out of memory while reading is raised, not taken for
    corruption); with
    ``quarantine`` the bad ones are then moved to ``<directory>.corrupt/``
    so new saves can take their step; when none reads back, none is moved
    (in a multi-process run every process must
    pass ``quarantine``: process 0 moves, all re-read the step list). With
    an explicit ``step`` a failure is an error. SIGINT/SIGTERM during a
    read take effect once it is done (``_signals_deferred``).
    """
    available = self.steps()
    if step is not None and step not in available:
      raise UserError(f"no checkpoint for step {step} in {self.directory}; "
                      f"available: {available or 'none'}")
    candidates = [step] if step is not None else available[::-1]
    if not candidates:
      raise UserError(f"no checkpoint in {self.directory}")
    errors, bad = [], []
    _ignore_orphaned_io()
    for s in candidates:
      try:
        with _signals_deferred():
          config = self.read_config(s)
      except Exception as e:  # pylint: disable=broad-except
        if is_out_of_memory(e):
          raise
        config, error = None, e
      if config is not None:
        if check is not None:
          check(config)  # UserError propagates: not a corruption.
        target = abstract(config) if callable(abstract) else abstract
        try:
          with _signals_deferred():
            state, meta = self._read(s, target)
          sums, _ = fingerprint(state)
          if sums != list(meta["fingerprint"]):
            raise ValueError("checksum mismatch")
          if quarantine and bad:
            self._quarantine(bad)
          return state, config, s
        except Exception as e:  # pylint: disable=broad-except
          if is_out_of_memory(e):
            # Not the checkpoint's fault: falling back would resume from an
            # older step (and quarantine a good one). The caller reports it.
            raise
          error = e
      reason = _read_error_line(error)
      errors.append(f"step {s}: {reason}")
      bad.append(s)
      logging.warning("checkpoint at step %d is unreadable (%s: %s)%s", s,
                      os.path.join(self.directory, str(s)), reason,
                      "" if step is not None else
                      "; falling back to the previous one")
    # None read back: nothing is moved. Every step failing points at the
    # code or model having changed since they were saved rather than at
    # corruption, and moving them all would make a rerun start over (and
    # rewrite metrics.jsonl from step 0). The reload lets the failed
    # restores' reads still in flight settle before the process exits
    # (they would print their errors after the one-line message).
    self._manager.reload()
    error = UserError(f"no readable checkpoint in {self.directory} "
                      f"({'; '.join(errors)}); none was moved")
    # Exit without the interpreter's teardown, where those reads' errors
    # would print after the one-line message.
    error.at_once = True
    raise error

  def _read(self, step: int, target):
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target),
        meta=ocp.args.JsonRestore()))
    return out["state"], dict(out["meta"])

  def _quarantine(self, steps):
    """Moves bad steps out of the manager's directory (kept for autopsy).

    Every process calls this: process 0 moves the directories, then all
    processes wait for each other and re-read the step list, so no process
    later refuses to save a step that only it still believes exists.
    """
    if jax.process_index() == 0:
      dst_dir = self.directory + ".corrupt"
      os.makedirs(dst_dir, exist_ok=True)
      for step in steps:
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(dst_dir, str(step))
        k = 0
        while os.path.exists(dst):  # an earlier bad copy of the step: keep it
          k += 1
          dst = os.path.join(dst_dir, f"{step}.{k}")
        if os.path.exists(src):
          shutil.move(src, dst)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("gan_jax_checkpoint_quarantine")
    self._manager.reload()

  def wait(self):
    if self._write_error is not None:
      return  # reported once, by the call that met it
    with self._write_errors():
      self._manager.wait_until_finished()
    self._writing = None

  def close(self):
    try:
      self.wait()
    finally:
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except
        if self._write_error is None:
          raise


class _OrphanedReads(std_logging.Filter):
  """Drops asyncio's report of an orbax read or write that nobody awaited
  anymore."""

  def filter(self, record):
    message = record.getMessage()
    return not ("Task exception was never retrieved" in message
                and ("async_deserialize" in message
                     or "async_serialize" in message))


@contextlib.contextmanager
def _signals_deferred():
  """SIGINT and SIGTERM wait until the block (one checkpoint read) ends,
  then act as usual; the same signal again ends the process at once.

  A Ctrl-C that lands inside orbax's reads comes out of tensorstore as a
  generic read error (which the fallback would take for a corrupt step and
  quarantine) or is swallowed by asyncio's cancellation. Main thread only
  (elsewhere signals cannot be set).
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  pending = []

  def record(signum, frame):
    del frame
    if signum in pending:  # asked twice: leave now, mid-read
      die(f"interrupted (signal {signum}) while reading a checkpoint",
          code=128 + signum, at_once=True)
    pending.append(signum)

  previous = {}
  for sig in (signal.SIGTERM, signal.SIGINT):
    # None: installed from C; SIG_IGN: the process ignores it, keep to that.
    if signal.getsignal(sig) not in (None, signal.SIG_IGN):
      previous[sig] = signal.signal(sig, record)
  try:
    yield
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
    for sig in previous:  # SIGTERM first: a KeyboardInterrupt ends the loop
      if sig in pending:
        signal.raise_signal(sig)


def _read_error_line(e: BaseException) -> str:
  """One line of at most 300 characters for a failed checkpoint read.

  orbax wraps tensorstore's error ("OUT_OF_RANGE: Error reading ...") in
  "Encountered error while reading array index: ... See full TensorStore
  details: <the store's spec method, repr'd over dozens of lines>": the
  wrapped error is the reason, and the spec dump is left out.
  """
  for _ in range(8):  # a few wrappers at most
    if "TensorStore details" not in str(e) or e.__cause__ is None:
      break
    e = e.__cause__
  text = re.split(r"\s*See full TensorStore details", str(e).strip())[0]
  line = text.strip().splitlines()[0].strip() if text.strip() else ""
  line = f"{type(e).__name__}: {line}" if line else type(e).__name__
  return line if len(line) <= 300 else line[:297] + "..."


def _io_reason(e: Exception) -> Optional[str]:
  """The operating system's reason for a failed write ("No space left on
  device"), from an OSError or the OS error code in a tensorstore/orbax
  error's text; None for any other error (not an I/O failure)."""
  if isinstance(e, OSError):
    return describe_os_error(e)
  text = str(e).strip()
  # tensorstore: "... [os_error_code='28']"; Python's: "[Errno 28] ...".
  found = re.search(r"os_error_code='?(\d+)|\[Errno (\d+)\]", text)
  if found:
    return os.strerror(int(found.group(1) or found.group(2)))
  return None


def _ignore_orphaned_io():
  """Keeps the reads and writes a failed restore or save leaves in flight
  quiet.

  When one array of a checkpoint fails to read (or write), orbax raises and
  closes its event loop while tensorstore's other reads of that checkpoint
  are still running. As each finishes, tensorstore reports the closed loop
  as an unraisable exception; when the orphans are collected, asyncio logs
  the failed reads nobody awaited ("Task exception was never retrieved")
  and Python warns about orbax's metadata coroutines never awaited: a
  traceback per array on stderr, after the fallback to an older checkpoint
  has already worked (or after the one-line error when none reads back).
  Only those three reports are dropped (gan_jax has no coroutines of its
  own); everything else still reaches the previous hook, the log and the
  warnings.
  """
  hook = sys.unraisablehook
  if getattr(hook, "gan_jax_orphaned_reads", False):
    return

  def unraisablehook(args):
    if (args.exc_type is RuntimeError
        and str(args.exc_value) == "Event loop is closed"):
      return
    hook(args)

  unraisablehook.gan_jax_orphaned_reads = True
  sys.unraisablehook = unraisablehook
  std_logging.getLogger("asyncio").addFilter(_OrphanedReads())
  warnings.filterwarnings("ignore", r"coroutine '.*' was never awaited",
                          RuntimeWarning)


def abstract(tree):
  """Shape/dtype/sharding stand-ins for ``tree`` (restore targets)."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
