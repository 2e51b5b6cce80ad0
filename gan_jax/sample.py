"""Samples from any checkpoint of a run.

    python -m gan_jax.sample --workdir=DIR --num=N --out=FILE [--step=S]
        [--labels=0,1,...] [--interpolate [--interpolate_steps=K]]
        [--seed=S] [--replica=R]

The GAN is rebuilt from the config saved in the checkpoint (not from the
command line) and G's sampling parameters restored (the EMA copy when the run
kept one). ``FILE.png`` gets a grid of samples (toy data: a scatter plot over
the data); ``FILE.npz`` the raw arrays: ``samples`` (N, *shape), in the
data's range, and ``labels`` (N,) when the model is conditional. With
``--interpolate``: N latent pairs (z0, z1), each rendered along a linear and
a spherical path (gan_jax.interpolate; clipped to [-1, 1]^d for uniform
noise); the PNG shows one row per path, the
npz holds ``linear`` and ``spherical`` (N, steps, *shape), ``z0``, ``z1``
(and ``labels``, one per pair). The same --seed gives the same samples;
``--replica`` picks a replica of a ``--num_seeds`` run.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from gan_jax import checkpoint as ckpt_lib
from gan_jax import cli
from gan_jax import flags as flags_lib
from gan_jax import interpolate as interp_lib
from gan_jax import plots
from gan_jax import sampler as sampler_lib
from gan_jax import state as state_lib
from gan_jax import steps as steps_lib
from gan_jax import writers
from gan_jax.errors import UserError

FLAGS = flags_lib.FLAGS
_EXTENSIONS = (".png", ".npz")
_BATCH = 1024


def load(workdir: str, step: Optional[int] = None,
         replica: Optional[int] = 0,
         overrides: Optional[Dict[str, Any]] = None):
  """``(gan, state, step, mesh)`` of a run's checkpoint (default: newest).

  ``state`` is one replica's TrainState (``--num_seeds`` runs hold several;
  ``replica=None``: all of them, stacked).
  ``overrides``: flag values applied over the run's saved config (e.g.
  ``flags.config_flags_given()``): safe flags (data and weight paths, metric
  settings) replace the run's values; a structural flag must equal them.
  """
  from gan_jax import gan as gan_lib  # pylint: disable=g-import-not-at-top
  if not workdir:
    raise UserError("--workdir is required (the run directory to sample "
                    "from)")
  ckpts = ckpt_lib.Checkpoints(os.path.join(workdir, "checkpoints"),
                               read_only=True)
  if ckpts.latest_step() is None:
    raise UserError(f"no checkpoint in {ckpts.directory}")
  mesh = jax.make_mesh((1,), (steps_lib.AXIS,),
                       devices=jax.local_devices()[:1])
  built = {}

  def target(saved):
    # The run's own modules first: their flags are part of its config.
    cli.import_extra_modules(saved.get("extra_modules") or ())
    run = flags_lib.saved_config(saved, workdir)  # refuses another schema
    cfg = run.replace(**(overrides or {}))
    changed = [n for n in sorted(overrides or {})
               if not flags_lib.SAFE[n] and getattr(cfg, n) != getattr(run, n)]
    if changed:
      raise UserError(
          f"cannot override {', '.join(changed)} of a saved run ("
          + "; ".join(f"--{n}: the run's {getattr(run, n)}, given "
                      f"{getattr(cfg, n)}" for n in changed)
          + "); only safe flags can be: paths, logging, evaluation settings")
    if cfg not in built:
      cli.import_extra_modules(cfg.extra_modules)
      gan = gan_lib.build(cfg)
      shapes = jax.eval_shape(lambda: state_lib.create_replicas(
          gan, cfg.seed, cfg.num_seeds))
      sharding = NamedSharding(mesh, P())
      built.clear()
      built[cfg] = gan, jax.tree.map(
          lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
          shapes)
    return built[cfg][1]

  with jax.set_mesh(mesh):
    state, _, step = ckpts.restore(target, step)
  ckpts.close()
  gan = next(iter(built.values()))[0]
  num_seeds = gan.cfg.num_seeds
  if replica is None:
    return gan, state, step, mesh
  if not 0 <= replica < num_seeds:
    raise UserError(f"--replica={replica} but the run has {num_seeds} "
                    f"replica{'s' if num_seeds > 1 else ''} "
                    f"(0..{num_seeds - 1})")
  if num_seeds > 1:
    state = state_lib.replica(state, replica)
  return gan, state, step, mesh


def parse_labels(gan, labels, n: int) -> Optional[np.ndarray]:
  """--labels cycled to ``n`` (None: draw random labels)."""
  if not labels:
    return None
  if not gan.num_classes:
    raise UserError("--labels needs a conditional model; this run's is not")
  try:
    values = np.array([int(v) for v in labels], np.int32)
  except ValueError:
    raise UserError(f"--labels must be integers, got "
                    f"{','.join(labels)}") from None
  if values.min() < 0 or values.max() >= gan.num_classes:
    raise UserError(f"--labels must be in 0..{gan.num_classes - 1}, got "
                    f"{','.join(labels)}")
  return np.resize(values, n)


def generate(gan, state, mesh, z, y) -> np.ndarray:
  """G(z, y) in batches, as float32 numpy."""
  sampler = sampler_lib.Sampler(gan, mesh)
  out = []
  for i in range(0, len(z), _BATCH):
    out.append(sampler(state, z[i:i + _BATCH],
                       None if y is None else y[i:i + _BATCH]))
  return np.concatenate(out)


def draw(gan, state, mesh, n: int, seed: int, labels=None,
         interpolate: bool = False, steps: int = 8) -> Dict[str, np.ndarray]:
  """The arrays of one sample call (the npz contents), from ``seed`` alone."""
  key = jax.random.PRNGKey(seed)
  y = labels
  if y is None:
    y = gan.sample_labels(jax.random.fold_in(key, 1), (n,))
  y = None if y is None else jnp.asarray(y, jnp.int32)
  out: Dict[str, np.ndarray] = {}
  if not interpolate:
    z = gan.sample_z(jax.random.fold_in(key, 0), (n,))
    out["samples"] = generate(gan, state, mesh, z, y)
  else:
    if steps < 2:
      raise UserError(f"--interpolate_steps must be >= 2, got {steps}")
    z0 = gan.sample_z(jax.random.fold_in(key, 2), (n,))
    z1 = gan.sample_z(jax.random.fold_in(key, 3), (n,))
    ys = None if y is None else jnp.repeat(y, steps)
    for name, path in zip(("linear", "spherical"),
                          interp_lib.strips(z0, z1, steps, gan.z_support)):
      x = generate(gan, state, mesh, path.reshape(n * steps, -1), ys)
      out[name] = x.reshape((n, steps) + x.shape[1:])
    out["z0"], out["z1"] = np.asarray(z0), np.asarray(z1)
  if y is not None:
    out["labels"] = np.asarray(y)
  return out


def write(path: str, arrays: Dict[str, np.ndarray], gan, title: str):
  """FILE.npz: the arrays; FILE.png: a grid or, for toy data, a plot."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if path.endswith(".npz"):
    # Into a file object: np.savez given a name would add ".npz" to one
    # without it; atomic: a failed write keeps the file that was there.
    with writers.atomic_open(path, "wb") as f:
      np.savez(f, **arrays)
    return
  ds = gan.dataset
  if ds.kind == "toy":
    real = np.asarray(ds.sample(jax.random.PRNGKey(0), 20000)[0])
    if "samples" in arrays:
      plots.scatter_png(path, arrays["samples"], real, title, ds.modes)
    else:
      plots.paths_png(path, arrays["linear"], arrays["spherical"], real,
                      title + ": linear (solid) / spherical (dashed)")
    return
  if "samples" in arrays:
    image = plots.grid(arrays["samples"])
  else:  # Rows: pair 0 linear, pair 0 spherical, pair 1 linear, ...
    both = np.stack([arrays["linear"], arrays["spherical"]], 1)
    image = plots.grid(both.reshape((-1,) + both.shape[3:]),
                       rows=2 * both.shape[0])
  plots.save_png(path, image)


