"""Entry point: ``python -m gan_jax.main --flagfile=experiments/NAME.flags
--workdir=DIR [--any_flag=value]``.

Flags -> Config -> train.train_and_evaluate. Bad input ends in one line on
stderr and exit code 2, never a traceback (``cli.run_cli``).
"""

from __future__ import annotations

import fcntl
import os
import shutil

from gan_jax import cli
from gan_jax import distributed
from gan_jax import flags as flags_lib
from gan_jax import writers
from gan_jax.errors import UserError, catch_terminate


def print_summary(scalars):
  if not scalars:
    return
  keys = [k for k in writers.METRIC_KEYS + ("d_loss", "g_loss",
                                            "steps_per_sec")
          if k in scalars]
  print(f"final (step {scalars.get('step')}): " + ", ".join(
      f"{k}={scalars[k]:.4g}" if isinstance(scalars[k], float)
      else f"{k}={scalars[k]}" for k in keys))


def main(argv):
  del argv  # run_cli refuses positional arguments
  flags_lib.check_tool_flags("main")
  fl = flags_lib.FLAGS
  # Before anything touches a JAX backend (issue 8: multi-host).
  distributed.initialize(fl.distributed, fl.coordinator_address,
                         fl.num_processes, fl.process_id,
                         timeout=fl.distributed_timeout)
  # Only now: a process waiting in initialize (native code, where Python
  # runs no handler) must still die at once on SIGTERM.
  catch_terminate()
  cli.import_extra_modules(fl.extra_modules)
  cfg = flags_lib.from_flags()
  if not cfg.workdir:
    raise UserError("--workdir is required (where flags.txt, metrics.jsonl, "
                    "images and checkpoints go)")
  if os.path.exists(cfg.workdir) and not os.path.isdir(cfg.workdir):
    raise UserError(f"--workdir={cfg.workdir} is a file, not a directory")
  created = not os.path.exists(cfg.workdir)
  os.makedirs(cfg.workdir, exist_ok=True)
  from gan_jax import train  # pylint: disable=g-import-not-at-top
  try:
    scalars = train.train_and_evaluate(cfg, cfg.workdir)
  except BaseException:
    # A config refused before anything was written (e.g. an unknown
    # --loss) leaves no empty workdir behind (one process only: with
    # several, others may be using it).
    if created and train.jax.process_count() == 1:
      _remove_if_unused(cfg.workdir)
    raise
  if train.jax.process_index() == 0:  # only process 0 reports
    print_summary(scalars)


def _remove_if_unused(workdir: str) -> None:
  """Removes ``workdir`` if it holds nothing but an unlocked ``.lock``
  (another run may have taken it in the meantime); never raises."""
  try:
    names = set(os.listdir(workdir))
    if not names <= {".lock"}:
      return
    if names:
      with open(os.path.join(workdir, ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: OSError
    shutil.rmtree(workdir)
  except OSError:
    pass


def run():
  # Ctrl-C or SIGTERM while training is an orderly stop (run_guard.RunGuard:
  # save, then one line and exit 130 / 143); before the loop (startup,
  # restore, compilation) it ends here.
  cli.run_cli(main, interrupted=("interrupted; the checkpoints saved so far "
                                 "are kept: rerun the same command to "
                                 "resume"), terminate=False)


if __name__ == "__main__":
  run()
