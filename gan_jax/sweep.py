"""Hyperparameter sweeps: ``python -m gan_jax.sweep --flagfile=SWEEP.flags``.

A sweep is flags only (no code): a base experiment flagfile
(``--sweep_base``), axes (``--sweep_grid``, ``--sweep_random``,
``--sweep_seeds``), fixed overrides (``--sweep_set``) and a directory
(``--sweep_dir``). Its runs are the product of the grid axes, the random
points and the seeds; each is one ``python -m gan_jax.main`` command with its
own workdir ``SWEEP_DIR/<name>``, the name spelling its settings
(``g_optimizer.lr=0.001,seed=1``), so a rerun finds every run where it left it:
finished runs (metrics logged at --num_steps) are skipped and interrupted
ones resume from their checkpoints (gan_jax.main does that by itself).

Runs train as local subprocesses, ``--sweep_workers`` at a time; a failed run
is reported with its error line and the others go on. Then the last
metrics.jsonl record of each run goes to ``results.csv``, a Markdown table
``results.md`` (mean ± standard error over seeds, grouped by the other axes)
and a plot of ``--sweep_metric`` against ``--sweep_plot_axis``.
``--sweep_print_only`` prints the commands instead (for job arrays).
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import hashlib
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import flags

from gan_jax import flags as flags_lib
from gan_jax import writers
from gan_jax.errors import (Terminated, UserError, describe_os_error, die,
                            flag_error_line, undecodable_flagfile_line)

FLAGS = flags.FLAGS

# Shown in results.md after --sweep_metric, when the runs logged them.
TABLE_METRICS = ("modes", "high_quality", "reverse_kl", "fid", "kid",
                 "inception_score", "d_loss", "g_loss")
_DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
# Flags a sweep sets itself, or that make no sense per run.
# Set by the sweep for every run it starts (--progress: off in the runs'
# logs); an axis or --sweep_set of them would be overridden.
_RESERVED = ("workdir", "progress")


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run: its settings (axis -> value) and command line."""
  name: str
  settings: Tuple[Tuple[str, str], ...]
  workdir: str
  args: Tuple[str, ...]  # gan_jax.main arguments
  num_steps: int
  seeds: Tuple[int, ...] = ()  # the seeds a --num_seeds run trains


# ------------------------------------------------------------ the sweep spec
def check_flag(name: str, value: Optional[str] = None, where: str = "axis"):
  """A sweep may only set training flags, to values they accept."""
  if name in _RESERVED:
    raise UserError(f"sweep {where} --{name}: the sweep sets it per run")
  if name not in flags_lib.SAFE:
    raise UserError(f"sweep {where} names unknown flag --{name} (not a "
                    f"gan_jax.main flag; see python -m gan_jax.main --help)")
  if value is not None:
    try:
      why = flags_lib.out_of_bounds(name, FLAGS[name].parser.parse(value))
    except (ValueError, TypeError) as e:
      why = str(e).splitlines()[0] if str(e) else "bad value"
    if why:
      raise UserError(f"sweep {where} --{name}={value}: {why}")


def _split_axis(spec: str, what: str) -> Tuple[str, str]:
  name, sep, rest = spec.partition(":")
  if not sep or not name or not rest:
    raise UserError(f"--{what}={spec}: expected FLAG:VALUES")
  return name.strip().lstrip("-"), rest


def parse_grid(spec: str) -> Tuple[str, List[str]]:
  """``FLAG:V1,V2,...`` -> (flag, values)."""
  name, rest = _split_axis(spec, "sweep_grid")
  values = [v.strip() for v in rest.split(",")]
  if "" in values:  # "1e-4,,1e-3": a typo, not a setting to drop silently
    raise UserError(f"--sweep_grid={spec}: empty value in axis {name}")
  for v in values:
    check_flag(name, v)
  if len(set(values)) != len(values):
    raise UserError(f"--sweep_grid={spec}: repeated value")
  return name, values