def check_out(out: Optional[str]) -> str:
  if not out:
    raise UserError("--out is required: FILE.png (picture) or FILE.npz "
                    "(arrays)")
  if not out.endswith(_EXTENSIONS):
    raise UserError(f"--out={out}: the file must end in .png or .npz")
  return out


def run_sample(workdir: str, out: str, num: int = 64,
               step: Optional[int] = None, labels=(), seed: int = 0,
               interpolate: bool = False, interpolate_steps: int = 8,
               replica: int = 0, overrides: Optional[Dict[str, Any]] = None
               ) -> Tuple[int, Dict[str, np.ndarray]]:
  """The CLI as a function: writes ``out``; returns (step, arrays)."""
  out = check_out(out)
  if num < 1:
    raise UserError(f"--num must be >= 1, got {num}")
  gan, state, step, mesh = load(workdir, step, replica, overrides)
  arrays = draw(gan, state, mesh, num, seed, parse_labels(gan, labels, num),
                interpolate, interpolate_steps)
  write(out, arrays, gan, f"{gan.dataset.name} step {step}")
  return step, arrays


def main(argv):
  del argv  # run_cli refuses positional arguments
  flags_lib.check_tool_flags("sample")
  step, arrays = run_sample(
      FLAGS.workdir, FLAGS.out, FLAGS.num, FLAGS.step, FLAGS.labels,
      FLAGS.seed, FLAGS.interpolate, FLAGS.interpolate_steps, FLAGS.replica,
      flags_lib.config_flags_given(tool_flags=("seed",)))
  shapes = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
  print(f"wrote {FLAGS.out} from step {step}: {shapes}")


if __name__ == "__main__":
  cli.run_cli(main)
