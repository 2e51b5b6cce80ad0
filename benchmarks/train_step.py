"""Benchmark of gan_jax's compiled train step against a PyTorch reference.

One step = one D update + one G update (``--d_steps=1``), as
``gan_jax.steps.make_train_step`` compiles it: ``--steps`` steps fused in one
jitted ``lax.scan`` with the state donated, timed warm; the rate is the
median over ``--repeats`` calls. The PyTorch reference
(``torch_reference.py``, same architectures and update) is timed in the same
run, interleaved call by call, and the ratio is the median of the per-round
ratios, so a slow moment of the machine hits both sides of a pair. Sustained
load does not cancel: PyTorch's OpenMP threads lose more to other processes
than XLA's, and the ratio rises (2.35 instead of 1.12 once, session 9). A
round-to-round spread of the ratio above ``NOISY_SPREAD`` marks the row
``noisy`` (JSON) and prints a note: rerun on an idle machine.

On a GPU both sides run float32 as JAX does by default there: TF32 in
matrix products and convolutions (the reference sets
``torch.set_float32_matmul_precision('high')``, cuDNN TF32 and
``cudnn.benchmark``); each JSON line records the precisions.

Cases (``--cases``):
  dcgan64, dcgan256  DCGAN on 28x28x1 images (experiments/dcgan_mnist.flags)
                     at batch 64 and 256; synthetic image batches resident on
                     the device, so no dataset is needed.
  toy                the PacGAN toy MLP pair (experiments/gan_ring.flags) at
                     batch 100, 2-D ring data sampled on device.

Each case prints one JSON line (``{"case": ..., "steps_per_sec": ...}``)
and a table at the end. FLOPs per step are the model's: every product of
the matrix multiplications and convolutions of one step of the identical
update, counted by PyTorch's ``FlopCounterMode`` on the reference (a dense
convolution counts all its output positions, padding included, as PyTorch
and the papers count), so they do not depend on how gan_jax computes a
layer. Without PyTorch they come from XLA's cost analysis of the compiled
program (``xla_flops_per_step``, always reported: it skips products with
padding and counts elementwise work, so it moves with the formulation of a
layer). ``matmul_fraction`` is the achieved FLOP rate over a float32
4096x4096 matrix product timed in the same run (or ``--matmul_gflops``).

  python benchmarks/train_step.py            # all cases; torch if installed
  python benchmarks/train_step.py --cases=toy --steps=2 --no-torch
  python benchmarks/train_step.py --compute_dtype=float32,bfloat16
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gan_jax import flags as flags_lib  # noqa: E402
from gan_jax import gan as gan_lib  # noqa: E402
from gan_jax import state as state_lib  # noqa: E402
from gan_jax import steps as steps_lib  # noqa: E402
from gan_jax.data import images as images_lib  # noqa: E402
from gan_jax.errors import UserError  # noqa: E402

CASES = {
    "dcgan64": dict(flagfile="experiments/dcgan_mnist.flags", batch_size=64,
                    steps=10),
    "dcgan256": dict(flagfile="experiments/dcgan_mnist.flags",
                     batch_size=256, steps=5),
    "toy": dict(flagfile="experiments/gan_ring.flags", batch_size=100,
                steps=100),
    # The paper's DCGAN resolution (G 4 -> 8 -> 16 -> 32 -> 64, RGB): the
    # issue's GPU case. Not in the default list (minutes per step on 2 CPU
    # cores); run it with --cases=dcgan64px on a GPU.
    "dcgan64px": dict(flagfile="experiments/dcgan_mnist.flags",
                      batch_size=256, steps=20, image_shape=(64, 64, 3)),
}
IMAGE_SHAPE = (28, 28, 1)  # MNIST-size cases


def config_from_flagfile(path: str, **overrides) -> flags_lib.Config:
  """The config a flagfile describes (flag defaults plus its lines)."""
  values: Dict[str, Any] = {}
  with open(os.path.join(REPO, path)) as f:
    for line in f:
      line = line.strip()
      if not line.startswith("--"):
        continue
      name, eq, value = line[2:].partition("=")
      if not eq:
        if name not in flags_lib.SAFE and name.startswith("no"):
          values[name[2:]] = False
        else:
          values[name] = True
      else:
        values[name] = flags_lib.FLAGS[name].parser.parse(value)
  values.update(overrides)
  return flags_lib.defaults(**values)


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
  """Measured float32 n x n matrix product rate (GFLOP/s), best of repeats."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  f = jax.jit(jnp.matmul)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best / 1e9


