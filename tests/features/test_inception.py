"""FID Inception-v3: shapes with random weights, .pth loading without torch."""

import collections
import pickle
import struct
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.errors import UserError
from gan_jax.features import inception


# ------------------------------------------- a writer of torch-format files
class _Global:
  """Pickled as the opcode ``GLOBAL module name``, like torch's own globals."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle wants reduce functions callable
    raise NotImplementedError


FLOAT_STORAGE = _Global("torch", "FloatStorage")
REBUILD_V2 = _Global("torch._utils", "_rebuild_tensor_v2")


class _Storage:
  def __init__(self, key, data):
    self.key, self.data = key, np.ascontiguousarray(data, "<f4").ravel()


class _Tensor:
  def __init__(self, storage, offset, size, stride):
    self.args = (storage, int(offset), tuple(int(n) for n in size),
                 tuple(int(n) for n in stride))

  def __reduce__(self):
    return REBUILD_V2, self.args + (False, collections.OrderedDict())


class _TorchPickler(pickle._Pickler):  # pylint: disable=protected-access
  """Emits what torch.save writes: GLOBALs and storage persistent ids."""
  dispatch = dict(pickle._Pickler.dispatch)  # pylint: disable=protected-access

  def _save_torch_global(self, obj):
    self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

  dispatch[_Global] = _save_torch_global

  def persistent_id(self, obj):
    if isinstance(obj, _Storage):
      return ("storage", FLOAT_STORAGE, obj.key, "cpu", obj.data.size)
    return None


def _pickle_torch(obj) -> bytes:
  import io  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  _TorchPickler(buf, protocol=2).dump(obj)
  return buf.getvalue()


def write_zip_pth(path, state, storages):
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
    zf.writestr("archive/data.pkl", _pickle_torch(state))
    zf.writestr("archive/byteorder", "little")
    for s in storages:
      zf.writestr(f"archive/data/{s.key}", s.data.tobytes())
    zf.writestr("archive/version", "3\n")


def write_legacy_pth(path, state, storages):
  with open(path, "wb") as f:
    for header in (0x1950a86a20f9469cfc6c, 1001,
                   {"protocol_version": 1001, "little_endian": True}):
      pickle.dump(header, f, protocol=2)
    f.write(_pickle_torch(state))
    pickle.dump([s.key for s in storages], f, protocol=2)
    for s in storages:
      f.write(struct.pack("<q", s.data.size) + s.data.tobytes())


def synthetic_state():
  """Every pytorch-fid key: most tensors a distinct constant (stride-0 view
  of a 1-element storage), a few full random ones, a strided and an offset
  view, as torch may write them."""
  rng = np.random.default_rng(0)
  shapes = inception.state_dict_shapes()
  state, storages, expected = collections.OrderedDict(), [], {}
  for i, (key, shape) in enumerate(sorted(shapes.items())):
    if key in ("Conv2d_1a_3x3.conv.weight", "Mixed_6b.branch7x7_2.conv.weight"):
      value = rng.normal(size=shape).astype(np.float32)
      s = _Storage(str(i), value)
      state[key] = _Tensor(s, 0, shape, np.cumprod((1,) + shape[:0:-1])[::-1])
    elif key == "fc.weight":  # a transposed view: storage holds W.T
      value = rng.normal(size=shape).astype(np.float32)
      s = _Storage(str(i), value.T)
      state[key] = _Tensor(s, 0, shape, (1, shape[0]))
    elif key == "Mixed_5b.branch1x1.bn.running_var":  # offset into storage
      value = rng.uniform(0.5, 2, size=shape).astype(np.float32)
      s = _Storage(str(i), np.concatenate([np.zeros(5, np.float32), value]))
      state[key] = _Tensor(s, 5, shape, (1,))
    else:
      value = np.full(shape, i + 1.0, np.float32)
      s = _Storage(str(i), np.array([i + 1.0]))
      state[key] = _Tensor(s, 0, shape, (0,) * len(shape))
    storages.append(s)
    expected[key] = value
  return state, storages, expected


# -------------------------------------------------------------------- tests
def test_state_dict_layout():
  shapes = inception.state_dict_shapes()
  assert len(shapes) == 472  # 94 conv+BN units x 5 tensors, fc weight+bias
  assert sum(np.prod(s) for s in shapes.values()) == 23885392
  assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
  assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
  assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
  assert shapes["fc.weight"] == (1008, 2048)


def test_random_weights_output_shapes():
  # Shapes only (compiling the whole network takes long on a shared CPU):
  # 299x299 RGB, and grayscale 28x28 resized to 299x299.
  variables = inception.variable_shapes()
  model = inception.InceptionV3()
  for shape in [(2, 299, 299, 3), (3, 28, 28, 1)]:
    feats, logits = jax.eval_shape(model.apply, variables, jnp.zeros(shape))
    assert feats.shape == (shape[0], 2048)
    assert logits.shape == (shape[0], 1008)


def test_random_weights_blocks_run():
  """The FID graph's last block (max-pool branch) runs with random weights."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 3, 3, 8)).astype(np.float32)
  block = inception.InceptionE(max_pool=True)
  # numpy weights: jitting Flax's random init compiles slowly on CPU.
  shapes = jax.eval_shape(block.init, jax.random.PRNGKey(0), x)
  variables = jax.tree.map(
      lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
      / np.sqrt(np.prod(s.shape[:-1])), shapes)
  y = jax.jit(block.apply)(variables, x)
  assert y.shape == (2, 3, 3, 2048) and np.isfinite(np.asarray(y)).all()