def format_value(x: float) -> str:
  """Short, stable text of a drawn number (it is also the run's value)."""
  return f"{x:.4g}"


def parse_random(specs: Sequence[str], n: int, seed: int
                 ) -> Tuple[List[str], List[List[str]]]:
  """``FLAG:DIST:LO:HI`` specs -> (flags, n points of values), drawn jointly
  from ``np.random.default_rng(seed)`` so a rerun draws the same points."""
  if specs and n < 1:
    raise UserError(f"--sweep_num_random must be >= 1, got {n}")
  parsed = []
  for spec in specs:
    name, rest = _split_axis(spec, "sweep_random")
    dist, _, params = rest.partition(":")
    parts = params.split(":") if params else []
    if any(not p.strip() for p in parts):  # "choice:a::b", "uniform:1:"
      raise UserError(f"--sweep_random={spec}: empty value in axis {name}")
    if dist not in _DISTRIBUTIONS:
      raise UserError(f"--sweep_random={spec}: distribution must be one of "
                      f"{', '.join(_DISTRIBUTIONS)}")
    if dist == "choice":
      if not parts:
        raise UserError(f"--sweep_random={spec}: choice needs values")
      for v in parts:
        check_flag(name, v)
    else:
      try:
        lo, hi = (float(p) for p in parts)
      except ValueError:
        raise UserError(f"--sweep_random={spec}: expected "
                        f"FLAG:{dist}:LOW:HIGH with numbers") from None
      if not lo <= hi or (dist == "loguniform" and lo <= 0):
        raise UserError(f"--sweep_random={spec}: need 0 < LOW <= HIGH for "
                        f"loguniform, LOW <= HIGH otherwise")
      if dist == "int" and not all(math.isfinite(v) and v == int(v)
                                   and abs(v) < 2**62 for v in (lo, hi)):
        raise UserError(f"--sweep_random={spec}: int needs whole-number "
                        f"bounds below 2**62 in size")
      for end in (lo, hi):
        check_flag(name, str(int(end)) if dist == "int" else format_value(end))
      if dist != "int" and isinstance(FLAGS[name].parser,
                                      flags.IntegerParser):
        raise UserError(f"--sweep_random={spec}: --{name} takes integers; "
                        f"use {name}:int:LOW:HIGH")
    parsed.append((name, dist, parts))
  rng = np.random.default_rng(seed)
  points = []
  for _ in range(n if specs else 0):
    point = []
    for name, dist, parts in parsed:
      if dist == "choice":
        point.append(parts[int(rng.integers(len(parts)))])
      elif dist == "int":
        point.append(str(int(rng.integers(int(float(parts[0])),
                                          int(float(parts[1])) + 1))))
      elif dist == "uniform":
        point.append(format_value(rng.uniform(float(parts[0]),
                                              float(parts[1]))))
      else:
        point.append(format_value(math.exp(rng.uniform(
            math.log(float(parts[0])), math.log(float(parts[1]))))))
    points.append(point)
  return [p[0] for p in parsed], points


MAX_SEEDS = 10_000  # seeds in one sweep


class _NotStarted(Exception):
  """A run not started because the sweep is stopping."""


# A run's exit codes after an orderly stop on SIGINT / SIGTERM.
STOPPED_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM)


