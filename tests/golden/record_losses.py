"""Records, or checks, the metrics of the first 50 training steps of the
reference experiments: the guard that a refactor keeps the numbers bit for
bit (issue 22: "numbers do not move").

    python tests/golden/record_losses.py            # check all cases
    python tests/golden/record_losses.py --record   # write losses.json
    python tests/golden/record_losses.py --cases=quickstart,dcgan_mnist

Each case is an experiment flagfile (plus the overrides below, which keep
it small enough for a CPU) trained for one fused call of 50 steps, as
``gan_jax.main`` runs its first 50 steps on one device; every metric of
every step is kept as the hex of its float32 value. XLA:CPU picks kernels
by instruction set, so values recorded on one CPU differ in the last bits
on another: each ``losses*.json`` here holds the values of one CPU (its
``cpu``; ``recorded_with``: the code that wrote them), the check uses the
file of this CPU and is skipped on a CPU without one. ``--record`` writes
this CPU's file (``losses.json`` for the first, ``losses_<hash>.json`` for
others). Run from the repository root, with one device and XLA's default
optimizations (no XLA_FLAGS).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import platform
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
VALUES = os.path.join(HERE, "losses.json")
STEPS = 50

# name -> flags. sngan_cifar10 runs on tensorflow-datasets' mock CIFAR-10
# (the real set can't be downloaded here) with 32 channels instead of
# 256/128: its full-size ResNet step takes minutes to compile on 2 cores.
CASES = {
    "quickstart": ["--flagfile=experiments/quickstart.flags"],
    "dcgan_mnist": ["--flagfile=experiments/dcgan_mnist.flags"],
    "wgan_gp_8gaussians": ["--flagfile=experiments/wgan_gp_8gaussians.flags"],
    "madgan4_ring": ["--flagfile=experiments/pacgan/madgan4_ring.flags"],
    "unrolled5_ring": ["--flagfile=experiments/pacgan/unrolled5_ring.flags"],
    "pacgan2_ring": ["--flagfile=experiments/pacgan/pacgan2_ring.flags"],
    "mbd_ring": ["--flagfile=experiments/pacgan/mbd_ring.flags"],
    "cgan_mnist": ["--flagfile=experiments/cgan_mnist.flags"],
    "sngan_cifar10": ["--flagfile=experiments/sngan_cifar10.flags",
                      "--g.channels=32", "--d.channels=32"],
}


def cpu() -> str:
  """The CPU's model name and the instruction-set extensions XLA:CPU picks
  kernels by."""
  model, isa = platform.processor() or platform.machine(), []
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          model = value.strip()
        elif key.strip() == "flags":
          isa = sorted(x for x in value.split()
                       if x.startswith(("avx", "amx", "fma", "f16c", "sse4")))
          break
  except OSError:
    pass
  return f"{model} [{' '.join(isa)}]"


def run_case(name: str, data_dir: str):
  """The case's per-step metrics: {metric: [float32 hex, ...]}."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel
  from gan_jax import flags as flags_lib  # pylint: disable=import-outside-toplevel
  from gan_jax import gan as gan_lib  # pylint: disable=import-outside-toplevel
  from gan_jax import host_input  # pylint: disable=import-outside-toplevel
  from gan_jax import state as state_lib  # pylint: disable=import-outside-toplevel
  from gan_jax import steps as steps_lib  # pylint: disable=import-outside-toplevel
  from gan_jax import train  # pylint: disable=import-outside-toplevel
  from gan_jax.data import images  # pylint: disable=import-outside-toplevel

  fl = flags.FLAGS
  fl.unparse_flags()
  fl(["record", *CASES[name], f"--tfds_data_dir={data_dir}",
      f"--num_steps={STEPS}"])
  cfg = flags_lib.from_flags()
  images._load.cache_clear()  # pylint: disable=protected-access
  if name == "sngan_cifar10":
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    with tfds.testing.mock_data(num_examples=256):
      gan = gan_lib.build(cfg)
  else:
    gan = gan_lib.build(cfg)
  mesh = train.make_mesh(cfg)
  replicated = NamedSharding(mesh, P())
  with jax.set_mesh(mesh):
    state = jax.jit(lambda: state_lib.create_replicas(gan, cfg.seed,
                                                      cfg.num_seeds),
                    out_shardings=replicated)()
    streams = [] if gan.dataset.kind == "toy" else [gan.dataset]
    host = host_input.HostInput(streams, cfg, NamedSharding(
        mesh, P(None, None, steps_lib.AXIS)))
    step = steps_lib.make_train_step(gan, mesh, STEPS)
    with host:
      _, metrics = step(state, host(0, STEPS))
    metrics = jax.device_get(metrics)
  return {k: [float(v).hex() for v in np.asarray(m, np.float32).ravel()]
          for k, m in sorted(metrics.items())}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--record", action="store_true",
                      help="write this CPU's values instead of checking them")
  parser.add_argument("--cases", default=",".join(CASES))
  args = parser.parse_args()
  os.chdir(REPO)
  sys.path.insert(0, REPO)
  names = [n for n in args.cases.split(",") if n]
  unknown = [n for n in names if n not in CASES]
  if unknown:
    sys.exit(f"error: unknown case(s) {', '.join(unknown)}; valid: "
             f"{', '.join(CASES)}")
  path, saved = values_of(cpu())
  if not args.record and saved is None:
    print(f"skipped: no values recorded on this CPU, {cpu()}")
    return 0
  saved = saved or {"cpu": cpu(), "cases": {}}
  failed = []
  with tempfile.TemporaryDirectory() as data_dir:
    for name in names:
      got = run_case(name, data_dir)
      if args.record:
        saved["cases"][name] = {"flags": CASES[name], "steps": STEPS,
                                "metrics": got}
        _write(path, saved)  # after each case: a long recording keeps its part
        print(f"{name}: recorded {len(got)} metrics x {STEPS} steps",
              flush=True)
        continue
      if name not in saved["cases"]:
        print(f"{name}: not recorded (--record)", flush=True)
        failed.append(name)
        continue
      want = saved["cases"][name]["metrics"]
      diff = [k for k in sorted(set(want) | set(got))
              if want.get(k) != got.get(k)]
      print(f"{name}: " + ("identical" if not diff
                           else f"DIFFERENT: {', '.join(diff)}"), flush=True)
      if diff:
        failed.append(name)
  if args.record:
    return 0
  return 1 if failed else 0


def values_of(this_cpu: str):
  """(path, values) of the file recorded on ``this_cpu``; values None if
  there is none yet (then the path it would have)."""
  paths = sorted(glob.glob(os.path.join(HERE, "losses*.json")))
  for path in paths:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    if saved.get("cpu") == this_cpu:
      return path, saved
  if not os.path.exists(VALUES):
    return VALUES, None
  digest = hashlib.sha1(this_cpu.encode()).hexdigest()[:8]
  return os.path.join(HERE, f"losses_{digest}.json"), None


def _write(path, saved) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(saved, f, indent=1, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


if __name__ == "__main__":
  sys.exit(main())
