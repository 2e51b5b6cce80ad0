"""Pure, compiled update steps: ``(state, batch) -> (state, metrics)``.

Layout (pmap semantics, written with ``jax.shard_map`` over a 1-D mesh with
axis ``data``):

* ``train_step`` (global view, jitted): derives the step's key as
  ``fold_in(state.rng, state.step)``, draws every random number of the step
  with *global* shapes (noise, fake labels, toy data) so the draw does not
  depend on the device count, shards them over ``data`` and calls the
  per-device step. (Dropout inside the networks draws per device, from
  ``fold_in(key, device index)``, and BatchNorm without
  ``--cross_replica_bn`` normalizes per device: those two do depend on it.)
* ``local_step`` (per device): ``d_steps`` discriminator updates
  (``d_update``) then one generator update (``g_update``), Algorithm 1 of
  Goodfellow et al. (2014). Parameters are replicated; each device computes
  gradients on its shard and they are averaged with ``lax.pmean`` over
  ``data``, as are BatchNorm statistics and metrics.
* ``make_train_step`` fuses ``steps_per_loop`` steps with ``lax.scan`` into
  one compiled call with the state donated.
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

from gan_jax.state import TrainState

AXIS = "data"
Batch = Dict[str, Any]


def _varying(tree):
  """Marks replicated values as per-device so grad gives per-device grads."""
  return jax.tree.map(lambda x: lax.pcast(x, AXIS, to="varying"), tree)


def _pmean(tree):
  return jax.tree.map(lambda x: lax.pmean(x, AXIS), tree)


def _device_key(key):
  return jax.random.fold_in(key, lax.axis_index(AXIS))


def example_keys(key, n: int):
  """One key per example, indexed by its position in the global batch.

  Per-example draws (e.g. WGAN-GP's interpolation weights) are then the same
  whatever the number of devices.
  """
  idx = lax.axis_index(AXIS) * n + jnp.arange(n)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, idx)


def _param_norm(tree):
  return optax.tree.norm(tree)


def _has_batchnorm(variables) -> bool:
  """Whether ``variables`` hold BatchNorm statistics (flax's ``mean``; the
  spectral-norm vectors that share the collection don't count)."""
  stats = variables.get("batch_stats", {})
  return any(getattr(path[-1], "key", None) == "mean"
             for path, _ in jax.tree_util.tree_flatten_with_path(stats)[0])


def _spectral_from(new, old):
  """``new`` with the spectral-norm vectors (``.../u``, ``.../sigma``) of
  ``old``: a second D pass in one update then normalizes with the same sigma
  and the update advances the power iteration once (Miyato et al. 2018,
  Algorithm 1), while BatchNorm statistics keep chaining."""
  def pick(path, n, o):
    key = getattr(path[-1], "key", "")
    spectral = isinstance(key, str) and key.endswith(("/u", "/sigma"))
    return o if spectral else n
  return jax.tree_util.tree_map_with_path(pick, new, old)


def d_update(gan, state: TrainState, batch: Batch, update_index,
             differentiable: bool = False):
  """One discriminator update on this device's shard.

  ``batch``: real (b, ...), y_real (b,) or absent, z (b, z_dim), y_fake,
  key (this update's key, replicated). ``update_index`` counts D updates over
  the run (for lazy penalties). ``differentiable``: keep the fake samples'
  dependence on ``state.g_params`` (unrolled GAN differentiates the updated
  D with respect to G).
  """
  cfg = gan.cfg
  real = batch["real"]
  y_real, y_fake = batch.get("y_real"), batch.get("y_fake")
  k_g, k_d, k_pen = jax.random.split(batch["key"], 3)
  fake, _ = gan.generate(state.g_params, state.g_state, batch["z"], y_fake,
                         train=True, rng=_device_key(k_g))
  if not differentiable:
    fake = lax.stop_gradient(fake)
  fake = fake.astype(real.dtype)
  b = real.shape[0]
  every = cfg.penalty_every
  apply_penalty = (update_index % every) == 0

  # BatchNorm in D: real and fake go in separate calls too, as in the DCGAN
  # reference code. On a mixed batch D normalizes with statistics G's update
  # never sees (G's D call gets a fake-only batch), and G then trains
  # against a different function than the one D fit: D wins at once while
  # g_loss reports G fooling it.
  together = cfg.minibatch_disc == "none" and not _has_batchnorm(
      state.d_state)

  def loss_fn(d_params):
    if together:
      x = jnp.concatenate([real, fake])
      y = None if y_real is None else jnp.concatenate([y_real, y_fake])
      logits, d_state = gan.discriminate(d_params, state.d_state, x, y,
                                         train=True, rng=_device_key(k_d))
    else:
      # Minibatch features (and BatchNorm statistics) are computed over the
      # batch D sees: real and fake go in separate calls, or each batch would
      # mix both (as in Salimans et al.'s code, where D sees real and fake
      # batches apart).
      l_real, d_state = gan.discriminate(d_params, state.d_state, real,
                                         y_real, train=True,
                                         rng=_device_key(k_d))
      l_fake, d_state = gan.discriminate(
          d_params, _spectral_from(d_state, state.d_state), fake, y_fake,
          train=True, rng=_device_key(jax.random.fold_in(k_d, 1)))
      logits = jnp.concatenate([l_real, l_fake])
    n = logits.shape[0] // 2
    d_loss, d_real, d_fake = gan.loss.d(logits[:n], logits[n:])
    aux = {"d_loss": d_loss, "d_loss_real": d_real, "d_loss_fake": d_fake,
           "d_real_logit": jnp.mean(logits[:n]),
           "d_fake_logit": jnp.mean(logits[n:])}
    total = d_loss
    for i, (name, penalty) in enumerate(gan.penalties):
      def d_fn(v, d_params=d_params):
        return gan.discriminate(d_params, state.d_state, v, y_real,
                                train=True, rng=_device_key(k_d))[0]
      keys = example_keys(jax.random.fold_in(k_pen, i), b)
      value = lax.cond(
          apply_penalty,
          lambda: every * penalty(d_fn, real, fake, keys),
          lambda: lax.pcast(jnp.zeros((), jnp.float32), AXIS, to="varying"))
      aux[f"penalty/{name}"] = value
      total = total + value
    return total, (aux, d_state)

  grads, (aux, d_state) = jax.grad(loss_fn, has_aux=True)(
      _varying(state.d_params))
  grads, aux, d_state = _pmean((grads, aux, d_state))
  tx = gan.d_tx
  if differentiable and gan.d_tx_unrolled is not None:
    tx = gan.d_tx_unrolled
  updates, d_opt_state = tx.update(grads, state.d_opt_state, state.d_params)
  d_params = optax.apply_updates(state.d_params, updates)
  if cfg.d_clip > 0:  # WGAN (Arjovsky et al. 2017), Algorithm 1 line 7.
    d_params = jax.tree.map(lambda p: jnp.clip(p, -cfg.d_clip, cfg.d_clip),
                            d_params)
  metrics = {**aux, "d_grad_norm": optax.tree.norm(grads)}
  return state.replace(d_params=d_params, d_state=d_state,
                       d_opt_state=d_opt_state), metrics


def g_loss_and_state(gan, g_params, state: TrainState, batch: Batch,
                     d_params=None, d_state=None):
  """G's loss on this shard (and its updated BatchNorm state)."""
  k_g, k_d = jax.random.split(batch["key"])
  d_params = state.d_params if d_params is None else d_params
  d_state = state.d_state if d_state is None else d_state
  fake, g_state = gan.generate(g_params, state.g_state, batch["z"],
                               batch.get("y"), train=True,
                               rng=_device_key(k_g))
  logits, _ = gan.discriminate(d_params, d_state, fake, batch.get("y"),
                               train=True, rng=_device_key(k_d))
  if gan.loss.g_reads_real:
    # A relativistic loss compares with D on real data (own call, as in
    # d_update's separate path; D's state from it is dropped, like the
    # fake call's).
    real_logits, _ = gan.discriminate(
        d_params, d_state, batch["real"], batch.get("y_real"), train=True,
        rng=_device_key(jax.random.fold_in(k_d, 1)))
    g_loss = gan.loss.g(logits, real_logits)
  else:
    g_loss = gan.loss.g(logits)
  return g_loss, (g_state, {"g_loss": g_loss})


def unrolled_d(gan, g_params, state: TrainState, unroll: Batch):
  """D's (params, state) after ``unroll_steps`` differentiable D updates
  from ``state``, as a function of G's params (Metz et al. 2017, eq. 4-6).

  The updates are ``d_update`` itself (same loss, penalties and optax
  update, applied functionally to a copy of D's params and optimizer state),
  replaying this step's D batches and keys cyclically (``unroll``: d, keys,
  first), as the authors' code reuses the step's data.
  """
  st = state.replace(g_params=g_params)
  keys = unroll["keys"]
  k = keys.shape[0]
  for j in range(gan.cfg.unroll_steps):
    batch = jax.tree.map(lambda x, j=j: x[j % k], unroll["d"])
    st, _ = d_update(gan, st, {**batch, "key": keys[j % k]},
                     unroll["first"] + j % k, differentiable=True)
  return st.d_params, st.d_state


def unrolled_g_loss(gan, g_params, state: TrainState, batch: Batch,
                    unroll: Batch):
  """Unrolled GAN: G's loss against the k-step-unrolled D (Metz et al.
  2017, eq. 6); its gradient flows through the unrolled updates."""
  d_params, d_state = unrolled_d(gan, g_params, state, unroll)
  return g_loss_and_state(gan, g_params, state, batch, d_params, d_state)


def g_update(gan, state: TrainState, batch: Batch,
             unroll: Optional[Batch] = None):
  """One generator update on this device's shard, then the EMA update.

  ``batch``: z (b, z_dim), y (b,) or absent, key. ``unroll``: the step's D
  batches when ``--unroll_steps`` > 0; D itself is not changed here, so the
  state keeps the non-unrolled D.
  """
  cfg = gan.cfg
  loss = functools.partial(g_loss_and_state, gan, state=state, batch=batch)
  if unroll is not None and cfg.unroll_steps > 0:
    loss = functools.partial(unrolled_g_loss, gan, state=state, batch=batch,
                             unroll=unroll)
  grads, (g_state, aux) = jax.grad(loss, has_aux=True)(
      _varying(state.g_params))
  grads, aux, g_state = _pmean((grads, aux, g_state))
  updates, g_opt_state = gan.g_tx.update(grads, state.g_opt_state,
                                         state.g_params)
  g_params = optax.apply_updates(state.g_params, updates)
  ema = state.ema_params
  if ema is not None:
    # EMA of G's weights (Yazici et al. 2019); before ema_start it copies G.
    decay = jnp.where(state.step >= cfg.ema_start, cfg.ema_decay, 0.0)
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema,
                       g_params)
  metrics = {**aux, "g_grad_norm": optax.tree.norm(grads)}
  return state.replace(g_params=g_params, g_state=g_state,
                       g_opt_state=g_opt_state, ema_params=ema), metrics


def local_step(gan, state: TrainState, inputs: Batch):
  """``d_steps`` D updates then one G update, on this device's shard."""
  k = gan.cfg.d_steps
  d_keys = jax.random.split(jax.random.fold_in(inputs["key"], 0), k)
  first = state.step * k

  def d_body(st, xs):
    batch, key, i = xs
    return d_update(gan, st, {**batch, "key": key}, first + i)

  state, d_metrics = lax.scan(d_body, state,
                              (inputs["d"], d_keys, jnp.arange(k)))
  g_batch = {**inputs["g"], "key": jax.random.fold_in(inputs["key"], 1)}
  if gan.loss.g_reads_real:
    # G's real batch is the step's last D batch (the authors' code draws a
    # new one: docs/losses.md).
    g_batch["real"] = inputs["d"]["real"][-1]
    if "y_real" in inputs["d"]:
      g_batch["y_real"] = inputs["d"]["y_real"][-1]
  unroll = {"d": inputs["d"], "keys": d_keys, "first": first}
  state, g_metrics = g_update(gan, state, g_batch, unroll)
  metrics = {name: jnp.mean(v) for name, v in d_metrics.items()}
  metrics.update(g_metrics)
  metrics["d_param_norm"] = _param_norm(state.d_params)
  metrics["g_param_norm"] = _param_norm(state.g_params)
  return state.replace(step=state.step + 1), metrics


def sample_inputs(gan, key, host: Optional[Batch]) -> Batch:
  """Every random draw of one step, with global shapes.

  ``host``: the step's real data for image sets, {"image": (k, B, ...),
  "label": (k, B)}; None for toy sets, which are sampled here.
  """
  cfg = gan.cfg
  k, bsz = cfg.d_steps, cfg.batch_size
  keys = jax.random.split(key, 6)
  d: Batch = {"z": gan.sample_z(keys[0], (k, bsz))}
  g: Batch = {"z": gan.sample_z(keys[1], (bsz,))}
  if host is None:
    real, y_real = gan.dataset.sample(keys[2], k * bsz)
    d["real"] = real.reshape((k, bsz) + real.shape[1:])
    if y_real is not None and gan.num_classes:
      d["y_real"] = y_real.reshape(k, bsz)
  else:
    d["real"] = host["image"]
    if gan.num_classes:
      d["y_real"] = host["label"]
  if gan.num_classes:
    d["y_fake"] = gan.sample_labels(keys[3], (k, bsz))
    g["y"] = gan.sample_labels(keys[4], (bsz,))
  return {"d": d, "g": g, "key": keys[5]}


def input_specs(inputs: Batch):
  """Shard the batch axis over ``data``: (k, B, ...) and (B, ...)."""
  return {
      "d": jax.tree.map(lambda _: P(None, AXIS), inputs["d"]),
      "g": jax.tree.map(lambda _: P(AXIS), inputs["g"]),
      "key": P(),
  }


def train_step(gan, mesh, state: TrainState, host: Optional[Batch] = None):
  """One global training step (call under ``jax.set_mesh(mesh)``)."""
  key = jax.random.fold_in(state.rng, state.step)
  inputs = sample_inputs(gan, key, host)
  specs = input_specs(inputs)
  inputs = jax.tree.map(jax.sharding.reshard, inputs, specs)
  local = jax.shard_map(functools.partial(local_step, gan), mesh=mesh,
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


def make_train_step(gan, mesh, steps_per_call: int):
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
    return train_step(gan, mesh, st, host)

  step = one
  if gan.cfg.num_seeds > 1:
    # Independent replicas on a leading axis of the state (and of each
    # step's host batch); metrics come back (steps, num_seeds).
    if gan.cfg.seed_batching == "map":
      step = lambda st, host: lax.map(lambda args: one(*args), (st, host))  # pylint: disable=unnecessary-lambda-assignment
    else:
      step = jax.vmap(one)

  def call(state, host_batches):
    return lax.scan(step, state, host_batches, length=steps_per_call)

  return jax.jit(call, donate_argnums=0,
                 compiler_options=compiler_options())