def parse_seeds(values: Sequence[str]) -> List[str]:
  """``0,1,5-9`` -> ["0", "1", "5", ..., "9"]."""
  out = []
  if any(not v.strip() for v in values):  # "0,,1": absl keeps the ""
    raise UserError(f"--sweep_seeds={','.join(values)}: empty value")
  for v in values:
    lo, sep, hi = v.partition("-")
    try:
      seeds = range(int(lo), int(hi) + 1) if sep else [int(v)]
    except ValueError:
      raise UserError(f"--sweep_seeds: {v!r} is not an integer or a range "
                      f"like 0-9") from None
    if not seeds:
      raise UserError(f"--sweep_seeds: the range {v!r} is empty (LOW-HIGH "
                      f"with LOW <= HIGH)")
    if len(out) + len(seeds) > MAX_SEEDS:  # before listing them
      raise UserError(f"--sweep_seeds: more than {MAX_SEEDS:,} seeds "
                      f"({v!r})")
    why = flags_lib.out_of_bounds("seed", seeds[-1]) or (
        flags_lib.out_of_bounds("seed", seeds[0]))
    if why:
      raise UserError(f"--sweep_seeds: {v!r}: a seed {why}")
    out.extend(str(s) for s in seeds)
  if len(set(out)) != len(out):
    raise UserError("--sweep_seeds: repeated seed")
  return out


def expand_flags(args: Sequence[str], check: bool = True) -> Dict[str, str]:
  """The flag values a gan_jax.main command line sets (flagfiles expanded,
  last one wins), as text. Unknown flags and flags the sweep sets itself
  are errors (``check``; else left out)."""
  try:
    flat = FLAGS.read_flags_from_files(list(args), force_gnu=False)
  except flags.Error as e:
    raise UserError(flag_error_line(e)) from e
  except UnicodeDecodeError as e:
    raise UserError(undecodable_flagfile_line(list(args), e)) from e
  values = {}
  for arg in flat:
    if not arg.startswith("-"):
      continue
    name, sep, value = arg.lstrip("-").partition("=")
    if not sep:
      if name in flags_lib.SAFE:
        value = "true"
      elif name.startswith("no") and name[2:] in flags_lib.SAFE:
        name, value = name[2:], "false"
    if check and name.startswith("sweep_"):
      # A sweep file as the base (or included by it) ran default runs.
      raise UserError(f"the base flags set --{name}: --sweep_base must be "
                      f"a training flagfile, not a sweep file")
    if name in flags_lib.NOT_IN_CONFIG:
      continue
    if check:
      check_flag(name, value, where="base flag")
    elif name not in flags_lib.SAFE or name in _RESERVED:
      continue
    values[name] = value
  return values


def run_name(settings: Sequence[Tuple[str, str]]) -> str:
  """``g_optimizer.lr=0.001,seed=1``: readable, filesystem-safe and stable."""
  name = ",".join(f"{k}={v}" for k, v in settings) or "run"
  name = re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)
  if len(name) > 120:  # keep it a legal file name, still unique
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    name = f"{name[:100]}-{digest}"
  return name


@dataclasses.dataclass
class Sweep:
  """The parsed sweep: axes in order (grid, random, seed) and its runs."""
  base: str
  directory: str
  axes: List[Tuple[str, List[str]]]
  runs: List[Run]


