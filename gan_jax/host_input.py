"""The training loop's image batches, read on the host and placed on the mesh.

Its own module so that tools and scripts that run the compiled step (the
golden-loss recorder, benchmarks) feed it as training does without importing
the loop.
"""

from __future__ import annotations

import inspect

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from gan_jax import distributed
from gan_jax import steps as steps_lib
from gan_jax.errors import UserError


def _accepts(fn, name: str) -> bool:
  """Whether ``fn`` takes the keyword argument ``name``."""
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):  # no signature to read: try it
    return True
  return any(p.name == name or p.kind == p.VAR_KEYWORD for p in params)


class HostInput:
  """The loop's image batches, placed on the mesh; ``None`` for toy data.

  Full ``steps_per_loop`` chunks come from the datasets' background
  iterators (``dataset.iterator``), so reading the next chunk overlaps the
  current step; a partial chunk (the first after resuming mid-loop, the last)
  is read in place. Either way a chunk is ``dataset.batches(first, n, ...)``,
  a function of the step alone, so exact resume is unchanged. Close it (or
  use it as a context manager) to stop the reading threads.
  """

  def __init__(self, streams, cfg, sharding, prefetch: int = 2):
    self._streams = list(streams)
    self._cfg = cfg
    self._sharding = sharding
    self._prefetch = prefetch
    self._iters = None
    self._next = None  # the first step of the iterators' next chunk
    # The global batch rows this process's devices hold; passed only with
    # several processes (one process feeds them all).
    rows = None
    if self._streams:  # toy data: no host stream, maybe no sharding
      rows = distributed.process_rows(sharding.mesh.devices, cfg.batch_size)
    self._rows = {} if rows is None else {"rows": rows}
    for ds in self._streams:  # a user's dataset may take neither keyword
      for method in ("batches", "iterator"):
        fn = getattr(ds, method, None)
        if fn is not None and self._rows and not _accepts(fn, "rows"):
          raise UserError(
              f"dataset {cfg.dataset!r}: {method}() takes no rows= "
              f"argument, which multi-process training passes (the batch "
              f"rows of this process's devices; docs/data.md)")

  def _args(self):
    return self._cfg.d_steps, self._cfg.batch_size

  def _read(self, first: int, n: int):
    spl = self._cfg.steps_per_loop
    if n == spl and all(hasattr(ds, "iterator") for ds in self._streams):
      if self._iters is None or first != self._next:
        self.close()
        self._iters = [
            ds.iterator(first, spl, *self._args(), **self._rows,
                        **({"prefetch": self._prefetch}
                           if _accepts(ds.iterator, "prefetch") else {}))
            for ds in self._streams]
      self._next = first + spl
      return [next(it) for it in self._iters]
    return [ds.batches(first, n, *self._args(), **self._rows)
            for ds in self._streams]

  def __call__(self, first: int, n: int):
    """Steps ``[first, first + n)`` as global arrays (steps, [replicas,]
    d_steps, batch, ...)."""
    if not self._streams:
      return None
    parts = self._read(first, n)
    if len(parts) > 1:  # --num_seeds: (steps, replicas, k, B, ...)
      local = {k: np.stack([p[k] for p in parts], 1) for k in parts[0]}
    else:
      local = parts[0]
    return {k: jax.make_array_from_process_local_data(self._sharding, v)
            for k, v in local.items()}

  def close(self):
    for it in self._iters or ():
      it.close()
    self._iters = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def for_run(dataset, cfg, mesh) -> HostInput:
  """The training run's input: nothing to read for toy data, one stream of
  ``dataset``, or with ``--num_seeds`` one per replica (replica i reads the
  stream of seed + i), laid out (steps, [replicas,] d_steps, batch, ...)
  with the batch split over the mesh."""
  if dataset.kind == "toy":
    return HostInput([], cfg, None)
  if cfg.num_seeds > 1:
    streams = [dataset.with_seed(cfg.seed + i) for i in range(cfg.num_seeds)]
    spec = P(None, None, None, steps_lib.AXIS)
  else:
    streams, spec = [dataset], P(None, None, steps_lib.AXIS)
  return HostInput(streams, cfg, NamedSharding(mesh, spec))
