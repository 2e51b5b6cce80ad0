"""What every command-line tool shares: flag parsing, user modules,
logging, and one-line errors instead of tracebacks.

``python -m gan_jax.main`` (training), ``gan_jax.sample``,
``gan_jax.evaluate``, ``gan_jax.sweep`` and
``gan_jax.features.train_classifier`` each hand their ``main`` to
``run_cli``; none of them imports another tool for it.
"""

from __future__ import annotations

import importlib
import logging as std_logging
import traceback
from typing import List

from absl import app
from absl import flags
from absl import logging

from gan_jax import errors
from gan_jax import sections
from gan_jax.errors import (Terminated, UserError, call_guarded,
                            catch_interrupts, catch_terminate, die,
                            flag_error_line, is_library_file, note_user_code,
                            undecodable_flagfile_line)


def parse_flags(argv):
  """absl parsing with one-line errors (unknown flag, bad value, no file).

  The ``--extra_modules`` of the command line and its flagfiles are
  imported first, so a user module can define its own flags (knobs of its
  loss, network or method) with ``gan_jax.flags``' helpers: they are then
  parsed, checked, recorded in flags.txt and the checkpoint, and compared
  on resume like gan_jax's own."""
  try:
    # The built-in components (methods, architectures, losses,
    # regularizers, optimizers, datasets, metrics, the evaluation, EMA, the
    # profiler) define their sections' flags on import; gan_jax.gan
    # imports them all.
    importlib.import_module("gan_jax.gan")
    import_extra_modules(_extra_modules_of(argv))
    return flags.FLAGS(argv)
  except UserError as e:
    die(str(e))
  except flags.UnrecognizedFlagError as e:
    die(sections.unknown_key_line(e.flagname) or flag_error_line(e))
  except flags.Error as e:
    die(flag_error_line(e))
  except UnicodeDecodeError as e:  # a --flagfile that is not text
    die(undecodable_flagfile_line(argv, e))


def _extra_modules_of(argv) -> List[str]:
  """The last ``--extra_modules`` value of ``argv``, flagfiles expanded
  (absl's own expansion; the flags themselves are parsed later)."""
  args = flags.FLAGS.read_flags_from_files(list(argv[1:]), force_gnu=False)
  value = ""
  for i, arg in enumerate(args):
    name, eq, rest = arg.lstrip("-").partition("=")
    if name != "extra_modules" or not arg.startswith("-"):
      continue
    if eq:
      value = rest
    elif i + 1 < len(args):
      value = args[i + 1]
  return [n.strip() for n in value.split(",") if n.strip()]


def import_extra_modules(names):
  """Imports user modules so their registry entries exist. A module that
  cannot be found, or fails while importing, is one line naming the error
  and where it was raised."""
  for name in names:
    try:
      module = importlib.import_module(name)
    except ImportError as e:
      raise UserError(f"--extra_modules: cannot import {name!r}: {e}") from e
    except (Exception, SystemExit) as e:  # pylint: disable=broad-except
      frames = [f for f in traceback.extract_tb(e.__traceback__)
                if not is_library_file(f.filename)]
      where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
      if isinstance(e, SystemExit):  # would end the run without a word
        raise UserError(
            f"--extra_modules: importing {name!r} called sys.exit"
            f"({'' if e.code is None else repr(e.code)}){where}; a module "
            f"given to --extra_modules should only define and register "
            f"things") from None
      raise UserError(f"--extra_modules: importing {name!r} raised "
                      f"{type(e).__name__}: {e}{where}") from e
    note_user_code(module)


class _QuietLibraries(std_logging.Filter):
  """Keeps the libraries' INFO chatter (orbax's per save, tfds', jax's
  backend probing) off the console (warnings pass, except orbax's note
  that a manager opened read-only, as evaluate and sample open a run's
  checkpoints on purpose, is read-only)."""

  def filter(self, record):
    if record.levelno < std_logging.WARNING and (
        "tensorflow_datasets" in record.pathname
        or record.pathname.endswith("xla_bridge.py")):
      # tfds' "Load dataset info from ..." and jax's "Unable to initialize
      # backend 'tpu'": lines before every one-line error, not news.
      return False
    if "orbax" not in record.pathname:
      return True
    if record.levelno < std_logging.WARNING:
      return False
    # A failed background save is logged by each of orbax's threads with
    # its traceback; gan_jax reports it in one line (checkpoint.py), so
    # orbax's records keep their message and lose the traceback.
    record.exc_info, record.exc_text = None, None
    return not str(record.msg).startswith("Given directory is read only")


def setup_logging():
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())


def run_cli(main_fn, interrupted: str = "interrupted",
            terminate: bool = True):
  """Runs an absl ``main_fn(argv)`` of a command that takes flags only:
  positional arguments, parse errors and UserError end in one line on
  stderr and exit code 2; Ctrl-C (KeyboardInterrupt) ends in the
  ``interrupted`` line and exit code 130."""
  def guarded(argv):
    if len(argv) > 1:
      die(f"unexpected arguments: {' '.join(argv[1:])}")
    errors.show_tracebacks = flags.FLAGS.traceback
    try:
      call_guarded(main_fn, argv)
    except KeyboardInterrupt:
      # The `finally` blocks on the way here have run (the loop waited for
      # its saves); leave without the interpreter's teardown, which can
      # crash (SIGSEGV) when Ctrl-C cut a checkpoint read short and
      # tensorstore's threads are still running.
      die(interrupted, code=130, at_once=True)
    except Terminated:  # SIGTERM, likewise (was a silent exit 143)
      die(interrupted.replace("interrupted", "terminated (SIGTERM)", 1),
          code=143, at_once=True)

  setup_logging()
  catch_interrupts()
  if terminate:  # else main_fn calls catch_terminate when it is ready
    catch_terminate()
  app.run(guarded, flags_parser=parse_flags)