def build(base: str, directory: str, grid: Sequence[str] = (),
          random: Sequence[str] = (), num_random: int = 4, random_seed: int = 0,
          seeds: Sequence[str] = (), overrides: Sequence[str] = (),
          vectorize_seeds: bool = False) -> Sweep:
  """Checks the whole spec, then lists the runs; nothing is run."""
  if not base:
    raise UserError("--sweep_base is required (the experiment flagfile every "
                    "run starts from)")
  if not directory:
    raise UserError("--sweep_dir is required (where the runs' workdirs and "
                    "the results go)")
  fixed, fixed_names = [], []
  for item in overrides:
    name, sep, value = item.partition("=")
    name = name.strip().lstrip("-")
    if not sep:
      raise UserError(f"--sweep_set={item}: expected FLAG=VALUE")
    if name in fixed_names:
      raise UserError(f"--sweep_set sets --{name} twice")
    check_flag(name, value, where="--sweep_set")
    fixed.append(f"--{name}={value}")
    fixed_names.append(name)
  grid_axes = [parse_grid(spec) for spec in grid]
  random_names, points = parse_random(random, num_random, random_seed)
  seed_values = parse_seeds(seeds)
  names = [n for n, _ in grid_axes] + random_names + (
      ["seed"] if seed_values else [])
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise UserError(f"sweep axis --{duplicates[0]} is given twice (for seeds "
                    f"use --sweep_seeds alone)")
  both = [n for n in names if n in fixed_names]
  if both:
    raise UserError(f"--{both[0]} is both a sweep axis and a --sweep_set "
                    f"override; the axis would win over the override")
  if vectorize_seeds:
    if "num_seeds" not in flags_lib.SAFE:
      raise UserError("--sweep_vectorize_seeds needs the --num_seeds flag "
                      "(vectorized replicas), which this version lacks")
    if "num_seeds" in names or "num_seeds" in fixed_names:
      raise UserError("--sweep_vectorize_seeds sets --num_seeds itself; "
                      "drop it from the axes and --sweep_set")
    ints = [int(s) for s in seed_values]
    if not ints or ints != list(range(ints[0], ints[0] + len(ints))):
      raise UserError("--sweep_vectorize_seeds needs --sweep_seeds to be "
                      "consecutive, e.g. 0-9 (--num_seeds trains seed .. "
                      "seed+N-1)")

  # Every combination: grid product x random points x seeds.
  combos: List[List[Tuple[str, str]]] = [[]]
  for name, values in grid_axes:
    combos = [c + [(name, v)] for c in combos for v in values]
  if random_names:
    combos = [c + list(zip(random_names, p)) for c in combos for p in points]
  seed_groups = [[s] for s in seed_values] or [[]]
  if vectorize_seeds:
    seed_groups = [seed_values]

  base_values = expand_flags([f"--flagfile={base}"] + fixed)
  runs = []
  for combo in combos:
    for group in seed_groups:
      settings = list(combo)
      args = [f"--flagfile={base}"] + fixed + [f"--{k}={v}" for k, v in combo]
      if len(group) == 1:
        settings.append(("seed", group[0]))
        args.append(f"--seed={group[0]}")
      elif group:
        settings.append(("seed", f"{group[0]}-{group[-1]}"))
        args += [f"--seed={group[0]}", f"--num_seeds={len(group)}"]
      name = run_name(settings)
      workdir = os.path.join(directory, name)
      resolved = {**base_values, **dict(combo)}
      # As absl parses it (0x100 included).
      num_steps = int(FLAGS["num_steps"].parser.parse(
          str(resolved.get("num_steps", FLAGS["num_steps"].default))))
      runs.append(Run(name=name, settings=tuple(settings), workdir=workdir,
                      args=tuple(args + [f"--workdir={workdir}"]),
                      num_steps=num_steps,
                      seeds=tuple(int(s) for s in group)))
  names_seen = [r.name for r in runs]
  if len(set(names_seen)) != len(names_seen):
    raise UserError("two runs would share a workdir name (random draws "
                    "repeat after rounding); widen the ranges or use fewer "
                    "points")
  axes = [(n, v) for n, v in grid_axes]
  axes += [(n, [p[i] for p in points]) for i, n in enumerate(random_names)]
  if seed_values:
    axes.append(("seed", seed_values))
  return Sweep(base=base, directory=directory, axes=axes, runs=runs)


# ------------------------------------------------------------------ running
def last_record(workdir: str) -> Optional[Dict[str, Any]]:
  """The last complete line of ``workdir/metrics.jsonl``."""
  last = None
  for last in writers.iter_records(os.path.join(workdir, "metrics.jsonl")):
    pass
  if last is not None:  # writers.py spells non-finite values as strings
    last = {k: float(v) if v in ("inf", "-inf", "nan") else v
            for k, v in last.items()}
  return last


def is_finished(run: Run) -> bool:
  """The run logged its final step (train.py always logs at --num_steps)."""
  record = last_record(run.workdir)
  return record is not None and record.get("step", -1) >= run.num_steps


def typed_config(args: Sequence[str]) -> flags_lib.Config:
  """The Config a gan_jax.main command line trains."""
  values = {name: FLAGS[name].parser.parse(text)
            for name, text in expand_flags(args, check=False).items()}
  return flags_lib.defaults().replace(**values)


