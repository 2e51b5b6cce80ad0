"""What a training run holds and must let go of in order: one guard object.

``RunGuard`` owns the workdir lock, SIGTERM/SIGINT turned into a request to
stop, the processes' agreement on when to stop (``distributed.StopVote``)
and the ordered shutdown, so the training loop stays a loop::

    with RunGuard(workdir) as guard:
      writer = guard.closes(MetricWriter(...))  # closed at exit, in reverse
      ...
      guard.watch(mesh, writer, ckpts, total)   # every process starts
      with guard.signals():
        while step < total:
          ...                                   # the compiled call
          stop = guard.vote(step)               # save when True
          ...                                   # log, save
          if guard.end_step(step, saved):
            break
        guard.last_vote(step)

A signal's orderly stop before the last step ends in ``errors.Stopped``,
raised once everything is closed (the saves committed).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import time
from typing import Any, List, Optional

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from gan_jax import distributed
from gan_jax import errors
from gan_jax import steps as steps_lib
from gan_jax.errors import UserError


class Preemption:
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


class RunGuard:
  """The workdir lock, the signals, the stop vote and the shutdown of one
  training run (see the module docstring for the order of calls)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    # Set by ``watch``: the writer whose failed writes (process 0's) stop
    # every process, and the checkpoints waited for before that stop.
    self.writer = None
    self.checkpoints = None
    self._closers: List[Any] = []
    self._lock = None
    self._preemption = Preemption()
    self._vote = None
    self._total = 0
    self._verdict = distributed.CONTINUE
    self._stopped: Optional[errors.Stopped] = None

  def __enter__(self):
    self._lock = exclusive_workdir(self.workdir)
    self._lock.__enter__()  # pylint: disable=unnecessary-dunder-call
    return self

  def closes(self, thing):
    """Registers ``thing`` (anything with ``close()``) for the shutdown,
    which closes in the reverse order of registration; returns it."""
    self._closers.append(thing)
    return thing

  def watch(self, mesh, writer, checkpoints, total: int) -> None:
    """Starts the processes' stop vote over ``mesh``; its first round
    agrees at once on whether process 0 could write the run's record, else
    no process starts training."""
    self.writer, self.checkpoints, self._total = writer, checkpoints, total
    with jax.set_mesh(mesh):
      self._vote = distributed.StopVote(mesh, steps_lib.AXIS)
      self._agree("; no process started training")

  def signals(self):
    """The loop's context: SIGTERM/SIGINT become a request to stop after the
    current call, with a save (``vote``)."""
    return self._preemption

  def vote(self, step: int) -> bool:
    """Called right after each compiled call: whether every process stops
    after ``step``, saving it, because one was signalled: with one process
    at this boundary, with several at the next (a boundary's vote is read
    one call later, so a call stays in flight). Raises, without a save (the
    failure may be the disk the checkpoints are on), once process 0's
    writes failed."""
    own = self._preemption.signal
    self._verdict = self._vote(
        distributed.FAILED if self.writer.failure is not None
        else distributed.SIGNALLED + own if own is not None
        else distributed.CONTINUE)
    if self._verdict == distributed.FAILED:
      self.checkpoints.wait()
      kept = self.checkpoints.latest_step()
      kept = (f"the checkpoint of step {kept} is kept" if kept is not None
              else "no checkpoint was saved")
      raise self._write_failure(
          f"; every process stopped at step {step}, {kept}")
    return self._verdict >= distributed.SIGNALLED

  def end_step(self, step: int, saved: bool) -> bool:
    """Called once a step boundary is logged and saved: True to leave the
    loop after an agreed stop, which is logged; before the last step it
    ends the run in ``errors.Stopped`` (raised once all is closed)."""
    if self._verdict < distributed.SIGNALLED:
      return False
    own = self._preemption.signal
    logging.warning("%s: %s at step %d, exiting",
                    f"signal {own}" if own is not None
                    else "another process was signalled",
                    "saved a checkpoint" if saved
                    else "could not save a checkpoint", step)
    if step < self._total:  # (a signal with the last call: the run is done)
      signum = (own if own is not None
                else self._verdict - distributed.SIGNALLED)
      self._stopped = errors.Stopped(
          f"stopped by {signal.Signals(signum).name}"
          + ("" if own is not None else " (sent to another process)")
          + f" at step {step} of {self._total}, "
          + ("its checkpoint saved: rerun the same command to resume"
             if saved else "no checkpoint saved at this step"), signum)
    return True

  def last_vote(self, step: int) -> None:
    """After the loop: a failure in the last calls' writes, not yet read
    from the vote, agreed on now (every process exits with an error, none
    with 0)."""
    self._agree(f" in the run's last steps; every process stopped at step "
                f"{step}")

  def _agree(self, where: str) -> None:
    if self._vote.now(distributed.FAILED if self.writer.failure is not None
                      else distributed.CONTINUE) == distributed.FAILED:
      self.checkpoints.wait()
      raise self._write_failure(where)

  def _write_failure(self, where: str) -> UserError:
    """The error every process stops with once process 0's writes failed:
    process 0's own, the others' pointing to it (``where``: when)."""
    return self.writer.failure or UserError(
        f"process 0 could not write to the workdir (its stderr says why)"
        f"{where}")

  def __exit__(self, exc_type, error, tb):
    try:
      # The error on its way out is the one to report: a failure to close
      # (the same full disk) must not replace it. But if closing left
      # native threads failing (orbax's writes, tensorboardX's writer,
      # whose exit hook would print tracebacks), the exit skips the
      # interpreter's teardown (errors.die's at_once) whatever the error.
      failures = self._close_all(quiet=error is not None)
      if error is not None and any(getattr(f, "at_once", False)
                                   for f in failures):
        try:
          error.at_once = True
        except AttributeError:  # an exception type without attributes
          pass
    finally:
      self._lock.__exit__(None, None, None)
    if error is None and self._stopped is not None:
      raise self._stopped  # after the saves committed (closing waited)
    return False

  def _close_all(self, quiet: bool) -> List[Exception]:
    """Closes what was registered, each even if one before it fails;
    raises the first failure, or, if ``quiet`` (another error is already
    on its way out), returns the failures."""
    closers, self._closers = self._closers[::-1], []
    failures, interrupt = [], None
    for thing in closers:
      try:
        thing.close()
      except Exception as e:  # pylint: disable=broad-except
        failures.append(e)
      except BaseException as e:  # a signal (Terminated, Ctrl-C): close the
        interrupt = interrupt or e  # rest first, then let it through
    if interrupt is not None:
      raise interrupt
    if failures and not quiet:
      raise failures[0]
    return failures
