"""Shared test helpers (on sys.path through pytest's ``pythonpath``)."""

import os
import subprocess
import sys

# Tests train tiny models for a few steps: compile time dominates, so XLA's
# slow LLVM optimizations are turned off (numerics stay deterministic).
FAST_COMPILE = ("--xla_backend_optimization_level=0 "
                "--xla_llvm_disable_expensive_passes=true")

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


def compile_cache_env(tmp_path_factory):
  """Environment for subprocesses that share a persistent XLA compilation
  cache (a module's runs compile the same programs)."""
  cache = tmp_path_factory.mktemp("xla_cache")
  return {"JAX_COMPILATION_CACHE_DIR": str(cache),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def tiny_config(**overrides):
  """A small toy config that compiles and runs in seconds. Its narrow MLP
  knobs (--g.hidden, ...) are set for the architectures that take them:
  not when ``overrides`` names another generator or discriminator."""
  from gan_jax import flags as flags_lib
  from gan_jax import models
  base = dict(dataset="ring", generator="pacgan_mlp",
              discriminator="pacgan_maxout", batch_size=16, num_steps=4,
              log_every=2, steps_per_loop=1, progress=False,
              checkpoint_every=0, **{"eval.num_samples": 200})
  base.update({k: v for k, v in overrides.items() if "." not in k})
  narrow = {"g": {"hidden": 16, "layers": 2},
            "d": {"hidden": 8, "layers": 2, "pieces": 2}}
  for side, flag in (("g", "generator"), ("d", "discriminator")):
    takes = models.knobs_of(side, base[flag])
    base.update({f"{side}.{k}": v for k, v in narrow[side].items()
                 if takes is None or k in takes})
  base.update(overrides)
  return flags_lib.defaults(**base)


def run_module(module, *args, env=None, timeout=600, max_file_bytes=None):
  """Runs ``python -m module args`` in a subprocess (for CLI tests).

  The subprocess sees one CPU device unless ``env`` sets XLA_FLAGS, and
  imports the tests' modules (tests/ is on its PYTHONPATH).
  ``max_file_bytes``: no file it writes may grow past this (RLIMIT_FSIZE;
  a write beyond fails with EFBIG, "File too large"): a full disk that
  strikes the largest files first.
  """
  full_env = dict(os.environ)
  full_env["XLA_FLAGS"] = FAST_COMPILE
  full_env.update(env or {})
  # The tests' own modules (--extra_modules=faults, tiny_image_data, ...),
  # after any already on the path.
  full_env["PYTHONPATH"] = os.pathsep.join(
      [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p]
      + [TESTS])
  cmd = [sys.executable, "-m", module, *args]
  if max_file_bytes is not None:
    # Through bash (no preexec_fn: forking this multithreaded process to
    # run Python in the child can deadlock). SIGXFSZ ignored: EFBIG, not a
    # kill; ulimit -f counts KiB.
    cmd = ["bash", "-c", f"trap '' XFSZ; ulimit -f {max_file_bytes // 1024}"
           ' && exec "$@"', "bash", *cmd]
  return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True,
                        text=True, timeout=timeout)


def fault_env(**settings):
  """The environment of tests/faults.py's faults (``--extra_modules=faults``):
  ``nan_at_step=N``, ``signal_at_step=N``, ``signal="TERM"``,
  ``signal_process=I``."""
  return {f"GAN_JAX_TEST_{name.upper()}": str(value)
          for name, value in settings.items()}


def assert_one_line_error(result):
  """Bad input: non-zero exit, one line on stderr, no traceback."""
  assert result.returncode != 0, result.stdout + result.stderr
  lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
  assert len(lines) == 1, result.stderr
  assert "Traceback" not in result.stderr
  assert lines[0].startswith("error:"), lines[0]
  return lines[0]


def generator(name, cfg, shape, num_classes=0):
  """The generator ``name`` as a run of ``cfg`` builds it (its --g.* knobs)."""
  from gan_jax import models  # pylint: disable=import-outside-toplevel
  return models.build("g", cfg.replace(generator=name), shape, num_classes)


def discriminator(name, cfg, shape, num_classes=0):
  """The discriminator ``name`` as a run of ``cfg`` builds it (--d.*)."""
  from gan_jax import models  # pylint: disable=import-outside-toplevel
  return models.build("d", cfg.replace(discriminator=name), shape,
                      num_classes)