def settings_mismatch(run: Run) -> Optional[str]:
  """Why a finished run's workdir does not hold this sweep's run (its
  flags.txt is of another config schema or trains other structural
  settings), or None."""
  path = os.path.join(run.workdir, "flags.txt")
  if not os.path.exists(path):
    return None
  try:
    flags_lib.check_schema(flags_lib.flagfile_schema(path), run.workdir,
                           "use another --sweep_dir or remove it")
  except UserError as e:
    return str(e)
  try:
    saved = typed_config([f"--flagfile={path}"])
  except (UserError, ValueError, flags.Error) as e:
    why = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return (f"{run.workdir} holds a finished run whose {path} cannot be "
            f"read as flags ({why}); use another --sweep_dir or remove it")
  trial = typed_config(run.args)
  diffs = flags_lib.structural_differences(saved, trial)
  if not diffs:
    return None
  return (f"{run.workdir} holds a finished run with other settings: "
          f"{flags_lib.describe_differences(saved, trial, diffs)}; use "
          f"another --sweep_dir or remove it")


def error_line(log_path: str, returncode: int, offset: int = 0) -> str:
  """The run's ``error: ...`` line, else the last line of its log, from
  ``offset`` on (this attempt's part of an appended log); a run killed by a
  signal without a line of its own says so."""
  try:
    with open(log_path, "rb") as f:
      f.seek(offset)
      text = f.read().decode(errors="replace")
    lines = [l.strip() for l in text.splitlines() if l.strip()]
  except OSError:
    lines = []
  errors = [l for l in lines if l.startswith("error:")]
  if errors:
    return errors[-1]
  if returncode is not None and returncode < 0:
    try:
      name = signal.Signals(-returncode).name
    except ValueError:
      name = f"signal {-returncode}"
    return f"killed by {name}" + (f" (last line: {lines[-1]})" if lines
                                  else "")
  return lines[-1] if lines else f"exit code {returncode}"


def main_command(run: Run, python: str = "python") -> List[str]:
  return [python, "-m", "gan_jax.main", *run.args]


