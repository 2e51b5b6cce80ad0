"""PyTorch reference of gan_jax's train step, for ``train_step.py``.

The same architectures, built from the same ``Config``, and the same update
as ``gan_jax.steps.local_step`` with ``--d_steps=1``:

* D update: fake = G(z) in train mode without gradient; D sees
  concat(real, fake) in one pass, or, when D has BatchNorm (DCGAN), real and
  fake in two passes with their own batch statistics, as ``steps.d_update``
  does (and the DCGAN reference code); cross-entropy loss; Adam.
* G update: fresh z, fake = G(z), loss on D(fake) (``--loss=ns``:
  softplus(-logit)), gradient with respect to G only (D's parameters are
  frozen for the pass, as ``jax.grad`` over G's parameters computes nothing
  for D); Adam.

DCGAN (Radford et al. 2015; ``gan_jax/models/dcgan.py``): G = Dense (no bias)
-> BatchNorm, ReLU -> 4x4 stride-2 transposed convolutions (PyTorch's native
layer; gan_jax computes the same function as a sub-pixel convolution) with
BatchNorm and ReLU -> tanh; D = 4x4 stride-2 convolutions, LeakyReLU 0.2,
BatchNorm except on the input layer, a linear output. PacGAN toy pair (Lin et
al. 2018; ``gan_jax/models/mlp.py``): G = 4 x (Dense 400 without bias,
BatchNorm, ReLU), linear 2-D output; D = 3 maxout layers of 200 units x 5
pieces, linear output. BatchNorm: momentum 0.1, epsilon 1e-5 in both.

Mixed precision (``compute_dtype='bfloat16'``, the counterpart of gan_jax's
``--compute_dtype=bfloat16``): the steps run under ``torch.autocast`` with
bfloat16, so convolutions and matrix products compute in bfloat16 while
parameters and Adam's moments stay float32.

Only the (optional) ``torch==2.13.0`` extra is needed: ``pip install -e
'.[torch]'`` (the CPU build; a CUDA build for ``device='cuda'``).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from gan_jax.errors import UserError


class UnsupportedConfig(UserError, ValueError):
  """The reference does not implement this configuration (a UserError: the
  benchmark reports it in one line, as it does gan_jax's own)."""


def _levels(size: int):
  for base in (4, 7):
    k, s = 0, size
    while s > base and s % 2 == 0:
      s //= 2
      k += 1
    if s == base and k >= 1:
      return base, k
  raise UnsupportedConfig(f"unsupported image size {size}")


def _dcgan_init(module: nn.Module):
  """Radford et al. (2015): every weight from N(0, 0.02)."""
  for m in module.modules():
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
      nn.init.normal_(m.weight, 0.0, 0.02)
      if m.bias is not None:
        nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):

  def __init__(self, z_dim: int, shape, channels: int):
    super().__init__()
    size, out_c = shape[0], shape[-1]
    base, ups = _levels(size)
    width = channels * 2 ** (ups - 1)
    self.base, self.width = base, width
    self.fc = nn.Linear(z_dim, base * base * width, bias=False)
    self.bn0 = nn.BatchNorm2d(width, eps=1e-5, momentum=0.1)
    blocks = []
    for _ in range(ups - 1):
      blocks += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                 nn.BatchNorm2d(width // 2, eps=1e-5, momentum=0.1),
                 nn.ReLU()]
      width //= 2
    blocks += [nn.ConvTranspose2d(width, out_c, 4, 2, 1), nn.Tanh()]
    self.blocks = nn.Sequential(*blocks)
    _dcgan_init(self)

  def forward(self, z):
    h = self.fc(z).view(-1, self.width, self.base, self.base)
    return self.blocks(F.relu(self.bn0(h)))


class DCGANDiscriminator(nn.Module):

  def __init__(self, shape, channels: int):
    super().__init__()
    size, in_c = shape[0], shape[-1]
    base, downs = _levels(size)
    layers, width = [], channels
    for i in range(downs):
      layers.append(nn.Conv2d(in_c, width, 4, 2, 1, bias=(i == 0)))
      if i > 0:
        layers.append(nn.BatchNorm2d(width, eps=1e-5, momentum=0.1))
      layers.append(nn.LeakyReLU(0.2))
      in_c, width = width, width * 2
    self.features = nn.Sequential(*layers)
    self.fc = nn.Linear(base * base * in_c, 1)
    _dcgan_init(self)

  def forward(self, x):
    return self.fc(self.features(x).flatten(1))[:, 0]


class MLPGenerator(nn.Module):

  def __init__(self, z_dim: int, out_dim: int, hidden: int, layers: int):
    super().__init__()
    mods, d = [], z_dim
    for _ in range(layers):
      mods += [nn.Linear(d, hidden, bias=False),
               nn.BatchNorm1d(hidden, eps=1e-5, momentum=0.1), nn.ReLU()]
      d = hidden
    mods.append(nn.Linear(d, out_dim))
    self.net = nn.Sequential(*mods)

  def forward(self, z):
    return self.net(z)


class Maxout(nn.Module):

  def __init__(self, d_in: int, features: int, pieces: int):
    super().__init__()
    self.features, self.pieces = features, pieces
    self.fc = nn.Linear(d_in, features * pieces)

  def forward(self, x):
    h = self.fc(x).view(-1, self.features, self.pieces)
    return h.max(dim=-1).values


class MaxoutDiscriminator(nn.Module):

  def __init__(self, d_in: int, hidden: int, layers: int, pieces: int):
    super().__init__()
    mods, d = [], d_in
    for _ in range(layers):
      mods.append(Maxout(d, hidden, pieces))
      d = hidden
    mods.append(nn.Linear(d, 1))
    self.net = nn.Sequential(*mods)

  def forward(self, x):
    return self.net(x.flatten(1))[:, 0]


