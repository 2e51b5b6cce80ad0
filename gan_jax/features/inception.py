"""Inception-v3 as used for FID (the 2015-12-05 TensorFlow graph) in Flax.

Follows pytorch-fid's ``fid_inception_v3``: torchvision's Inception-v3
layout with the FID patches (average pools in the A, C and first E blocks
exclude the padding; the last E block max-pools its pool branch), 1008
logits, inputs resized bilinearly to 299x299 (no antialiasing, half-pixel
centres, like ``F.interpolate(align_corners=False)``) and scaled to [-1, 1].
``pool3`` (2048 features) serves FID/KID/PR and the logits serve IS. The
logits are ``pool3 @ W`` without the fc bias, as in the Inception Score's
reference code (Salimans et al.'s ``inception_score.py`` and TTUR take the
``softmax/logits/MatMul`` weight alone; torch-fidelity's
``logits_unbiased``): published Inception Scores are computed that way.

Weights: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``, read with
``load_pth`` below, which needs no PyTorch and unpickles nothing but the few
torch globals a state dict uses. Submodule names equal the state-dict names,
so ``Mixed_5b.branch1x1.conv.weight`` lands in
``params['Mixed_5b']['branch1x1']['conv']['kernel']``.
"""

from __future__ import annotations

import collections
import functools
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.errors import UserError

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
NUM_LOGITS = 1008
FEATURE_DIM = 2048
INPUT_SIZE = 299


# ------------------------------------------------------------------ network
def _pair(v) -> Tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv(nn.Module):
  """Conv (no bias) -> BatchNorm (eps 1e-3, running stats) -> ReLU."""
  features: int
  kernel: Any = 1
  stride: Any = 1
  padding: Any = 0

  @nn.compact
  def __call__(self, x):
    ph, pw = _pair(self.padding)
    x = nn.Conv(self.features, _pair(self.kernel), _pair(self.stride),
                padding=((ph, ph), (pw, pw)), use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_same(x):
  # TensorFlow's average pool: padded zeros are not counted.
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_valid(x):
  return nn.max_pool(x, (3, 3), (2, 2), "VALID")


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(64, name="branch1x1")(x)
    b5 = BasicConv(48, name="branch5x5_1")(x)
    b5 = BasicConv(64, 5, padding=2, name="branch5x5_2")(b5)
    b3 = BasicConv(64, name="branch3x3dbl_1")(x)
    b3 = BasicConv(96, 3, padding=1, name="branch3x3dbl_2")(b3)
    b3 = BasicConv(96, 3, padding=1, name="branch3x3dbl_3")(b3)
    bp = BasicConv(self.pool_features, name="branch_pool")(_avg_pool_same(x))
    return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(384, 3, stride=2, name="branch3x3")(x)
    bd = BasicConv(64, name="branch3x3dbl_1")(x)
    bd = BasicConv(96, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = BasicConv(96, 3, stride=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_valid(x)], -1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = BasicConv(192, name="branch1x1")(x)
    b7 = BasicConv(c7, name="branch7x7_1")(x)
    b7 = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv(c7, name="branch7x7dbl_1")(x)
    bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv(192, name="branch_pool")(_avg_pool_same(x))
    return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(192, name="branch3x3_1")(x)
    b3 = BasicConv(320, 3, stride=2, name="branch3x3_2")(b3)
    b7 = BasicConv(192, name="branch7x7x3_1")(x)
    b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv(192, 3, stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_valid(x)], -1)


class InceptionE(nn.Module):
  """``max_pool``: the FID graph's last block max-pools its pool branch."""
  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(320, name="branch1x1")(x)
    b3 = BasicConv(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate([
        BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
        BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], -1)
    bd = BasicConv(448, name="branch3x3dbl_1")(x)
    bd = BasicConv(384, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([
        BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
        BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)],
                         -1)
    if self.max_pool:
      bp = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    else:
      bp = _avg_pool_same(x)
    bp = BasicConv(192, name="branch_pool")(bp)
    return jnp.concatenate([b1, b3, bd, bp], -1)


class UnbiasedLogits(nn.Module):
  """The fc layer as the Inception Score uses it: ``x @ kernel``. Its
  ``bias`` is a parameter (the weight file holds it; loading checks its
  shape) that the IS reference code leaves out, and so does this."""
  features: int

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (x.shape[-1], self.features))
    self.param("bias", nn.initializers.zeros, (self.features,))
    return x @ kernel


class InceptionV3(nn.Module):
  """FID Inception-v3: NHWC images in [-1, 1] -> (pool3 (N, 2048), logits
  (N, 1008) without the fc bias, as the Inception Score takes them).

  ``resize_input``: bilinear resize to 299x299 first (pytorch-fid's default).
  Grayscale inputs are repeated to three channels.
  """
  resize_input: bool = True

  @nn.compact
  def __call__(self, x):
    x = jnp.asarray(x, jnp.float32)
    if x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    if self.resize_input and x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
      # Resizing is linear, so resizing [-1, 1] images equals pytorch-fid's
      # resize of [0, 1] images followed by 2x - 1.
      x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3),
                           "bilinear", antialias=False)
    x = BasicConv(32, 3, stride=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv(32, 3, name="Conv2d_2a_3x3")(x)
    x = BasicConv(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
    x = _max_pool_valid(x)
    x = BasicConv(80, 1, name="Conv2d_3b_1x1")(x)
    x = BasicConv(192, 3, name="Conv2d_4a_3x3")(x)
    x = _max_pool_valid(x)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    x = InceptionC(128, name="Mixed_6b")(x)
    x = InceptionC(160, name="Mixed_6c")(x)
    x = InceptionC(160, name="Mixed_6d")(x)
    x = InceptionC(192, name="Mixed_6e")(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)
    pool3 = jnp.mean(x, axis=(1, 2))
    logits = UnbiasedLogits(NUM_LOGITS, name="fc")(pool3)
    return pool3, logits


@functools.lru_cache(maxsize=1)
def variable_shapes():
  """Shapes of the Flax variables (``params``, ``batch_stats``)."""
  return jax.eval_shape(
      lambda: InceptionV3(resize_input=False).init(
          jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3))))