def execute(runs: Sequence[Run], workers: int, out=sys.stdout
            ) -> Dict[str, Tuple[str, str]]:
  """Trains ``runs`` (``workers`` subprocesses at a time).

  Returns run name -> (status, detail), status one of finished, skipped,
  failed, interrupted. Each run's console output goes to WORKDIR/train.log.
  """
  results: Dict[str, Tuple[str, str]] = {}
  todo = []
  for run in runs:
    if is_finished(run):
      mismatch = settings_mismatch(run)
      results[run.name] = (("failed", mismatch) if mismatch
                           else ("skipped", "already finished"))
      if mismatch:
        print(f"{run.name}: failed ({mismatch})", file=out, flush=True)
    else:
      todo.append(run)
  lock = threading.Lock()
  running = set()  # the runs' processes, for a SIGTERM to the sweep
  stopping = threading.Event()  # set once the sweep was interrupted
  done = [0]
  # Runs that differ only in --seed compile the same programs: share them
  # through JAX's persistent compilation cache.
  env = dict(os.environ)
  if runs:
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
        os.path.dirname(os.path.abspath(runs[0].workdir)), ".jax_cache"))
  skipped = sum(1 for status, _ in results.values() if status == "skipped")
  if skipped:
    print(f"{skipped} of {len(runs)} runs already finished; "
          f"skipping them", file=out, flush=True)

  def one(run: Run):
    log_path = os.path.join(run.workdir, "train.log")
    resume = os.path.exists(os.path.join(run.workdir, "checkpoints"))
    start = time.time()
    # Each run is one process on this machine, even inside a multi-task
    # SLURM allocation.
    cmd = main_command(run, sys.executable) + ["--noprogress",
                                               "--distributed=off"]
    offset = 0
    try:
      os.makedirs(run.workdir, exist_ok=True)
      with open(log_path, "a") as log:
        # This attempt's command heads its part of the log (a rerun
        # appends), and its error line is looked for from there on.
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                  f"{shlex.join(cmd)}\n")
        log.flush()
        offset = log.tell()
        with lock:  # no new run once the sweep is stopping
          if stopping.is_set():
            raise _NotStarted()
          proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env)
          running.add(proc)
        try:
          rc = proc.wait()
        finally:
          with lock:
            running.discard(proc)
      os_error = None
    except _NotStarted:  # the sweep is stopping: left for the rerun
      return
    except OSError as e:  # e.g. the run's workdir is a file: this run fails
      rc, os_error = None, describe_os_error(e)
    seconds = time.time() - start
    finished = os_error is None and is_finished(run)
    if os_error is not None:
      status = ("failed", os_error)
    elif rc in STOPPED_CODES and not finished:
      # The run was signalled (with the sweep, or alone) and stopped in
      # order, its checkpoint saved.
      status = ("interrupted", "stopped by a signal before --num_steps; "
                "rerun the sweep to resume it")
    elif rc != 0 and rc not in STOPPED_CODES:
      status = ("failed", error_line(log_path, rc, offset))
    elif finished:
      status = ("finished", f"{seconds:.1f}s" + (" (resumed)" if resume
                                                  else ""))
    else:
      status = ("interrupted", "stopped before --num_steps; rerun the "
                "sweep to resume it")
    with lock:
      done[0] += 1
      results[run.name] = status
      print(f"[{done[0]}/{len(todo)}] {run.name}: {status[0]} "
            f"({status[1]})", file=out, flush=True)

  pool = concurrent.futures.ThreadPoolExecutor(max(1, workers))
  try:
    for future in [pool.submit(one, run) for run in todo]:
      future.result()
  except (KeyboardInterrupt, Terminated) as e:
    # Ctrl-C reached the runs too (the terminal signals the process
    # group); a SIGTERM to the sweep alone is passed on. Either way they
    # save a checkpoint and stop, and the sweep waits for them.
    with lock:
      stopping.set()
      if isinstance(e, Terminated):
        for proc in running:
          if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    pool.shutdown(wait=True, cancel_futures=True)
    raise
  pool.shutdown()
  return results


# ---------------------------------------------------------------- results
def run_records(run: Run) -> List[Tuple[Dict[str, str], Dict[str, Any]]]:
  """(settings, final metrics) per seed of a run: a --num_seeds run logs
  ``name/seed_S`` per replica and is split back into one row per seed."""
  record = last_record(run.workdir)
  if record is None:
    return []
  settings = dict(run.settings)
  if len(run.seeds) <= 1:
    return [(settings, record)]
  rows = []
  for s in run.seeds:
    suffix = f"/seed_{s}"
    metrics = {k[:-len(suffix)]: v for k, v in record.items()
               if k.endswith(suffix)}
    metrics.update({k: v for k, v in record.items()
                    if k in ("step", "steps_per_sec")})
    rows.append(({**settings, "seed": str(s)}, metrics))
  return rows


def mean_se(values: Sequence[float]) -> Tuple[float, float]:
  """Mean and standard error of the mean (std with ddof=1 over sqrt n)."""
  x = np.asarray(values, np.float64)
  if x.size < 2:
    return float(x.mean()), float("nan")
  with np.errstate(invalid="ignore"):  # inf (e.g. reverse KL, no mode hit)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def _fmt(x: float) -> str:
  return f"{x:.4g}"


