"""gan_jax.errors: what the command-line tools print for bad input."""

import errno
import os
import signal
import subprocess
import sys

import pytest

from gan_jax import errors
from helpers import REPO


class JaxRuntimeError(RuntimeError):
  """Stands in for jax.errors.JaxRuntimeError (matched by name)."""


def fails_with(exc):
  def main(argv):
    del argv
    raise exc
  return main


@pytest.mark.parametrize("exc, line", [
    (errors.UserError("bad\nvalue   here"), "error: bad value here"),
    (FileExistsError(errno.EEXIST, "File exists", "/runs/x"),
     "error: /runs/x: exists and is not a directory"),
    (PermissionError(errno.EACCES, "Permission denied", "/ro/run"),
     "error: /ro/run: Permission denied"),
    (OSError(errno.ENOSPC, "No space left on device"),
     "error: No space left on device"),
    (OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"),
     "error: /a -> /b: Invalid cross-device link"),
    (MemoryError("Unable to allocate 58.6 GiB"),
     "error: out of host memory: Unable to allocate 58.6 GiB"),
    # XLA's allocation failures: on a GPU/TPU and on the CPU backend.
    (JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to "
                     "allocate 80.00GiB.\nBFC allocator stats ..."),
     "error: out of device memory (RESOURCE_EXHAUSTED: Out of memory while "
     "trying to allocate 80.00GiB.); use a smaller --batch_size (or --num / "
     "--eval.num_samples for sampling and evaluation)"),
    (JaxRuntimeError("INTERNAL: Out of memory allocating 800000000000 "
                     "bytes."),
     "error: out of device memory (INTERNAL: Out of memory allocating "
     "800000000000 bytes.); use a smaller --batch_size (or --num / "
     "--eval.num_samples for sampling and evaluation)"),
])
def test_guarded_entry_point_prints_one_line_and_exits_2(capsys, exc, line):
  with pytest.raises(SystemExit) as e:
    errors.call_guarded(fails_with(exc), ["prog"])
  assert e.value.code == 2
  assert capsys.readouterr().err == line + "\n"


def test_other_errors_are_bugs_and_keep_their_traceback():
  with pytest.raises(KeyError):
    errors.call_guarded(fails_with(KeyError("x")), ["prog"])
  with pytest.raises(JaxRuntimeError):  # an XLA error other than memory
    errors.call_guarded(fails_with(JaxRuntimeError("INVALID_ARGUMENT: x")),
                        ["prog"])


def test_a_write_error_without_a_file_name_gets_the_path(tmp_path, capsys):
  """write()/flush() failures (disk full) carry no file name; the one line
  names the file anyway, for every gan_jax writer."""
  from gan_jax import writers  # pylint: disable=import-outside-toplevel

  def main(argv):
    del argv
    with errors.naming("/runs/x/metrics.jsonl"):
      raise OSError(errno.ENOSPC, "No space left on device")

  with pytest.raises(SystemExit):
    errors.call_guarded(main, ["prog"])
  assert capsys.readouterr().err == (
      "error: /runs/x/metrics.jsonl: No space left on device\n")
  with pytest.raises(OSError) as e, errors.naming("/other"):
    raise OSError(errno.EACCES, "Permission denied", "/own/name")
  assert e.value.filename == "/own/name"  # a name it has is kept
  # atomic_open (metrics.jsonl, flags.txt, eval.json, sweep results) too.
  path = str(tmp_path / "m.jsonl")
  with pytest.raises(OSError) as e:
    with writers.atomic_open(path):
      raise OSError(errno.ENOSPC, "No space left on device")
  assert e.value.filename == path


def test_guarded_entry_point_returns_the_result():
  assert errors.call_guarded(lambda a, b: a + b, 2, 3) == 5


def test_flag_error_line_drops_absl_prefix():
  from absl import flags
  e = flags.Error("ERROR:: Unable to open flagfile: [Errno 2] x\nmore")
  assert errors.flag_error_line(e) == "Unable to open flagfile: [Errno 2] x"
  assert errors.flag_error_line(flags.Error()) == "Error"


@pytest.fixture(name="own_sigint")
def fixture_own_sigint():
  """catch_interrupts() for one test; the process's handlers restored."""
  import signal
  import sys
  handler, hook = signal.getsignal(signal.SIGINT), sys.unraisablehook
  signal.signal(signal.SIGINT, signal.default_int_handler)
  errors.catch_interrupts()
  yield
  signal.signal(signal.SIGINT, handler)
  sys.unraisablehook = hook
  errors._interrupts.clear()  # pylint: disable=protected-access


def test_a_ctrl_c_python_swallows_still_stops_the_loop(own_sigint):
  import gc
  import signal
  from gan_jax import run_guard
  # Python swallows an exception raised in a gc callback (jax has one): a
  # Ctrl-C landing there used to be lost.
  def callback(phase, info):
    del info
    if phase == "start":
      gc.callbacks.remove(callback)
      signal.raise_signal(signal.SIGINT)
  gc.callbacks.append(callback)
  gc.collect()  # no KeyboardInterrupt comes out of it ...
  with run_guard.Preemption() as preempt:
    assert preempt.signal == signal.SIGINT  # ... the loop stops on it,
  with run_guard.Preemption() as preempt:
    assert preempt.signal is None  # once: the next loop does not.


def test_a_ctrl_c_elsewhere_is_a_keyboard_interrupt(own_sigint):
  import signal
  with pytest.raises(KeyboardInterrupt):
    signal.raise_signal(signal.SIGINT)
  assert errors.take_interrupt() and not errors.take_interrupt()


def test_an_ignored_sigint_stays_ignored():
  import signal
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    errors.catch_interrupts()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
  finally:
    signal.signal(signal.SIGINT, previous)


def test_the_training_loop_keeps_an_ignored_sigint_ignored():
  import signal
  from gan_jax import run_guard
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    with run_guard.Preemption():
      assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
      assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
  finally:
    signal.signal(signal.SIGINT, previous)


def test_the_same_signal_twice_at_once_is_one_request():
  """SIGTERM to the process group and again from a sweep passing it on (or
  a scheduler) arrives twice within milliseconds: the loop's handler used
  to take the second as "end at once" and the run died without a save."""
  from gan_jax import run_guard
  with run_guard.Preemption() as preempt:
    signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGTERM)  # still alive: ignored
    assert preempt.signal == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == preempt._handle  # pylint: disable=protected-access


def test_sigterm_before_training_is_one_line_and_exit_143(tmp_path):
  """SIGTERM during startup (flags parsed; restore or compilation to come)
  used to end the process silently with 143; now one line."""
  code = ("import time\n"
          "from gan_jax import cli, main\n"
          "calls = []\n"
          "def ready(modules):\n"  # parse_flags, then early in main.main
          "  calls.append(1)\n"
          "  if len(calls) == 2:\n"
          "    print('ready', flush=True)\n"
          "    time.sleep(60)\n"
          "cli.import_extra_modules = ready\n"
          "main.run()\n")
  p = subprocess.Popen(
      [sys.executable, "-c", code, "--flagfile=experiments/quickstart.flags",
       f"--workdir={tmp_path / 'run'}"],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert p.stdout.readline().strip() == "ready"
  p.send_signal(signal.SIGTERM)
  _, err = p.communicate(timeout=60)
  assert p.returncode == 143, err
  lines = [l for l in err.strip().splitlines() if l.strip()]
  assert lines == ["error: terminated (SIGTERM); the checkpoints saved so "
                   "far are kept: rerun the same command to resume"], err
