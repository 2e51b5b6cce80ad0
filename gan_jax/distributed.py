"""Joining a multi-process job with ``jax.distributed`` (``--distributed``).

One process per host (or per GPU/CPU slot) runs the same program. After
``jax.distributed.initialize``, ``jax.devices()`` lists the devices of all
processes, so the training mesh, and with it the global batch, spans them
all; each process feeds only its own devices' shard of host data.

* explicit: ``--coordinator_address=HOST:PORT --num_processes=N
  --process_id=I`` on every process (process 0 hosts the coordinator);
* automatic: under ``srun`` with several tasks (SLURM), ``mpirun`` with
  several ranks (Open MPI) or on a multi-host TPU slice, where JAX reads the
  cluster's environment itself (``jax.distributed.initialize()`` with no
  arguments).

CPU devices talk over gloo (``jax_cpu_collectives_implementation``), which
is what makes several processes on one machine work for tests.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Mapping, Optional

import numpy as np
from absl import logging

from gan_jax.errors import UserError, describe_os_error


def cluster_environment(env: Mapping[str, str] = os.environ
                        ) -> Optional[str]:
  """The multi-process launcher this process runs under, if any.

  Mirrors the environment variables JAX's own cluster detection reads
  (jax/_src/clusters), but only reports launches with more than one
  process, so a single ``sbatch`` task or TPU VM trains alone.
  """
  def count(name):
    try:
      return int(env.get(name, "1"))
    except ValueError:
      return 1

  slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
           "SLURM_PROCID", "SLURM_LOCALID")
  if all(v in env for v in slurm) and count("SLURM_NTASKS") > 1:
    return "slurm"
  if "OMPI_MCA_orte_hnp_uri" in env and count("OMPI_COMM_WORLD_SIZE") > 1:
    return "openmpi"
  hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES")
  if (hosts and len(hosts.split(",")) > 1) or env.get(
      "MEGASCALE_COORDINATOR_ADDRESS"):
    return "tpu"
  return None


def wait_for_coordinator(address: str, timeout: float) -> None:
  """Waits until ``address`` (HOST:PORT) accepts a TCP connection; a
  UserError after ``timeout`` seconds. (jax.distributed.initialize, left to
  time out by itself, aborts the process with a fatal error and a C++
  stack trace.)"""
  host, _, port = address.rpartition(":")
  try:
    port = int(port)
  except ValueError:
    raise UserError(f"--coordinator_address={address} must be HOST:PORT "
                    f"with a numeric port") from None
  deadline = time.monotonic() + timeout
  while True:
    try:
      with socket.create_connection((host.strip("[]"), port), timeout=2):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise UserError(
            f"the coordinator {address} (process 0) did not accept a "
            f"connection within --distributed_timeout={timeout:g} s "
            f"({describe_os_error(e)}): start process 0 first, or check "
            f"the address") from None
      time.sleep(0.5)


def initialize(mode: str = "auto", coordinator_address: Optional[str] = None,
               num_processes: int = 0, process_id: int = -1,
               env: Mapping[str, str] = os.environ,
               timeout: int = 300) -> bool:
  """Calls ``jax.distributed.initialize`` when asked or detected.

  Must run before anything touches a JAX backend. Returns whether it did.
  """
  explicit = bool(coordinator_address)
  if not explicit and (num_processes or process_id >= 0):
    raise UserError("--num_processes/--process_id need "
                    "--coordinator_address=HOST:PORT (process 0's address)")
  if mode == "off":
    if explicit:
      raise UserError("--distributed=off contradicts --coordinator_address; "
                      "drop one of them")
    return False
  if explicit:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise UserError(f"--coordinator_address needs --num_processes >= 1 and "
                      f"0 <= --process_id < --num_processes (got "
                      f"--num_processes={num_processes} "
                      f"--process_id={process_id})")
    if ":" not in coordinator_address:
      raise UserError(f"--coordinator_address={coordinator_address} must be "
                      f"HOST:PORT")
    kwargs = dict(coordinator_address=coordinator_address,
                  num_processes=num_processes, process_id=process_id,
                  initialization_timeout=int(timeout))
    if process_id > 0:
      wait_for_coordinator(coordinator_address, timeout)
  else:
    cluster = cluster_environment(env)
    if mode == "auto" and cluster is None:
      return False
    kwargs = dict(initialization_timeout=int(timeout))
    logging.info("jax.distributed: %s environment",
                 cluster or "JAX-detected")
  import jax  # pylint: disable=g-import-not-at-top
  # Cross-process collectives of CPU devices (no effect on GPU/TPU ones).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**kwargs)
  except (RuntimeError, ValueError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise UserError(f"jax.distributed.initialize failed: "
                    f"{type(e).__name__}: {first}") from e
  logging.info("process %d of %d; %d local and %d global devices",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True


def process_rows(devices, batch_size: int,
                 process_index: Optional[int] = None) -> Optional[np.ndarray]:
  """The rows of a global batch that this process feeds, in global order.

  The batch is split evenly over ``devices`` (the 1-D data mesh's devices,
  in mesh order); a process feeds the rows of the positions its own devices
  hold, which is what ``jax.make_array_from_process_local_data`` expects of
  it. Those positions are one block in process order on CPU and GPU hosts,
  but need not be where the mesh interleaves hosts (TPU slices' device
  order), and then "process p's block" would hand rows to the wrong
  devices: the same examples, but paired with other noise than the
  single-process run. ``None`` with one process (all rows).
  """
  import jax  # pylint: disable=g-import-not-at-top
  if process_index is None:
    if jax.process_count() == 1:
      return None
    process_index = jax.process_index()
  devices = list(np.ravel(np.asarray(devices, dtype=object)))
  per, rest = divmod(batch_size, len(devices))
  if rest:
    raise UserError(f"--batch_size={batch_size} must divide by the number "
                    f"of devices {len(devices)}")
  mine = [j for j, d in enumerate(devices) if d.process_index == process_index]
  if not mine:
    raise ValueError(f"process {process_index} holds none of the mesh's "
                     f"devices")
  return np.concatenate([j * per + np.arange(per, dtype=np.int64)
                         for j in mine])


# StopVote's codes, by precedence: go on, a signal (SIGNALLED + its
# number), a failed write of process 0's files.
CONTINUE, SIGNALLED, FAILED = 0, 100, 1000


class StopVote:
  """Whether any process asked to stop, agreed on by all at the same step.

  A preemption's SIGTERM reaches hosts at different moments, or one host
  only; a process that stopped by itself would leave the others waiting in
  the next step's collectives (and save nothing). Each loop boundary starts
  a one-element all-reduce (max) of the processes' codes (``CONTINUE``,
  ``SIGNALLED + signum``, ``FAILED``: process 0's own writes failed) and
  reads the
  one it started at the previous boundary, which has finished by then (it
  ran right after that boundary's call): the loop keeps a call in flight,
  and every process stops after the same step, one loop after the request.
  ``now`` agrees at once (startup). With one process, the code itself.
  """

  def __init__(self, mesh, axis: str):
    import jax  # pylint: disable=g-import-not-at-top
    self._multi = jax.process_count() > 1
    self._pending = None
    if self._multi:
      from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
      import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
      self._mesh = mesh
      self._sharding = NamedSharding(mesh, P(axis))
      self._local = len([d for d in np.ravel(mesh.devices)
                         if d.process_index == jax.process_index()])
      self._max = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, P()))

  def _start(self, code: int):
    import jax  # pylint: disable=g-import-not-at-top
    codes = jax.make_array_from_process_local_data(
        self._sharding, np.full((self._local,), int(code), np.int32),
        (self._mesh.size,))
    return self._max(codes)

  def __call__(self, code: int) -> int:
    """The verdict on the codes of the previous boundary; starts this
    boundary's (``CONTINUE`` at the first)."""
    if not self._multi:
      return int(code)
    decided = CONTINUE
    if self._pending is not None:
      decided = int(np.asarray(self._pending.addressable_data(0)))
    self._pending = self._start(code)
    return decided

  def now(self, code: int) -> int:
    """The processes' agreed code at once (a blocking all-reduce)."""
    if not self._multi:
      return int(code)
    return int(np.asarray(self._start(code).addressable_data(0)))