def aggregate(sweep: Sweep, statuses: Dict[str, Tuple[str, str]],
              metric: str) -> Dict[str, Any]:
  """Writes results.csv and results.md; returns the grouped table."""
  axis_names = [n for n, _ in sweep.axes]
  rows = []  # (workdir name, settings, status, detail, metrics)
  for run in sweep.runs:
    status, detail = statuses.get(run.name, ("not run", ""))
    finished = status in ("finished", "skipped")
    records = run_records(run) if finished else []
    if not records:
      rows.append((run.name, dict(run.settings), status, detail, {}))
    for settings, metrics in records:
      rows.append((run.name, settings, status, detail, metrics))
  metric_keys = sorted({k for *_, m in rows for k in m
                        if k != "step" and "/seed_" not in k})
  os.makedirs(sweep.directory, exist_ok=True)
  with writers.atomic_open(os.path.join(sweep.directory, "results.csv"),
                          newline="") as f:
    w = csv.writer(f)
    w.writerow(["run"] + axis_names + ["status", "step"] + metric_keys)
    for name, settings, status, detail, metrics in rows:
      w.writerow([name]
                 + [settings.get(a, "") for a in axis_names]
                 + [status if status != "failed" else f"failed: {detail}",
                    metrics.get("step", "")]
                 + [metrics.get(k, "") for k in metric_keys])

  # Grouped by the non-seed axes, in sweep order.
  group_axes = [a for a in axis_names if a != "seed"]
  shown = [metric] if metric in metric_keys else []
  shown += [m for m in TABLE_METRICS if m in metric_keys and m != metric]
  groups: Dict[Tuple[str, ...], List[Dict[str, Any]]] = {}
  totals: Dict[Tuple[str, ...], int] = {}
  for _, settings, _, _, metrics in rows:
    key = tuple(settings.get(a, "") for a in group_axes)
    groups.setdefault(key, [])
    totals[key] = totals.get(key, 0) + 1
    if metrics:
      groups[key].append(metrics)
  table = []
  for key, members in groups.items():
    cells = {}
    for m in shown:
      vals = [r[m] for r in members if isinstance(r.get(m), (int, float))]
      cells[m] = mean_se(vals) if vals else None
    table.append((key, len(members), totals[key], cells))

  lines = [f"# Sweep {os.path.basename(os.path.normpath(sweep.directory))}",
           "", f"Base: `{sweep.base}`. Final metrics (last metrics.jsonl "
           "record of each run); mean ± standard error over seeds.", ""]
  header = group_axes + ["runs"] + shown
  lines.append("| " + " | ".join(header) + " |")
  lines.append("|" + "---|" * len(header))
  for key, n, total, cells in table:
    out = list(key) + [f"{n}/{total}"]
    for m in shown:
      if cells[m] is None:
        out.append("–")
      else:
        mean, se = cells[m]
        out.append(_fmt(mean) if math.isnan(se) else
                   f"{_fmt(mean)} ± {se:.2g}")
    lines.append("| " + " | ".join(out) + " |")
  failed = [(r.name, statuses[r.name][1]) for r in sweep.runs
            if statuses.get(r.name, ("",))[0] == "failed"]
  if failed:
    lines += ["", "Failed runs:", ""]
    lines += [f"- `{name}`: {detail}" for name, detail in failed]
  with writers.atomic_open(os.path.join(sweep.directory, "results.md")) as f:
    f.write("\n".join(lines) + "\n")
  return {"axes": group_axes, "metrics": shown, "table": table,
          "rows": rows, "markdown": "\n".join(lines)}


def _as_floats(values: Sequence[str]) -> Optional[List[float]]:
  try:
    return [float(v) for v in values]
  except ValueError:
    return None


