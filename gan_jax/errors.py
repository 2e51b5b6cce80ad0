"""User-facing errors: one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import signal
import sys
import sysconfig
import traceback
from typing import Iterator, NoReturn, Optional, Set


class UserError(Exception):
  """Bad input from the user (flag values, files, shapes, checkpoints).

  Entry points catch it and print ``error: <message>`` as a single line, so the
  message must say what is wrong and how to fix it.
  """


class Stopped(UserError):
  """The training loop stopped on a signal after saving (preemption): one
  line and exit code 128 + the signal's number (143 for SIGTERM, 130 for
  SIGINT), so a script or scheduler does not take the run for finished."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + int(signum)


class Terminated(BaseException):
  """SIGTERM outside the training loop's own handling (startup, restore,
  compilation, a sweep waiting on its runs): ends the command in one line
  with exit code 143, as Ctrl-C's KeyboardInterrupt does with 130."""


def catch_terminate():
  """SIGTERM raises ``Terminated`` (unless the process was started with
  it ignored, or someone else handles it)."""
  if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
    return

  def handler(signum, frame):
    del signum, frame
    raise Terminated()

  signal.signal(signal.SIGTERM, handler)


def die(message: str, code: int = 2,
        at_once: bool = False) -> NoReturn:
  """Prints one line to stderr and exits; ``at_once`` skips the
  interpreter's teardown (``os._exit``), for exits while native threads
  (tensorstore's reads) may still be running."""
  message = " ".join(str(message).split())  # keep it to one line
  sys.stderr.write(f"error: {message}\n")
  sys.stderr.flush()
  if at_once:
    sys.stdout.flush()
    os._exit(code)  # pylint: disable=protected-access
  raise SystemExit(code)


def flag_error_line(e: Exception) -> str:
  """The first line of an absl flags error, without absl's "ERROR::"."""
  line = str(e).splitlines()[0] if str(e) else type(e).__name__
  return re.sub(r"^ERROR:+\s*", "", line)


def undecodable_flagfile_line(args, e: UnicodeDecodeError) -> str:
  """One line for a flagfile that is not text (absl reads flagfiles as
  UTF-8 and raises UnicodeDecodeError): names the first ``--flagfile`` of
  ``args`` that does not decode, else the decoding error."""
  paths = []
  for i, arg in enumerate(args):
    if arg.startswith(("--flagfile=", "-flagfile=")):
      paths.append(arg.split("=", 1)[1])
    elif arg in ("--flagfile", "-flagfile") and i + 1 < len(args):
      paths.append(args[i + 1])
  for path in paths:
    try:
      with open(path, encoding="utf-8") as f:
        f.read()
    except UnicodeDecodeError:
      return f"--flagfile={path} is not a text (UTF-8) flagfile"
    except OSError:
      continue
  return f"a flagfile is not text (UTF-8): {e}"


def describe_os_error(e: OSError) -> str:
  """One line for a file-system failure: the path and the system's reason."""
  reason = e.strerror or str(e) or type(e).__name__
  if isinstance(e, FileExistsError):  # makedirs(exist_ok=True) met a file
    reason = "exists and is not a directory"
  paths = [p for p in (e.filename, e.filename2) if p is not None]
  where = " -> ".join(str(p) for p in paths)
  return f"{where}: {reason}" if where else reason


@contextlib.contextmanager
def naming(path: str) -> Iterator[None]:
  """An OSError of the block without a file name gets ``path``: a failed
  write() or flush (disk full, file too large) names no file by itself,
  and the one-line error should say which."""
  try:
    yield
  except OSError as e:
    if e.filename is None:
      e.filename = path
    raise


# Source files of the user's code: the modules given to --extra_modules
# and the files of what they registered (``note_user_code``). An exception
# raised there is the user's to fix and ends in one line naming the file
# and line; anywhere else it is gan_jax's bug and keeps its traceback.
USER_FILES: Set[str] = set()
# --traceback: print the whole traceback of an error in the user's code.
show_tracebacks = False


def is_library_file(filename: str) -> bool:
  """gan_jax's, an installed package's or the standard library's file."""
  if filename.startswith("<"):
    return True
  path = os.path.abspath(filename)
  library = [os.path.dirname(os.path.abspath(__file__))] + [
      sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib",
                                         "platlib")]
  return any(path.startswith(os.path.abspath(d) + os.sep) for d in library)


