"""Where measurements go: metrics.jsonl, TensorBoard, the console.

Only process 0 writes; the others are no-ops (multi-host runs).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from typing import IO, Any, Dict, Iterator, Optional, Sequence

import numpy as np

from gan_jax.errors import UserError, describe_os_error, naming


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs) -> Iterator[IO[Any]]:
  """Opens a temporary file beside ``path`` for writing and, if the block
  ends without an exception, renames it over ``path``: readers (and a
  crash, a full disk) see the old file or the new one, never half of one.
  On an exception the temporary file is removed and ``path`` is left as it
  was.

  ``mode``: "w" (text; ``kwargs`` go to open(), e.g. newline) or "wb"
  (binary: np.savez, PIL and matplotlib write to the file object).
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_open writes with mode 'w' or 'wb', not {mode!r}")
  # Per process and thread, so two writers never share it; opened with
  # open() so the file gets the usual permissions (umask), as path had.
  tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
  try:
    with naming(path), open(tmp, mode, **kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise


def clean_value(value):
  """A metric for JSON: the float, or "inf" / "-inf" / "nan" as a string."""
  value = float(value)
  return value if math.isfinite(value) else str(value)


class MetricWriter:
  """Appends one JSON object per logged step; mirrors scalars and images to
  TensorBoard event files in the same directory."""

  def __init__(self, workdir: str, enabled: bool = True,
               defer_failures: bool = False):
    self.enabled = enabled
    self.defer_failures = defer_failures
    self.failure: Optional[UserError] = None
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb_dir = os.path.join(workdir, "tensorboard")
    self._tb = None
    self._purge_step = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)

  @contextlib.contextmanager
  def local_writes(self):
    """Guards writes of this process's own files (metrics.jsonl,
    TensorBoard, sample pictures, flags.txt), which only process 0 makes.

    Such a write failing (a full disk under the workdir) raises its one-line
    error, unless ``defer_failures`` (a multi-process run, where process 0
    ending alone would leave the others waiting in the next collective):
    then the first failure is kept in ``failure``, this writer stops
    writing, and the training loop has every process stop at the same step
    before raising it.
    """
    try:
      yield
    except (UserError, OSError) as e:
      if not self.defer_failures:
        raise
      if self.failure is None:
        failure = e if isinstance(e, UserError) else UserError(
            describe_os_error(e))
        failure.at_once = getattr(e, "at_once", False)
        self.failure = failure
      self.enabled = False

  @property
  def tb(self):
    """The TensorBoard writer, opened on first use (after truncate_after)."""
    if self._tb is None and self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      _watch_tensorboard_threads()
      _tensorboard_failures.clear()  # an earlier writer's, in this process
      # A queue that one log step's events cannot fill: tensorboardX's
      # put() blocks on a full queue, forever if its writer thread died.
      self._tb = SummaryWriter(logdir=self._tb_dir,
                               purge_step=self._purge_step,
                               max_queue=1000)
    return self._tb

  @contextlib.contextmanager
  def _tb_errors(self):
    """A failed TensorBoard write (disk full, file too large) is one
    UserError, whether this call met it or tensorboardX's writer thread
    did (that thread then ends, and events queued for it would wait
    forever). tensorboardX's exit hook then fails too, so the process exits
    without the interpreter's teardown."""
    try:
      if _tensorboard_failures:
        raise _tensorboard_failures[0]
      yield
    except OSError as e:
      e.filename = e.filename or self._tb_dir
      error = UserError(f"writing TensorBoard events failed "
                        f"({describe_os_error(e)}); {self.path} and the "
                        f"checkpoints saved so far are kept")
      error.at_once = True
      raise error from None

  def truncate_after(self, step: int):
    """Drops records past ``step`` (written after the checkpoint we resume
    from), so metrics.jsonl reads as if the run had never stopped.

    TensorBoard hides the old event files' records past ``step`` too (its
    purge_step), so the resumed run's values replace them.
    """
    if not self.enabled:
      return
    if self._tb is None and os.path.isdir(self._tb_dir):
      self._purge_step = int(step) + 1
    if not os.path.exists(self.path):
      return
    kept = [json.dumps(r) + "\n" for r in iter_records(self.path)
            if r["step"] <= step]
    with atomic_open(self.path) as f:
      f.writelines(kept)

  def write_scalars(self, step: int, scalars: Dict[str, float]):
    if not self.enabled:
      return
    record = {"step": int(step)}
    record.update({k: clean_value(v) for k, v in sorted(scalars.items())})
    append_line(self.path, json.dumps(record))
    for name, value in scalars.items():
      # TensorBoard gets finite values only (an inf, e.g. the toy reverse KL
      # before any sample is of high quality, would flatten the plot);
      # metrics.jsonl keeps them as "inf" / "nan".
      if math.isfinite(float(value)):
        with self._tb_errors():
          self.tb.add_scalar(name, float(value), int(step))

  def write_image(self, step: int, name: str, image: np.ndarray):
    """``image``: uint8 (H, W, C)."""
    if self.enabled:
      with self._tb_errors():
        self.tb.add_image(name, image, int(step), dataformats="HWC")

  def flush(self):
    if self._tb is not None:
      with self._tb_errors():
        self._tb.flush()

  def close(self):
    if self._tb is not None:
      tb, self._tb = self._tb, None
      with self._tb_errors():
        tb.close()