def plot(sweep: Sweep, rows, metric: str, axis: Optional[str]
         ) -> Optional[str]:
  """``metric`` against ``axis`` (mean ± s.e. over seeds), one line per
  setting of the other non-seed axes. Returns the PNG's path."""
  varying = [n for n, v in sweep.axes if n != "seed" and len(set(v)) > 1]
  axis = axis or (varying[0] if varying else None)
  if axis is None or not any(metric in m for *_, m in rows):
    return None
  others = [n for n, _ in sweep.axes if n not in ("seed", axis)]
  lines: Dict[Tuple[str, ...], Dict[str, List[float]]] = {}
  for _, settings, _, _, metrics in rows:
    value = metrics.get(metric)
    if (not isinstance(value, (int, float)) or not math.isfinite(value)
        or axis not in settings):
      continue
    key = tuple(settings.get(o, "") for o in others)
    lines.setdefault(key, {}).setdefault(settings[axis], []).append(value)
  if not lines:  # no run has a finite value of the metric: nothing to draw
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
  all_x = [x for pts in lines.values() for x in pts]
  numeric = _as_floats(all_x) is not None
  categories = list(dict.fromkeys(all_x))
  for key, pts in lines.items():
    xs = list(pts)
    if numeric:
      order = sorted(range(len(xs)), key=lambda i: float(xs[i]))
      xs = [xs[i] for i in order]
      pos = [float(x) for x in xs]
    else:
      pos = [categories.index(x) for x in xs]
    stats = [mean_se(pts[x]) for x in xs]
    label = ", ".join(f"{o}={k}" for o, k in zip(others, key)) or None
    ax.errorbar(pos, [m for m, _ in stats],
                yerr=[0.0 if math.isnan(s) else s for _, s in stats],
                marker="o", capsize=3, label=label)
  if numeric:
    xf = [float(x) for x in all_x]
    if min(xf) > 0 and max(xf) / min(xf) >= 100:
      ax.set_xscale("log")
  else:
    ax.set_xticks(range(len(categories)), categories)
  ax.set_xlabel(axis)
  ax.set_ylabel(metric)
  ax.set_title(f"{metric} vs {axis} (mean ± s.e. over seeds)", fontsize=9)
  if any(k for k in lines):
    ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(sweep.directory, f"{re.sub(r'[^A-Za-z0-9_.-]', '_', metric)}"
                      f"_vs_{axis}.png")
  try:
    with writers.atomic_open(path, "wb") as f:
      fig.savefig(f, format="png")
  finally:
    plt.close(fig)
  return path


# --------------------------------------------------------------------- main
def sweep_from_flags() -> Sweep:
  f = FLAGS
  return build(f.sweep_base, f.sweep_dir, f.sweep_grid, f.sweep_random,
               f.sweep_num_random, f.sweep_seed, f.sweep_seeds, f.sweep_set,
               f.sweep_vectorize_seeds)


def main(argv):
  del argv  # run_cli refuses positional arguments
  flags_lib.check_tool_flags("sweep")
  sweep = sweep_from_flags()
  axis = FLAGS.sweep_plot_axis
  if axis and axis not in [n for n, _ in sweep.axes]:
    raise UserError(f"--sweep_plot_axis={axis} is not an axis of the sweep "
                    f"({', '.join(n for n, _ in sweep.axes) or 'none'})")
  if FLAGS.sweep_print_only:
    for run in sweep.runs:
      print(" ".join(shlex.quote(a) for a in main_command(run)))
    return
  print(f"sweep: {len(sweep.runs)} runs in {sweep.directory}, "
        f"{FLAGS.sweep_workers} at a time", flush=True)
  statuses = execute(sweep.runs, FLAGS.sweep_workers)
  result = aggregate(sweep, statuses, FLAGS.sweep_metric)
  png = plot(sweep, result["rows"], FLAGS.sweep_metric, axis)
  print(result["markdown"])
  print(f"results: {os.path.join(sweep.directory, 'results.csv')}, "
        f"results.md" + (f", {os.path.basename(png)}" if png else ""))
  failed = [n for n, (s, _) in statuses.items() if s == "failed"]
  if failed:
    die(f"{len(failed)} of {len(sweep.runs)} runs failed (see results.md); "
        f"first: {failed[0]}: {statuses[failed[0]][1]}", code=1)


def run():
  from gan_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run_cli(main, interrupted=(
      "interrupted; the running runs saved checkpoints: rerun the same "
      "command to resume the sweep"))


if __name__ == "__main__":
  run()