@pytest.mark.parametrize("writer", [write_zip_pth, write_legacy_pth])
def test_pth_round_trip(tmp_path, writer):
  state, storages, expected = synthetic_state()
  path = str(tmp_path / "pt_inception.pth")
  writer(path, state, storages)
  loaded = inception.load_pth(path)
  assert set(loaded) == set(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(loaded[key], value, err_msg=key)
  v = inception.variables_from_state_dict(loaded)
  p, bs = v["params"], v["batch_stats"]
  np.testing.assert_array_equal(
      p["Conv2d_1a_3x3"]["conv"]["kernel"],
      expected["Conv2d_1a_3x3.conv.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      p["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"],
      expected["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(p["fc"]["kernel"], expected["fc.weight"].T)
  np.testing.assert_array_equal(p["fc"]["bias"], expected["fc.bias"])
  np.testing.assert_array_equal(
      bs["Mixed_5b"]["branch1x1"]["bn"]["var"],
      expected["Mixed_5b.branch1x1.bn.running_var"])
  for name, key in [("scale", "weight"), ("bias", "bias")]:
    np.testing.assert_array_equal(
        p["Mixed_7c"]["branch3x3dbl_3b"]["bn"][name],
        expected[f"Mixed_7c.branch3x3dbl_3b.bn.{key}"])
  np.testing.assert_array_equal(
      bs["Mixed_7c"]["branch3x3dbl_3b"]["bn"]["mean"],
      expected["Mixed_7c.branch3x3dbl_3b.bn.running_mean"])
  # Same tree and shapes as the Flax model's own variables.
  ref = inception.variable_shapes()
  assert jax.tree.structure(v) == jax.tree.structure(ref)
  for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(ref)):
    assert a.shape == b.shape


def test_conv_layout_matches_numpy():
  """A loaded OIHW conv + BN computes what PyTorch's BasicConv2d would."""
  rng = np.random.default_rng(1)
  w = rng.normal(size=(4, 3, 1, 3)).astype(np.float32)  # OIHW, (1, 3) kernel
  gamma, beta = rng.uniform(0.5, 2, 4), rng.normal(size=4)
  mean, var = rng.normal(size=4), rng.uniform(0.5, 2, 4)
  x = rng.normal(size=(1, 5, 6, 3)).astype(np.float32)
  variables = {
      "params": {"conv": {"kernel": w.transpose(2, 3, 1, 0)},
                 "bn": {"scale": gamma, "bias": beta}},
      "batch_stats": {"bn": {"mean": mean, "var": var}}}
  got = inception.BasicConv(4, (1, 3), padding=(0, 1)).apply(variables, x)
  xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
  conv = np.zeros((1, 5, 6, 4))
  for i in range(5):
    for j in range(6):
      patch = xp[0, i:i + 1, j:j + 3, :]  # (1, 3, C_in)
      conv[0, i, j] = np.einsum("hwc,ochw->o", patch, w)
  want = np.maximum((conv - mean) / np.sqrt(var + 1e-3) * gamma + beta, 0)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_avg_pool_excludes_padding():
  x = jnp.ones((1, 4, 4, 1))
  # With padding excluded every window of ones averages to exactly 1.
  pooled = inception._avg_pool_same(x)  # pylint: disable=protected-access
  np.testing.assert_allclose(pooled, 1.0)


MALICIOUS = b"\x80\x02cos\nsystem\nX\x06\x00\x00\x00exit 7\x85R."


def test_malicious_global_refused_zip(tmp_path):
  path = str(tmp_path / "evil.pth")
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", MALICIOUS)
  with pytest.raises(UserError, match="refusing to load global os.system"):
    inception.load_pth(path)


def test_malicious_global_refused_legacy(tmp_path):
  path = str(tmp_path / "evil.pth")
  with open(path, "wb") as f:
    f.write(MALICIOUS)
  with pytest.raises(UserError, match="refusing to load global os.system"):
    inception.load_pth(path)


def test_missing_file_message(tmp_path):
  path = str(tmp_path / "nope.pth")
  with pytest.raises(UserError) as e:
    inception.load(path)
  msg = str(e.value)
  assert "\n" not in msg and path in msg
  assert "pt_inception-2015-12-05-6726825d.pth" in msg
  assert "--inception_weights=PATH" in msg


def test_wrong_keys_refused(tmp_path):
  state, storages, _ = synthetic_state()
  del state["fc.bias"]
  path = str(tmp_path / "partial.pth")
  write_zip_pth(path, state, storages)
  with pytest.raises(UserError, match="1 missing"):
    inception.variables_from_state_dict(inception.load_pth(path))


def test_damaged_or_foreign_files_are_one_user_error(tmp_path):
  """Random bytes (some start like a legacy pickle), a truncated and a
  bit-flipped real state dict, a zip stored with a compression method
  Python cannot read: always a UserError, never another exception."""
  rng = np.random.default_rng(0)
  blobs = [rng.bytes(64) for _ in range(200)]
  # Pickle-looking prefixes reach deeper into the legacy reader.
  blobs += [b"\x80\x02" + rng.bytes(62) for _ in range(100)]
  real = tmp_path / "real.pth"
  s = _Storage("0", np.arange(3.0))
  write_legacy_pth(str(real), collections.OrderedDict(w=_Tensor(s, 0, (3,), (1,))),
                   [s])
  assert set(inception.load_pth(str(real))) == {"w"}
  data = real.read_bytes()
  blobs += [data[:n] for n in range(1, len(data), 7)]
  for i in range(0, len(data), 5):
    flipped = bytearray(data)
    flipped[i] ^= 0xFF
    blobs.append(bytes(flipped))
  path = tmp_path / "w.pth"
  for blob in blobs:
    path.write_bytes(blob)
    try:
      inception.load_pth(str(path))
    except UserError as e:
      assert "\n" not in str(e)
    # A blob that happens to load is fine: no other exception may escape.
  # A zip member with an unsupported compression method (NotImplementedError).
  zpath = tmp_path / "z.pth"
  with zipfile.ZipFile(zpath, "w") as zf:
    zf.writestr("archive/data.pkl", pickle.dumps({}))
  raw = bytearray(zpath.read_bytes())
  for sig in (b"PK\x03\x04", b"PK\x01\x02"):  # method field: 99 (AES)
    at = raw.find(sig)
    offset = at + (8 if sig == b"PK\x03\x04" else 10)
    raw[offset:offset + 2] = struct.pack("<H", 99)
  zpath.write_bytes(bytes(raw))
  with pytest.raises(UserError, match="cannot read weight file"):
    inception.load_pth(str(zpath))


def test_is_logits_leave_out_the_fc_bias():
  """The Inception Score's reference code (improved-GAN, TTUR) takes
  pool3 @ W without the fc bias; the bias is still a loaded parameter."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 16)).astype(np.float32)
  kernel = rng.normal(size=(16, 5)).astype(np.float32)
  bias = rng.normal(size=(5,)).astype(np.float32)
  fc = inception.UnbiasedLogits(5)
  shapes = jax.eval_shape(fc.init, jax.random.PRNGKey(0), x)["params"]
  assert {k: v.shape for k, v in shapes.items()} == {"kernel": (16, 5),
                                                     "bias": (5,)}
  out = fc.apply({"params": {"kernel": kernel, "bias": bias}}, x)
  np.testing.assert_allclose(out, x @ kernel, rtol=1e-5, atol=1e-5)