@functools.lru_cache(maxsize=None)
def cpu_description() -> str:
  """The host CPU as /proc/cpuinfo names it, with family/model and its
  widest vector extension: the VM behind a name can change between runs
  (docs/benchmarks.md, Machine)."""
  info: Dict[str, str] = {}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip()
        if key and key not in info:
          info[key] = value.strip()
        if not line.strip() and info:
          break  # the first processor is enough
  except OSError:
    return "unknown CPU"
  flags = info.get("flags", "").split()
  isa = ("avx512" if "avx512f" in flags else "avx2" if "avx2" in flags
         else "no avx2")
  if "avx512_bf16" in flags:
    isa += "+bf16"
  return (f"{info.get('model name', 'unknown CPU')} (family "
          f"{info.get('cpu family', '?')} model {info.get('model', '?')}, "
          f"{isa})")


def _flops(compiled) -> Optional[float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


class JaxCase:
  """gan_jax's compiled multi-step call for one config."""

  def __init__(self, cfg, steps: int, image_shape=IMAGE_SHAPE):
    self.cfg = cfg
    self.steps = steps
    devices = jax.local_devices()[:1]
    self.mesh = jax.make_mesh((1,), (steps_lib.AXIS,), devices=devices)
    toy = cfg.dataset in ("ring", "grid")
    dataset = None
    if not toy:
      dataset = images_lib.ImageDataset(
          np.zeros((8,) + tuple(image_shape), np.uint8), None, 10, cfg.seed,
          "synthetic")
    self.gan = gan_lib.build(cfg, dataset)
    # (It never logs, evaluates or saves: no interval to check.)
    flags_lib.check_config(cfg.replace(**{"eval.every": 0}, checkpoint_every=0), 1,
                           *self.gan.batch_multiple)
    with jax.set_mesh(self.mesh):
      self.state = jax.jit(lambda: state_lib.create(self.gan, cfg.seed))()
      self.host = None
      if not toy:
        x = np.random.default_rng(0).uniform(
            -1, 1, (steps, cfg.d_steps, cfg.batch_size) + tuple(image_shape)
        ).astype(np.float32)
        sharding = NamedSharding(self.mesh, P(None, None, steps_lib.AXIS))
        self.host = {"image": jax.device_put(x, sharding),
                     "label": jax.device_put(
                         np.zeros(x.shape[:3], np.int32), sharding)}
      self.fn = steps_lib.make_train_step(self.gan, self.mesh, steps)

  def param_count(self) -> int:
    return sum(x.size for x in jax.tree.leaves(
        (self.state.g_params, self.state.d_params)))

  def flops_per_step(self) -> Optional[float]:
    """XLA's cost analysis of the timed program: it counts a while loop's
    body once, so the scan over ``steps`` steps reports one step's FLOPs.
    ``lower(...).compile()`` reuses the compiled executable."""
    with jax.set_mesh(self.mesh):
      return _flops(self.fn.lower(self.state, self.host).compile())

  def run(self) -> float:
    """Runs one call of ``steps`` steps; returns its wall time."""
    old = self.state
    with jax.set_mesh(self.mesh):
      t = time.perf_counter()
      self.state, metrics = self.fn(self.state, self.host)
      jax.block_until_ready((self.state, metrics))
      dt = time.perf_counter() - t
    self.last_metrics = metrics
    # The call donates the state: its input buffers are reused, not copied.
    self.donated = all(x.is_deleted() for x in jax.tree.leaves(old))
    return dt


class TorchCase:
  """The PyTorch reference for the same config."""

  def __init__(self, cfg, steps: int, image_shape=IMAGE_SHAPE,
               device: str = "cpu"):
    """``cfg.compute_dtype`` 'bfloat16' runs the reference under
    ``torch.autocast`` (bfloat16 compute, float32 parameters)."""
    import torch  # pylint: disable=g-import-not-at-top
    import torch_reference  # pylint: disable=g-import-not-at-top
    self.steps = steps
    toy = cfg.dataset in ("ring", "grid")
    real = None
    shape = (2,)
    if not toy:
      shape = tuple(image_shape)
      h, w, c = shape
      real = torch.rand(steps, cfg.batch_size, c, h, w,
                        device=device) * 2 - 1
    self.ref = torch_reference.TrainStep(cfg, shape, real, device=device,
                                         compute_dtype=cfg.compute_dtype)
    self.params = (torch_reference.num_params(self.ref.g)
                   + torch_reference.num_params(self.ref.d))
    self.precision = (torch.get_float32_matmul_precision()
                      + (", cudnn tf32" if device == "cuda"
                         and torch.backends.cudnn.allow_tf32 else ""))

  def run(self) -> float:
    t = time.perf_counter()
    self.ref.run(self.steps)
    return time.perf_counter() - t

  def flops_per_step(self) -> float:
    """Products (2 per multiply-add) of one step, by PyTorch's counter;
    runs one step."""
    from torch.utils import flop_counter  # pylint: disable=g-import-not-at-top
    with flop_counter.FlopCounterMode(display=False) as counter:
      self.ref.run(1)
    return float(counter.get_total_flops())


def _torch_available() -> bool:
  try:
    import torch  # noqa: F401  pylint: disable=unused-import
  except ImportError:
    return False
  return True


def bench_case(name: str, dtypes: List[str], args, peak: float,
               use_torch: bool) -> List[Dict[str, Any]]:
  """One row per compute dtype, each against the PyTorch reference in the
  same dtype (bfloat16: ``torch.autocast``); all calls are interleaved, so
  their ratios see the same machine load."""
  spec = dict(CASES[name])
  flagfile = spec.pop("flagfile")
  image_shape = spec.pop("image_shape", IMAGE_SHAPE)
  steps = args.steps or spec.pop("steps")
  spec.pop("steps", None)
  spec.update(args.overrides)
  jax_cases, torch_cases, compile_s, xla_flops = {}, {}, {}, {}
  model_flops = None
  for dtype in dtypes:
    cfg = config_from_flagfile(flagfile, compute_dtype=dtype,
                               steps_per_loop=steps, **spec)
    # The checks gan_jax.main makes (--set can ask for anything).
    flags_lib.check_bounds(cfg)
    if cfg.num_seeds != 1:
      raise UserError(f"--set num_seeds={cfg.num_seeds}: the benchmark "
                      f"times one replica (--num_seeds=1)")
    flags_lib.check_new_run(cfg)
    t0 = time.perf_counter()
    jax_cases[dtype] = JaxCase(cfg, steps, image_shape)
    jax_cases[dtype].run()  # compile and first call
    compile_s[dtype] = time.perf_counter() - t0
    xla_flops[dtype] = (jax_cases[dtype].flops_per_step() if args.flops
                        else None)
    if use_torch:
      torch_cases[dtype] = TorchCase(cfg, steps, image_shape,
                                     args.torch_device)
      torch_cases[dtype].run()  # warm-up
      if model_flops is None and args.flops:
        model_flops = torch_cases[dtype].flops_per_step()
  times: Dict[str, List[float]] = {d: [] for d in dtypes}
  torch_times: Dict[str, List[float]] = {d: [] for d in torch_cases}
  for _ in range(args.repeats):
    for dtype, jc in jax_cases.items():
      times[dtype].append(jc.run())
      if dtype in torch_cases:
        torch_times[dtype].append(torch_cases[dtype].run())
  rows = []
  for dtype, jc in jax_cases.items():
    tc = torch_cases.get(dtype)
    tsps = (steps / statistics.median(torch_times[dtype]) if tc is not None
            else None)
    m = jax.device_get(jc.last_metrics)
    finite = all(np.all(np.isfinite(v)) for v in m.values())
    sps = steps / statistics.median(times[dtype])
    f = model_flops if model_flops is not None else xla_flops[dtype]
    # Paired ratios: each round times a dtype's call and then torch's,
    # so a slow phase of the machine affects both sides of a pair; the
    # median of the per-round ratios is steadier than a ratio of medians.
    paired = [t / j
              for j, t in zip(times[dtype], torch_times.get(dtype, []))]
    rows.append({
        "case": name, "compute_dtype": dtype,
        "batch_size": jc.cfg.batch_size, "steps": steps,
        "repeats": args.repeats,
        "steps_per_sec": round(sps, 3),
        "images_per_sec": round(sps * jc.cfg.batch_size, 1),
        "flops_per_step": f,
        "flops_source": ("pytorch_flop_counter" if model_flops is not None
                         else "xla_cost_analysis"),
        "xla_flops_per_step": xla_flops[dtype],
        "gflops_per_sec": None if f is None else round(sps * f / 1e9, 2),
        "matmul_gflops": round(peak, 1),
        "matmul_fraction": (None if f is None
                            else round(sps * f / 1e9 / peak, 3)),
        "compile_s": round(compile_s[dtype], 1), "finite": bool(finite),
        "state_donated": jc.donated,
        "params": jc.param_count(),
        "torch_steps_per_sec": None if tsps is None else round(tsps, 3),
        "torch_params": None if tc is None else tc.params,
        "ratio_vs_torch": (None if tsps is None
                           else round(statistics.median(paired), 3)),
        "ratio_range": (None if tsps is None
                        else [round(min(paired), 3), round(max(paired), 3)]),
        "noisy": bool(paired and round(max(paired), 3)
                      > NOISY_SPREAD * round(min(paired), 3)),
        "jax_matmul_precision": str(jax.config.jax_default_matmul_precision
                                    or "default"),
        "torch_matmul_precision": None if tc is None else tc.precision,
        "overrides": {k: str(v) for k, v in args.overrides.items()},
        "load_average": round(os.getloadavg()[0], 1),
        "cpu": cpu_description(),
    })
  return rows


NOISY_SPREAD = 1.3  # max / min of the per-round jax/torch ratios


def _table(rows: List[Dict[str, Any]]) -> str:
  head = ("case", "dtype", "batch", "jax steps/s", "images/s",
          "GFLOP/step", "GFLOP/s", "of matmul", "torch steps/s",
          "jax/torch (range)")
  lines = ["| " + " | ".join(head) + " |",
           "|" + "---|" * len(head)]

  def f(v, fmt):
    return "-" if v is None else format(v, fmt)

  for r in rows:
    gf = None if r["flops_per_step"] is None else r["flops_per_step"] / 1e9
    lines.append("| " + " | ".join([
        r["case"], r["compute_dtype"], str(r["batch_size"]),
        f(r["steps_per_sec"], ".2f"), f(r["images_per_sec"], ".0f"),
        f(gf, ".3f"), f(r["gflops_per_sec"], ".1f"),
        f(r["matmul_fraction"], ".0%"), f(r["torch_steps_per_sec"], ".2f"),
        _ratio_cell(r)]) + " |")
  for r in rows:
    if r.get("noisy"):
      lo, hi = r["ratio_range"]
      lines.append(f"# note: {r['case']} {r['compute_dtype']}: the per-round "
                   f"ratios spread {lo:.2f}-{hi:.2f} (more than "
                   f"{NOISY_SPREAD}x): the machine was busy, which slows "
                   f"PyTorch more than gan_jax; rerun on an idle machine")
  return "\n".join(lines)


def _ratio_cell(r: Dict[str, Any]) -> str:
  if r["ratio_vs_torch"] is None:
    return "-"
  lo, hi = r["ratio_range"]
  return f"{r['ratio_vs_torch']:.2f} ({lo:.2f}-{hi:.2f})"


class _Parser(argparse.ArgumentParser):
  """Bad arguments end in one line on stderr (no usage block), exit 2."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None):
  parser = _Parser(description=__doc__.split("\n")[0])
  parser.add_argument("--cases", default="dcgan64,dcgan256,toy",
                      help=f"comma-separated subset of {','.join(CASES)}")
  parser.add_argument("--steps", type=int, default=0,
                      help="steps per timed call (fused with lax.scan); "
                      "0 = the case's default (dcgan64 10, dcgan256 5, "
                      "toy 100, dcgan64px 20)")
  parser.add_argument("--repeats", type=int, default=5,
                      help="timed calls per case; the median is reported")
  parser.add_argument("--compute_dtype", default="float32",
                      help="comma-separated: float32, bfloat16")
  parser.add_argument("--torch", action=argparse.BooleanOptionalAction,
                      default=None, help="time the PyTorch reference "
                      "(default: when torch is installed)")
  parser.add_argument("--torch_device", default="auto",
                      help="cpu, cuda, or auto: cuda when JAX runs on a GPU "
                      "(the reference then needs a CUDA build of torch)")
  parser.add_argument("--matmul_gflops", type=float, default=0.0,
                      help="the machine's float32 matmul rate; 0 = measure")
  parser.add_argument("--set", action="append", default=[],
                      metavar="FLAG=VALUE", help="override one of the "
                      "cases' gan_jax flags, e.g. --set d.conv=xla --set "
                      "g.upsample=transpose (repeatable; the PyTorch "
                      "reference is built from the same config, and "
                      "flags that only choose how gan_jax computes a layer "
                      "do not change it)")
  parser.add_argument("--flops", action=argparse.BooleanOptionalAction,
                      default=True, help="count FLOPs: the model's with "
                      "PyTorch's counter on the reference, and XLA's cost "
                      "analysis of the compiled step (compiles it once "
                      "more)")
  args = parser.parse_args(argv)
  cases = [c for c in args.cases.split(",") if c]
  dtypes = [d for d in args.compute_dtype.split(",") if d]
  for c in cases:
    if c not in CASES:
      parser.error(f"unknown case {c!r}; valid: {', '.join(CASES)}")
  for d in dtypes:
    if d not in ("float32", "bfloat16"):
      parser.error(f"unknown --compute_dtype {d!r}; valid: float32, "
                   "bfloat16")
  args.overrides = {}
  for item in args.set:
    name, eq, value = item.partition("=")
    if not eq or name not in flags_lib.FLAGS:
      parser.error(f"--set {item!r}: expected FLAG=VALUE with a gan_jax "
                   "flag")
    try:
      args.overrides[name] = flags_lib.FLAGS[name].parser.parse(value)
    except ValueError as e:
      parser.error(f"--set {item!r}: {e}")
  if not cases:
    parser.error(f"--cases is empty; valid: {', '.join(CASES)}")
  if not dtypes:
    parser.error("--compute_dtype is empty; valid: float32, bfloat16")
  if not 0 <= args.steps <= 100_000 or not 1 <= args.repeats <= 10_000:
    parser.error("--steps must be in [0, 100000] and --repeats in "
                 "[1, 10000]")
  if not args.matmul_gflops >= 0:  # also refuses nan
    parser.error(f"--matmul_gflops must be >= 0 (0 = measure), got "
                 f"{args.matmul_gflops}")
  have_torch = _torch_available()
  use_torch = have_torch if args.torch is None else args.torch
  if use_torch and not have_torch:
    parser.error("--torch needs PyTorch: pip install -e '.[torch]'")
  if args.torch_device == "auto":
    args.torch_device = "cuda" if jax.default_backend() == "gpu" else "cpu"
  if args.torch_device not in ("cpu", "cuda"):
    parser.error(f"unknown --torch_device {args.torch_device!r}; valid: "
                 "auto, cpu, cuda")
  if use_torch and args.torch_device == "cuda":
    import torch  # pylint: disable=g-import-not-at-top
    if not torch.cuda.is_available():
      parser.error("--torch_device=cuda: this torch build sees no CUDA "
                   "device (install a CUDA build of torch==2.13.0, or pass "
                   "--no-torch)")
  if not use_torch:
    print("note: PyTorch reference skipped (" + (
        "--no-torch" if have_torch else "torch not installed; pip install "
        "-e '.[torch]'") + ")", file=sys.stderr)
  peak = args.matmul_gflops or matmul_gflops()
  load = os.getloadavg()
  print(f"# jax {jax.__version__} on {jax.devices()[0].device_kind}, "
        f"{os.cpu_count()} cpus ({cpu_description()}), load average "
        f"{load[0]:.1f} {load[1]:.1f} "
        f"{load[2]:.1f}; float32 matmul {peak:.1f} GFLOP/s", flush=True)
  rows = []
  try:
    for c in cases:
      for row in bench_case(c, dtypes, args, peak, use_torch):
        rows.append(row)
        print(json.dumps(row), flush=True)
  except UserError as e:
    # A configuration gan_jax or the reference rejects (e.g. a --set that
    # the PyTorch reference does not implement, torch_reference's
    # UnsupportedConfig): one line, and the rows measured so far stay
    # printed.
    print(f"train_step.py: error: {e}", file=sys.stderr)
    return 2
  print(_table(rows))
  load = os.getloadavg()
  print(f"# load average at the end {load[0]:.1f} {load[1]:.1f} "
        f"{load[2]:.1f}")


if __name__ == "__main__":
  sys.exit(main())