def note_user_code(obj) -> None:
  """Remembers the source file of ``obj`` (a module, a registered factory)
  if it is not the library's."""
  try:
    filename = inspect.getsourcefile(obj) or getattr(obj, "__file__", None)
  except TypeError:  # a builtin, an instance
    filename = getattr(obj, "__file__", None)
  if filename and not is_library_file(filename):
    USER_FILES.add(os.path.abspath(filename))


def user_frame(tb) -> Optional[traceback.FrameSummary]:
  """The innermost frame of ``tb`` in the user's code (``USER_FILES``)."""
  frames = [f for f in traceback.extract_tb(tb)
            if os.path.abspath(f.filename) in USER_FILES]
  return frames[-1] if frames else None


def describe_user_error(e: BaseException,
                        frame: traceback.FrameSummary) -> str:
  """One line for an exception raised in the user's code."""
  detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
  return (f"{type(e).__name__} in your code at {frame.filename}:"
          f"{frame.lineno}" + (f": {detail}" if detail else "")
          + " (--traceback prints the whole traceback)")


def call_guarded(main_fn, *args):
  """Runs a command-line entry point: a UserError, a file-system error (a
  workdir that is a file, a full disk, no permission), running out of host
  memory or an exception raised in the user's registered code ends in one
  line on stderr and exit code 2 instead of a traceback."""
  try:
    return main_fn(*args)
  except UserError as e:
    # at_once: native threads may still report (a failed restore's reads,
    # a failed save's writes, a dead TensorBoard writer's exit hook).
    die(str(e), code=getattr(e, "exit_code", 2),
        at_once=getattr(e, "at_once", False))
  except OSError as e:
    die(describe_os_error(e), at_once=getattr(e, "at_once", False))
  except MemoryError as e:  # e.g. numpy's allocation of a resized dataset
    die(f"out of host memory: {e or 'allocation failed'}",
        at_once=getattr(e, "at_once", False))
  except Exception as e:  # pylint: disable=broad-except
    if is_device_out_of_memory(e):
      detail = str(e).strip().splitlines()[0][:300]
      die(f"out of device memory ({detail}); use a smaller --batch_size "
          f"(or --num / --eval.num_samples for sampling and evaluation)")
    frame = user_frame(e.__traceback__)
    if frame is not None and not show_tracebacks:
      die(describe_user_error(e, frame), at_once=getattr(e, "at_once", False))
    raise


def is_device_out_of_memory(e: BaseException) -> bool:
  """XLA's allocation failure (jax.errors.JaxRuntimeError with
  RESOURCE_EXHAUSTED on accelerators, "Out of memory allocating N bytes" on
  CPU), matched by name so this module does not import jax."""
  return (type(e).__name__ in ("JaxRuntimeError", "XlaRuntimeError")
          and ("RESOURCE_EXHAUSTED" in str(e)
               or "out of memory" in str(e).lower()))


def is_out_of_memory(e: BaseException) -> bool:
  """Host or device memory ran out: a fact about this machine and these
  flags, not about the files being read (a restore must not take it for a
  corrupt checkpoint)."""
  return isinstance(e, MemoryError) or is_device_out_of_memory(e)


_interrupts = []


def take_interrupt() -> bool:
  """Whether Ctrl-C was pressed since ``catch_interrupts`` (or the last
  call); forgets it."""
  pressed = bool(_interrupts)
  _interrupts.clear()
  return pressed


def catch_interrupts():
  """Ctrl-C raises KeyboardInterrupt as usual and is also remembered.

  Python swallows an exception raised inside a garbage-collection callback
  (jax registers one) and reports it as unraisable, so a Ctrl-C landing
  there would be lost; remembered, the training loop still sees it
  (``run_guard.Preemption``) and stops at its next step boundary with a
  checkpoint. Such unraisable KeyboardInterrupts are not reported. A
  SIGINT the process was started ignoring (``cmd &`` in a script) stays
  ignored.
  """
  if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
    return

  def handler(signum, frame):
    del frame
    _interrupts.append(signum)
    raise KeyboardInterrupt

  signal.signal(signal.SIGINT, handler)
  hook = sys.unraisablehook

  def unraisablehook(args):
    if args.exc_type is not KeyboardInterrupt:
      hook(args)

  sys.unraisablehook = unraisablehook