def init_random(seed: int = 0):
  """Randomly initialized variables (for tests: shapes, not quality)."""
  return InceptionV3(resize_input=False).init(
      jax.random.PRNGKey(seed), jnp.zeros((1, 75, 75, 3)))


# ------------------------------------------------- state dict <-> Flax names
_BN_PARAMS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"),
              "running_var": ("batch_stats", "var")}


def _flax_location(key: str) -> Optional[Tuple[str, Tuple[str, ...]]]:
  """State-dict key -> (collection, path), None for ignored entries."""
  parts = key.split(".")
  leaf = parts[-1]
  if leaf == "num_batches_tracked":
    return None
  if parts[-2] == "conv" and leaf == "weight":
    return "params", tuple(parts[:-1]) + ("kernel",)
  if parts[-2] == "bn" and leaf in _BN_PARAMS:
    coll, name = _BN_PARAMS[leaf]
    return coll, tuple(parts[:-1]) + (name,)
  if parts[:-1] == ["fc"] and leaf in ("weight", "bias"):
    return "params", ("fc", "kernel" if leaf == "weight" else "bias")
  raise UserError(f"unexpected entry {key!r} in the Inception weight file")


def _to_flax(key: str, value: np.ndarray) -> np.ndarray:
  if key.endswith("conv.weight"):
    return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
  if key == "fc.weight":
    return value.T  # (out, in) -> (in, out)
  return value


def state_dict_shapes() -> Dict[str, Tuple[int, ...]]:
  """The state-dict keys and (PyTorch) shapes the loader expects."""
  shapes = {}
  for coll, tree in variable_shapes().items():
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      names = [p.key for p in path]
      prefix, name = ".".join(names[:-1]), names[-1]
      shape = tuple(leaf.shape)
      if name == "kernel" and prefix.endswith(".conv"):
        key, shape = f"{prefix}.weight", (shape[3], shape[2]) + shape[:2]
      elif name == "kernel":
        key, shape = f"{prefix}.weight", shape[::-1]
      elif coll == "batch_stats":
        key = f"{prefix}.running_{name}"
      else:
        key = f"{prefix}.{'weight' if name == 'scale' else 'bias'}"
      shapes[key] = shape
  return shapes