def build_models(cfg, shape):
  """(G, D) for ``cfg``'s architectures (dcgan or the PacGAN toy pair),
  sized as gan_jax builds them (the knobs of the g and d sections, or the
  architectures' defaults)."""
  from gan_jax import models  # pylint: disable=import-outside-toplevel
  g, d = (models.build(side, cfg, shape, 0) for side in ("g", "d"))
  if cfg.generator == "dcgan" and cfg.discriminator == "dcgan":
    return (DCGANGenerator(cfg.z_dim, shape, g.channels),
            DCGANDiscriminator(shape, d.channels))
  if cfg.generator == "pacgan_mlp" and cfg.discriminator == "pacgan_maxout":
    out = math.prod(shape)
    return (MLPGenerator(cfg.z_dim, out, g.hidden, g.layers),
            MaxoutDiscriminator(out * cfg.pack, d.hidden, d.layers,
                                d.pieces))
  raise UnsupportedConfig(f"no PyTorch reference for {cfg.generator}/"
                          f"{cfg.discriminator}")


def num_params(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())


class TrainStep:
  """``run(n)`` performs n steps (one D then one G update each).

  ``real_batches``: (k, B, C, H, W) synthetic images cycled through, or None
  to sample the 2-D ring (Lin et al. 2018: 8 modes, radius 1, std 0.01) each
  step as gan_jax samples toy data on device.
  """

  def __init__(self, cfg, shape, real_batches: Optional[torch.Tensor] = None,
               seed: int = 0, device: str = "cpu",
               compute_dtype: str = "float32"):
    if cfg.loss != "ns" or cfg.d_steps != 1 or cfg.pack != 1:
      raise UnsupportedConfig("the reference implements --loss=ns "
                              "--d_steps=1 --pack=1")
    torch.manual_seed(seed)
    self.cfg = cfg
    self.batch = cfg.batch_size
    self.device = torch.device(device)
    if self.device.type == "cuda":
      # The arithmetic JAX uses by default on a GPU: TF32 for float32
      # products and convolutions (torch's default keeps nn.Linear at full
      # float32); and cuDNN's algorithm search, as a tuned eager run has.
      torch.set_float32_matmul_precision("high")
      torch.backends.cudnn.allow_tf32 = True
      torch.backends.cudnn.benchmark = True
    if compute_dtype not in ("float32", "bfloat16"):
      raise UnsupportedConfig(f"unknown compute_dtype {compute_dtype!r}")
    self.autocast = compute_dtype == "bfloat16"
    self.g, self.d = (m.to(self.device) for m in build_models(cfg, shape))
    self.g.train()
    self.d.train()
    # Default Adam (single-tensor loop); eps 1e-8 as optax.adam.
    from gan_jax import optim  # pylint: disable=import-outside-toplevel
    adam = {side: {k: optim.setting(cfg, side, k) for k in ("lr", "b1", "b2")}
            for side in "gd"}
    self.g_opt = torch.optim.Adam(self.g.parameters(), lr=adam["g"]["lr"],
                                  betas=(adam["g"]["b1"], adam["g"]["b2"]),
                                  eps=1e-8)
    self.d_opt = torch.optim.Adam(self.d.parameters(), lr=adam["d"]["lr"],
                                  betas=(adam["d"]["b1"], adam["d"]["b2"]),
                                  eps=1e-8)
    self.real_batches = real_batches
    self.d_batchnorm = any(
        isinstance(m, nn.modules.batchnorm._BatchNorm)  # pylint: disable=protected-access
        for m in self.d.modules())
    self.i = 0
    angles = torch.arange(8, dtype=torch.float32) * (2 * math.pi / 8)
    self.means = torch.stack([torch.cos(angles), torch.sin(angles)],
                             1).to(self.device)
    self.sample_z: Callable[[int], torch.Tensor]
    dev = self.device
    if cfg.z_dist == "uniform":
      self.sample_z = lambda n: torch.rand(n, cfg.z_dim, device=dev) * 2 - 1
    else:
      self.sample_z = lambda n: torch.randn(n, cfg.z_dim, device=dev)

  def _real(self):
    if self.real_batches is None:
      comp = torch.randint(0, 8, (self.batch,), device=self.device)
      return self.means[comp] + 0.01 * torch.randn(self.batch, 2,
                                                   device=self.device)
    x = self.real_batches[self.i % self.real_batches.shape[0]]
    self.i += 1
    return x

  def step(self):
    b = self.batch
    # D update (one pass on concat(real, fake) unless D has BatchNorm).
    real = self._real()
    with torch.no_grad():
      fake = self.g(self.sample_z(b))
    if self.d_batchnorm:
      logits = torch.cat([self.d(real), self.d(fake)])
    else:
      logits = self.d(torch.cat([real, fake]))
    d_loss = F.softplus(-logits[:b]).mean() + F.softplus(logits[b:]).mean()
    self.d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    self.d_opt.step()
    # G update; D's parameters frozen for this pass.
    for p in self.d.parameters():
      p.requires_grad_(False)
    g_loss = F.softplus(-self.d(self.g(self.sample_z(b)))).mean()
    self.g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    self.g_opt.step()
    for p in self.d.parameters():
      p.requires_grad_(True)
    return d_loss, g_loss

  def run(self, n: int):
    """n steps; the final ``float()`` waits for the device (CUDA)."""
    with torch.autocast(self.device.type, dtype=torch.bfloat16,
                        enabled=self.autocast):
      for _ in range(n):
        out = self.step()
    return [float(v.detach()) for v in out]