_tensorboard_failures = []


def _watch_tensorboard_threads():
  """Records (instead of printing) the OSError that ends tensorboardX's
  event-writing thread, for the next TensorBoard call to report."""
  hook = threading.excepthook
  if getattr(hook, "gan_jax_tensorboard", False):
    return

  def excepthook(args):
    if (type(args.thread).__name__ == "_EventLoggerThread"
        and isinstance(args.exc_value, OSError)):
      _tensorboard_failures.append(args.exc_value)
      return
    hook(args)

  excepthook.gan_jax_tensorboard = True
  threading.excepthook = excepthook


def iter_records(path: str) -> Iterator[Dict[str, Any]]:
  """The records of a JSON-lines file written by this module, in order,
  skipping what a crash or a stray edit can leave: a line cut short, bytes
  that are not UTF-8, a line that is not an object with an integer
  ``step``."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue
      if (isinstance(record, dict) and isinstance(record.get("step"), int)
          and not isinstance(record["step"], bool)):
        yield record


def append_line(path: str, line: str) -> None:
  """Appends ``line`` and a newline to ``path``, first ending a last line
  a crash left without its newline (so the new record is not glued to
  it, which would lose both)."""
  with naming(path), open(path, "ab") as f:
    if f.tell() > 0:
      with open(path, "rb") as r:
        r.seek(-1, os.SEEK_END)
        if r.read(1) != b"\n":
          f.write(b"\n")
    f.write(line.encode("utf-8") + b"\n")


def read_metrics(workdir: str):
  """The records of metrics.jsonl, in order (``iter_records``)."""
  return list(iter_records(os.path.join(workdir, "metrics.jsonl")))


# The quality metrics shown on the console (toy mode metrics, Stacked MNIST
# modes and KL, the built-in evaluation metrics), in this order.
METRIC_KEYS = ("modes", "high_quality", "reverse_kl", "kl", "fid", "kid",
               "inception_score", "precision", "recall")


def format_line(step: int, total: int, rate: Optional[float],
                scalars: Dict[str, float], extra: Sequence[str] = ()) -> str:
  """One console line: step, steps/s, ETA, the losses, the quality metrics
  (``METRIC_KEYS``) and ``extra`` keys (a user metric's outputs)."""
  parts = [f"step {step}/{total}"]
  if rate:
    eta = (total - step) / rate
    parts.append(f"{rate:.1f} steps/s")
    parts.append(f"ETA {int(eta // 60)}:{int(eta % 60):02d}")
  keys = ("d_loss", "g_loss") + METRIC_KEYS
  keys += tuple(k for k in extra if k not in keys)
  for key in keys:
    if key in scalars:
      parts.append(f"{key} {float(scalars[key]):.4g}")
  return " | ".join(parts)