def variables_from_state_dict(state: Dict[str, np.ndarray]):
  """Maps a pytorch-fid state dict (numpy arrays) to Flax variables."""
  expected = state_dict_shapes()
  present = {k for k in state if not k.endswith("num_batches_tracked")}
  missing = sorted(set(expected) - present)
  extra = sorted(present - set(expected))
  if missing or extra:
    raise UserError(
        "the Inception weight file does not match the FID Inception-v3: "
        f"{len(missing)} missing entries {missing[:3]}, {len(extra)} "
        f"unexpected {extra[:3]}")
  out: Dict[str, Dict[str, Any]] = {"params": {}, "batch_stats": {}}
  for key, value in state.items():
    loc = _flax_location(key)
    if loc is None:
      continue
    if tuple(value.shape) != expected[key]:
      raise UserError(f"Inception weight {key!r} has shape {value.shape}, "
                      f"expected {expected[key]}")
    coll, path = loc
    node = out[coll]
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = np.asarray(_to_flax(key, value), np.float32)
  return out


# --------------------------------------------- .pth reading without PyTorch
_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2",
    "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


class _StorageType:
  """Stand-in for ``torch.FloatStorage`` & co.: carries a numpy dtype."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = np.dtype(_DTYPES[name])


class _StorageRef:
  def __init__(self, key: str, dtype: np.dtype, numel: int):
    self.key, self.dtype, self.numel = key, dtype, numel


class _TensorRef:
  """What ``torch._utils._rebuild_tensor_v2`` would build, kept lazy."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset = storage, int(offset)
    self.size, self.stride = tuple(size), tuple(stride)

  def materialize(self, storages: Dict[str, np.ndarray]) -> np.ndarray:
    flat = storages[self.storage.key]
    if self.size and any(s == 0 for s in self.size):
      return np.zeros(self.size, flat.dtype)
    last = self.offset + sum((n - 1) * s for n, s in zip(self.size,
                                                          self.stride))
    if self.offset < 0 or last >= flat.size:
      raise UserError("corrupt weight file: a tensor reaches past its "
                      "storage")
    item = flat.itemsize
    return np.lib.stride_tricks.as_strided(
        flat[self.offset:], self.size, tuple(s * item for s in self.stride),
        writeable=False).copy()


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata
  return _TensorRef(storage, offset, size, stride)


def _rebuild_tensor(storage, offset, size, stride):
  return _TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


