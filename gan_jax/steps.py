"""The generic update engine: pure, compiled steps ``(state, batch) ->
(state, metrics)`` for any method (``gan_jax.methods``).

Layout (pmap semantics, written with ``jax.shard_map`` over a 1-D mesh with
axis ``data``):

* ``train_step`` (global view, jitted): derives the step's key as
  ``fold_in(state.rng, state.step)``, lets the method draw every random
  number of the step with *global* shapes (``method.sample_inputs``: noise,
  labels, toy data) so the draw does not depend on the device count, shards
  them over ``data`` and calls the per-device step. (Dropout inside the
  networks draws per device, from ``fold_in(key, device index)``, and
  BatchNorm without ``--cross_replica_bn`` normalizes per device: those two
  do depend on it.)
* ``local_step`` (per device): ``d_steps`` updates of the method's
  discriminator-side networks then one of its generator-side networks
  (Algorithm 1 of Goodfellow et al. 2014), then the EMA of its
  ``ema_networks``. Parameters are replicated; each device computes
  gradients on its shard and they are averaged with ``lax.pmean`` over
  ``data``, as are the networks' non-trainable state, the method's extra
  state and the metrics.
* ``update``: one update of one side: the gradient of the method's
  objective with respect to that side's networks, one optax update per
  network (``method.optimizers``), then ``method.after_update``.
* ``make_train_step`` fuses ``steps_per_loop`` steps with ``lax.scan`` into
  one compiled call with the state donated, vmapped over seeds with
  ``--num_seeds``.

The engine names no method: what a method computes lives in its module.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import PartitionSpec as P

from gan_jax import sections
from gan_jax.state import TrainState

AXIS = "data"
Batch = Dict[str, Any]
SIDES = ("d", "g")


def varying(tree):
  """Marks replicated values as per-device so grad gives per-device grads
  (values already per-device pass through)."""
  return jax.tree.map(
      lambda x: x if AXIS in jax.typeof(x).manual_axis_type.varying
      else lax.pcast(x, AXIS, to="varying"), tree)


def pmean(tree):
  """The mean over ``data`` of every inexact leaf (integer leaves, which
  must already agree across devices, pass through)."""
  def mean(x):
    if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
      return lax.pmean(x, AXIS)
    return x
  return jax.tree.map(mean, tree)


def device_key(key):
  """A key of its own for this device (dropout)."""
  return jax.random.fold_in(key, lax.axis_index(AXIS))


def example_keys(key, n: int):
  """One key per example, indexed by its position in the global batch.

  Per-example draws (e.g. WGAN-GP's interpolation weights) are then the same
  whatever the number of devices.
  """
  idx = lax.axis_index(AXIS) * n + jnp.arange(n)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, idx)


def zero():
  """A per-device float32 zero (the value of a lazy regularizer's off
  steps under ``lax.cond``)."""
  return lax.pcast(jnp.zeros((), jnp.float32), AXIS, to="varying")


def lazy(index, every: int, fn, state=None):
  """A lazy regularizer (Karras et al. 2020, Sec. 3.1): ``every * fn()`` on
  the updates whose ``index`` is a multiple of ``every``, 0 on the others
  (``fn`` is not computed there). On the D side ``ctx["index"]`` counts D
  updates; on the G side ``state.step`` counts G updates, so a G-side term
  every 4 updates (path length) is ``lazy(state.step, 4, fn)``.

  With ``state`` (a pytree), ``fn()`` returns ``(value, new_state)`` and
  ``lazy`` returns ``(every * value, new_state)``, or ``(0, state)`` on the
  updates it skips."""
  if state is None:
    return lax.cond((index % every) == 0, lambda: every * fn(), zero)

  def on():  # lax.cond's branches must agree: the state per-device
    value, new = fn()
    return every * value, varying(new)

  return lax.cond((index % every) == 0, on, lambda: (zero(), varying(state)))


def update(method, side: str, state: TrainState, batch: Batch, ctx: Batch,
           txs: Optional[Dict[str, optax.GradientTransformation]] = None):
  """One update of ``side``'s networks (``method.networks_of(side)``).

  ``method.objective(side, params, state, batch, ctx)`` returns ``(loss,
  (metrics, net_state, extra))``: the networks' updated non-trainable state
  and the method's extra state, each a dict of the entries it changes.
  ``ctx`` carries the update's index and the like (see ``local_step``);
  ``txs`` replaces the method's optimizers (unrolled GAN differentiates
  through a variant of them).
  """
  names = method.networks_of(side)

  def loss_fn(trainable):
    params = {**state.params, **trainable}
    return method.objective(side, params, state, batch, ctx)

  grads, (aux, net_state, extra) = jax.grad(loss_fn, has_aux=True)(
      varying({n: state.params[n] for n in names}))
  grads, aux, net_state, extra = pmean((grads, aux, net_state, extra))
  txs = method.optimizers if txs is None else txs
  params, opt_state = dict(state.params), dict(state.opt_state)
  for n in names:
    updates, opt_state[n] = txs[n].update(grads[n], state.opt_state[n],
                                          state.params[n])
    params[n] = optax.apply_updates(state.params[n], updates)
  params = method.after_update(side, params)
  metrics = {**aux, f"{side}_grad_norm": optax.tree.norm(grads)}
  return state.replace(
      params=params, opt_state=opt_state,
      net_state={**state.net_state, **(net_state or {})},
      extra={**state.extra, **(extra or {})}), metrics


sections.float_("ema", "decay", 0.0, "Decay of the exponential moving average "
                "of the generator networks' weights (Yazici et al. 2019), "
                "which samples and evaluations then use; 0 = none.",
                owner="run", bounds="[0, 1)")
sections.integer("ema", "start", 0, "Step at which the EMA starts "
                 "(copying the weights before).", owner="run", bounds=">= 0",
                 inert_unless=(lambda e: e["decay"] > 0,
                               "--ema.decay is 0 (no EMA)"))


def ema_update(method, state: TrainState) -> TrainState:
  """The EMA of the ``ema_networks`` (Yazici et al. 2019); before
  ``--ema.start`` it copies them."""
  if not state.ema:
    return state
  ema = sections.knobs(method.cfg, "ema")
  decay = jnp.where(state.step >= ema["start"], ema["decay"], 0.0)
  ema = {n: jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p,
                         state.ema[n], state.params[n]) for n in state.ema}
  return state.replace(ema=ema)


def local_step(method, state: TrainState, inputs: Batch):
  """``d_steps`` D-side updates then one G-side update, on this device's
  shard. ``inputs``: ``d`` (each leaf with a leading ``d_steps`` axis), ``g``
  and the step's ``key``.

  The D-side ``ctx`` holds ``index``, the update's count over the run (lazy
  regularizers); the G side's holds the whole step's ``inputs``, the D
  updates' ``d_keys`` and the first one's ``first`` index (unrolled GAN
  replays them)."""
  k = method.cfg.d_steps
  d_keys = jax.random.split(jax.random.fold_in(inputs["key"], 0), k)
  first = state.step * k

  def d_body(st, xs):
    batch, key, i = xs
    return update(method, "d", st, {**batch, "key": key},
                  {"index": first + i})

  state, d_metrics = lax.scan(d_body, state,
                              (inputs["d"], d_keys, jnp.arange(k)))
  g_batch = {**inputs["g"], "key": jax.random.fold_in(inputs["key"], 1)}
  state, g_metrics = update(method, "g", state, g_batch,
                            {"inputs": inputs, "d_keys": d_keys,
                             "first": first})
  state = ema_update(method, state)
  metrics = {name: jnp.mean(v) for name, v in d_metrics.items()}
  metrics.update(g_metrics)
  for side in SIDES:
    metrics[f"{side}_param_norm"] = optax.tree.norm(
        {n: state.params[n] for n in method.networks_of(side)})
  return state.replace(step=state.step + 1), metrics


def input_specs(inputs: Batch):
  """Shard the batch axis over ``data``: (k, B, ...) and (B, ...)."""
  return {
      "d": jax.tree.map(lambda _: P(None, AXIS), inputs["d"]),
      "g": jax.tree.map(lambda _: P(AXIS), inputs["g"]),
      "key": P(),
  }


def train_step(method, mesh, state: TrainState, host: Optional[Batch] = None):
  """One global training step (call under ``jax.set_mesh(mesh)``)."""
  key = jax.random.fold_in(state.rng, state.step)
  inputs = method.sample_inputs(key, host)
  specs = input_specs(inputs)
  inputs = jax.tree.map(jax.sharding.reshard, inputs, specs)
  local = jax.shard_map(functools.partial(local_step, method), mesh=mesh,
                        in_specs=(P(), specs), out_specs=(P(), P()))
  return local(state, inputs)


# XLA:CPU compiles dots, reductions and convolutions to YNNPACK by default.
# The train step keeps YNNPACK for dots and reductions and leaves
# convolutions to Eigen: on the 2-core benchmark machine Eigen ran DCGAN's
# convolutions at ~205 GFLOP/s against 150-185 for YNNPACK, and the
# kernel-gradient convolution of ``conv._kernel_grad`` 1.7-3x faster
# (docs/benchmarks.md: with that kernel gradient, the DCGAN step 1.3-1.4x).
CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


@functools.lru_cache(maxsize=None)
def _compiler_options_ok(items) -> bool:
  try:
    jax.jit(lambda x: x + 1).lower(jnp.zeros(2)).compile(
        compiler_options=dict(items))
  except Exception:  # pylint: disable=broad-except
    return False  # an XLA without these options: compile with defaults
  return True


def compiler_options() -> Optional[Dict[str, str]]:
  """XLA options for the compiled train step: ``CPU_COMPILER_OPTIONS`` on
  CPU, None elsewhere, or when ``XLA_FLAGS`` already chooses the YNNPACK
  fusion types (the user's setting wins)."""
  if jax.default_backend() != "cpu":
    return None
  if "ynn_fusion_type" in os.environ.get("XLA_FLAGS", ""):
    return None
  items = tuple(sorted(CPU_COMPILER_OPTIONS.items()))
  return dict(items) if _compiler_options_ok(items) else None


def make_train_step(method, mesh, steps_per_call: int):
  """Jitted ``(state, host_batches) -> (state, metrics)`` over several steps.

  ``host_batches`` is None for toy data, else arrays with a leading
  ``steps_per_call`` axis. Metrics come back stacked, one row per step. The
  state's buffers are donated. With ``--num_seeds`` N > 1 the state (and each
  step's host batch, after the steps axis) has a leading replica axis and
  ``jax.vmap`` (or, with ``--seed_batching=map``, ``lax.map``) maps the whole
  step over it, outside the ``shard_map``: each replica's collectives
  (``pmean`` over ``data``) stay within the replica. Metrics are then
  (steps, N).
  """
  def one(st, host):
    return train_step(method, mesh, st, host)

  step = one
  if method.cfg.num_seeds > 1:
    # Independent replicas on a leading axis of the state (and of each
    # step's host batch); metrics come back (steps, num_seeds).
    if method.cfg.seed_batching == "map":
      step = lambda st, host: lax.map(lambda args: one(*args), (st, host))  # pylint: disable=unnecessary-lambda-assignment
    else:
      step = jax.vmap(one)

  def call(state, host_batches):
    return lax.scan(step, state, host_batches, length=steps_per_call)

  return jax.jit(call, donate_argnums=0,
                 compiler_options=compiler_options())