# The only globals a state dict needs; everything else is refused.
_ALLOWED: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
_ALLOWED.update({("torch", name): _StorageType(name) for name in _DTYPES})


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles a state dict; refuses every global outside ``_ALLOWED``."""

  def find_class(self, module, name):
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise pickle.UnpicklingError(
          f"refusing to load global {module}.{name}") from None

  def persistent_load(self, pid):
    # ('storage', storage_type, key, location, numel[, view_metadata])
    if (not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage"
        or not isinstance(pid[1], _StorageType)):
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
    return _StorageRef(str(pid[2]), pid[1].dtype, int(pid[4]))


def _unpickle(data: bytes):
  return _RestrictedUnpickler(io.BytesIO(data)).load()


def _collect_refs(obj) -> Dict[str, _StorageRef]:
  refs = {}
  if isinstance(obj, dict):
    for v in obj.values():
      refs.update(_collect_refs(v))
  elif isinstance(obj, _TensorRef):
    refs[obj.storage.key] = obj.storage
  return refs


def _finish(obj, storages) -> Dict[str, np.ndarray]:
  if isinstance(obj, dict) and "state_dict" in obj and isinstance(
      obj["state_dict"], dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict):
    raise UserError("the weight file does not hold a state dict")
  out = {}
  for k, v in obj.items():
    if isinstance(v, _TensorRef):
      out[str(k)] = v.materialize(storages)
  return out


def _load_zip(path: str) -> Dict[str, np.ndarray]:
  with zipfile.ZipFile(path) as zf:
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pkl) != 1:
      raise UserError(f"{path}: not a PyTorch checkpoint (no data.pkl)")
    prefix = pkl[0][:-len("data.pkl")]
    if f"{prefix}byteorder" in names and zf.read(
        f"{prefix}byteorder").strip() != b"little":
      raise UserError(f"{path}: big-endian checkpoints are not supported")
    obj = _unpickle(zf.read(pkl[0]))
    storages = {}
    for key, ref in _collect_refs(obj).items():
      raw = zf.read(f"{prefix}data/{key}")
      # numel counts elements for typed storages; trust the bytes present.
      storages[key] = np.frombuffer(raw, ref.dtype,
                                    count=len(raw) // ref.dtype.itemsize)
  return _finish(obj, storages)


def _load_legacy(path: str) -> Dict[str, np.ndarray]:
  """The pre-1.6 format: magic, version, sys info, data, keys, storages."""
  with open(path, "rb") as f:
    unp = lambda: _RestrictedUnpickler(f).load()  # noqa: E731
    if unp() != _LEGACY_MAGIC:
      raise UserError(f"{path}: not a PyTorch checkpoint")
    unp()  # protocol version
    info = unp()
    if isinstance(info, dict) and not info.get("little_endian", True):
      raise UserError(f"{path}: big-endian checkpoints are not supported")
    obj = unp()
    keys = unp()
    refs = _collect_refs(obj)
    storages = {}
    for key in keys:
      (numel,) = struct.unpack("<q", f.read(8))
      ref = refs.get(str(key))
      dtype = ref.dtype if ref is not None else np.dtype("<f4")
      left = os.fstat(f.fileno()).st_size - f.tell()
      if not 0 <= numel * dtype.itemsize <= left:
        raise ValueError(f"storage {key} of {numel} elements does not fit "
                         f"in the file")
      raw = f.read(numel * dtype.itemsize)
      storages[str(key)] = np.frombuffer(raw, dtype, count=numel)
  return _finish(obj, storages)


def load_pth(path: str) -> Dict[str, np.ndarray]:
  """Reads a PyTorch state dict (zip or legacy format) into numpy arrays.

  Only ``collections.OrderedDict``, the ``torch._utils`` tensor rebuilders
  and the ``torch.*Storage`` types may appear as pickle globals; anything
  else (``os.system``, ...) is refused with a ``UserError``.
  """
  try:
    if zipfile.is_zipfile(path):
      return _load_zip(path)
    return _load_legacy(path)
  except (UserError, OSError):
    raise
  except Exception as e:  # pylint: disable=broad-except
    # Whatever a damaged or foreign file makes the unpickler or the zip
    # reader raise (UnpicklingError, EOFError, OverflowError, TypeError,
    # NotImplementedError for an unsupported zip compression, ...).
    raise UserError(f"cannot read weight file {path}: "
                    f"{type(e).__name__}: {e}".splitlines()[0]) from None


def missing_weights_message(path: Optional[str]) -> str:
  where = (f"not found at {path}" if path else
           "not given (--inception_weights)")
  return (f"Inception weights {where}; download {WEIGHTS_NAME} "
          "from the pytorch-fid releases and pass --inception_weights=PATH")


def load_variables(path: Optional[str]):
  """Flax variables of the FID Inception from pytorch-fid's .pth file."""
  if not path or not os.path.isfile(path):
    raise UserError(missing_weights_message(path))
  return jax.tree.map(jnp.asarray, variables_from_state_dict(load_pth(path)))


def make_apply(variables, resize_input: bool = True) -> Callable:
  """A jitted ``apply(images in [-1, 1], NHWC) -> (pool3, logits)``."""
  apply_jit = jax.jit(InceptionV3(resize_input=resize_input).apply)
  # Weights are an argument, not constants baked into the compiled program.
  return lambda x: apply_jit(variables, x)


def load(path: Optional[str]) -> Callable:
  """``apply`` with the weights of pytorch-fid's file at ``path``."""
  return make_apply(load_variables(path))


@functools.lru_cache(maxsize=2)
def cached(path: str) -> Callable:
  return load(path)


__all__: Sequence[str] = (
    "InceptionV3", "load", "load_pth", "load_variables", "make_apply",
    "state_dict_shapes", "variables_from_state_dict", "init_random")
