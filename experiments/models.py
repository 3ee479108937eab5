"""Flax (linen) image classifiers used by the experiments.

Every model is called as ``model.apply(variables, images, train=...)`` with ``images`` of
shape ``[N, H, W, C]`` and returns logits ``[N, num_classes]``. Models with BatchNorm keep
running statistics in the ``batch_stats`` collection: in training mode they normalise with
batch statistics and return the updated running averages when ``batch_stats`` is mutable.
The training loop updates those once per step, from the exact-gradient pass only.

Models:
* ``cnn``: a small two-conv CNN with BatchNorm for quick CPU runs.
* ``resnet20/32/56``: CIFAR ResNets of He et al. (2016), depth 6n+2, 16-32-64 channels,
  parameter-free shortcuts (option A: strided identity, zero-padded channels); ResNet-32 has
  about 0.46M parameters, as in the ZO-SAM paper.
* ``resnet18``: ImageNet-style ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no pool).
* ``wrn28_10``: WideResNet-28-10 (Zagoruyko & Komodakis, 2016), pre-activation blocks.
* ``vgg11_bn``: VGG-11 with BatchNorm, one linear classifier (CIFAR variant).
* ``resnet50``: ImageNet ResNet-50 (bottleneck blocks, 7x7 stem).
* ``deit_tiny``/``deit_small``: ViT encoders of DeiT (Touvron et al., 2021) with a class token.

Mixed precision: ``create_model(..., dtype="bfloat16")`` computes every layer in bfloat16 while
the parameters (and BatchNorm's running statistics) stay float32 (Flax ``dtype`` /
``param_dtype``): the optimizer, the SAM perturbation and the zeroth-order directions all work
on float32 master weights, and each layer casts them to bfloat16 when it runs. Logits are
returned in float32 so the loss is reduced in float32 (see docs/flax.md on why zeroth-order
differences need it). ``dtype="float32"`` (the default) computes exactly as before.

Convolutions: every model takes ``conv_general_dilated_cls``, handed to each of its ``nn.Conv``
layers (Flax's hook: a zero-argument callable returning the convolution function). ``None``, the
default, is ``lax.conv_general_dilated``; ``experiments.analyze`` swaps in an im2col convolution
where XLA:CPU's is slow (``model.clone(conv_general_dilated_cls=...)``; same parameters).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# Computation dtypes of create_model(dtype=...); parameters are always float32.
DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _bn(train: bool, name: str | None = None, *, dtype: Any, **kwargs: Any) -> nn.BatchNorm:
  # Flax reduces the batch statistics in float32 whatever `dtype` is.
  return nn.BatchNorm(
    use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name, dtype=dtype, **kwargs
  )


def _conv(
  features: int, kernel: int, stride: int = 1, *, dtype: Any, conv_cls: Any, **kwargs: Any
) -> nn.Conv:
  """A bias-free ``kernel x kernel`` convolution with He (fan-out) initialisation, as every conv
  of the ResNets and the CNN, computed by ``conv_cls`` (None: lax's); ``kwargs``: ``padding``,
  ``name``."""
  return nn.Conv(
    features,
    (kernel, kernel),
    (stride, stride),
    use_bias=False,
    kernel_init=_conv_init,
    dtype=dtype,
    conv_general_dilated_cls=conv_cls,
    **kwargs,
  )


def _classifier(x: jax.Array, num_classes: int, dtype: Any) -> jax.Array:
  """Global average pooling and the linear ``head``; float32 logits."""
  x = jnp.mean(x, axis=(1, 2))
  return nn.Dense(num_classes, name="head", dtype=dtype)(x).astype(jnp.float32)


def _stages(
  x: jax.Array, train: bool, block: Callable[..., nn.Module], widths, depths, dtype, conv_cls
):
  """Residual stages: stage ``s`` is ``depths[s]`` blocks of ``widths[s]`` features, the first
  block of every stage but the first with stride 2; blocks are named ``stage{s}_block{b}``."""
  for stage, (features, blocks) in enumerate(zip(widths, depths, strict=True)):
    for b in range(blocks):
      stride = 2 if stage > 0 and b == 0 else 1
      name = f"stage{stage}_block{b}"
      x = block(features, stride, name=name, dtype=dtype, conv_general_dilated_cls=conv_cls)(
        x, train
      )
  return x


class SmallCNN(nn.Module):
  """conv(16)-BN-ReLU-pool, conv(32)-BN-ReLU-pool, dense(128)-ReLU, dense(classes)."""

  num_classes: int = 10
  width: int = 16
  dtype: Any = jnp.float32  # computation dtype of every layer (parameters: float32)
  conv_general_dilated_cls: Any = None  # nn.Conv's hook (None: lax's convolution)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    for i, features in enumerate((self.width, 2 * self.width)):
      conv_cls = self.conv_general_dilated_cls
      x = _conv(features, 3, name=f"conv{i}", dtype=self.dtype, conv_cls=conv_cls)(x)
      x = nn.relu(_bn(train, name=f"bn{i}", dtype=self.dtype)(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(128, name="fc0", dtype=self.dtype)(x))
    return nn.Dense(self.num_classes, name="head", dtype=self.dtype)(x).astype(jnp.float32)


class _Block(nn.Module):
  """A residual block: ``features`` channels, ``stride`` on its strided convolution."""

  features: int
  stride: int = 1
  dtype: Any = jnp.float32
  conv_general_dilated_cls: Any = None

  def conv(self, features: int, kernel: int, stride: int = 1, **kwargs: Any) -> nn.Conv:
    """:func:`_conv` in this block's dtype and convolution."""
    return _conv(
      features, kernel, stride, dtype=self.dtype, conv_cls=self.conv_general_dilated_cls, **kwargs
    )

  def convs(self, x: jax.Array, train: bool) -> jax.Array:
    """The basic and wide blocks' branch: 3x3 conv (strided), BN, ReLU, 3x3 conv. Called
    from a compact ``__call__``, so its layers are that call's submodules."""
    y = self.conv(self.features, 3, self.stride, padding=1)(x)
    y = nn.relu(_bn(train, dtype=self.dtype)(y))
    return self.conv(self.features, 3, padding=1)(y)


class CifarBasicBlock(_Block):
  """Post-activation basic block with an option-A (parameter-free) shortcut."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = self.convs(x, train)  # before the BN: layers are named in the order they are built
    y = _bn(train, dtype=self.dtype)(y)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = x[:, :: self.stride, :: self.stride, :]
      extra = self.features - x.shape[-1]
      shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    return nn.relu(y + shortcut)


class CifarResNet(nn.Module):
  """ResNet-(6n+2) for 32x32 inputs (He et al., 2016, section 4.2)."""

  depth: int = 32
  num_classes: int = 10
  dtype: Any = jnp.float32
  conv_general_dilated_cls: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    if (self.depth - 2) % 6:
      raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {self.depth}")
    n = (self.depth - 2) // 6
    conv_cls = self.conv_general_dilated_cls
    x = _conv(16, 3, padding=1, name="stem", dtype=self.dtype, conv_cls=conv_cls)(x)
    x = nn.relu(_bn(train, name="stem_bn", dtype=self.dtype)(x))
    x = _stages(x, train, CifarBasicBlock, (16, 32, 64), (n, n, n), self.dtype, conv_cls)
    return _classifier(x, self.num_classes, self.dtype)


class BasicBlock(_Block):
  """ResNet-18/34 basic block with a 1x1-conv projection shortcut."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = self.convs(x, train)
    y = _bn(train, scale_init=nn.initializers.zeros, dtype=self.dtype)(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = self.conv(self.features, 1, self.stride)(x)
      x = _bn(train, dtype=self.dtype)(x)
    return nn.relu(x + y)


class Bottleneck(_Block):
  """ResNet-50 bottleneck block (stride on the 3x3 conv), expansion 4."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = self.conv(self.features, 1)(x)
    y = nn.relu(_bn(train, dtype=self.dtype)(y))
    y = self.conv(self.features, 3, self.stride, padding=1)(y)
    y = nn.relu(_bn(train, dtype=self.dtype)(y))
    y = self.conv(4 * self.features, 1)(y)
    y = _bn(train, scale_init=nn.initializers.zeros, dtype=self.dtype)(y)
    if self.stride != 1 or x.shape[-1] != 4 * self.features:
      x = self.conv(4 * self.features, 1, self.stride)(x)
      x = _bn(train, dtype=self.dtype)(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ImageNet-family ResNet; ``cifar_stem`` swaps the 7x7/2 conv + max-pool for a 3x3/1 conv."""

  stage_sizes: Sequence[int]
  block: Callable[..., nn.Module]
  num_classes: int = 1000
  cifar_stem: bool = False
  dtype: Any = jnp.float32
  conv_general_dilated_cls: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    conv_cls = self.conv_general_dilated_cls
    if self.cifar_stem:
      x = _conv(64, 3, padding=1, name="stem", dtype=self.dtype, conv_cls=conv_cls)(x)
      x = nn.relu(_bn(train, name="stem_bn", dtype=self.dtype)(x))
    else:
      x = _conv(64, 7, 2, padding=3, name="stem", dtype=self.dtype, conv_cls=conv_cls)(x)
      x = nn.relu(_bn(train, name="stem_bn", dtype=self.dtype)(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    widths = [64 * 2**stage for stage in range(len(self.stage_sizes))]
    x = _stages(x, train, self.block, widths, self.stage_sizes, self.dtype, conv_cls)
    return _classifier(x, self.num_classes, self.dtype)


class WideBlock(_Block):
  """Pre-activation wide block (BN-ReLU-conv x2) with a 1x1 projection when shapes change."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out = nn.relu(_bn(train, dtype=self.dtype)(x))
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = self.conv(self.features, 1, self.stride)(out)
    return self.convs(out, train) + shortcut


class WideResNet(nn.Module):
  """WRN-depth-width for 32x32 inputs."""

  depth: int = 28
  width: int = 10
  num_classes: int = 10
  dtype: Any = jnp.float32
  conv_general_dilated_cls: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    n = (self.depth - 4) // 6
    conv_cls = self.conv_general_dilated_cls
    x = _conv(16, 3, padding=1, name="stem", dtype=self.dtype, conv_cls=conv_cls)(x)
    widths = (16 * self.width, 32 * self.width, 64 * self.width)
    x = _stages(x, train, WideBlock, widths, (n, n, n), self.dtype, conv_cls)
    x = nn.relu(_bn(train, name="final_bn", dtype=self.dtype)(x))
    return _classifier(x, self.num_classes, self.dtype)


class VGG(nn.Module):
  """VGG with BatchNorm for CIFAR: conv stack, global pooling, one linear classifier."""

  layers: Sequence[int | str] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
  num_classes: int = 10
  dtype: Any = jnp.float32
  conv_general_dilated_cls: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    for item in self.layers:
      if item == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      else:
        x = nn.Conv(
          int(item),
          (3, 3),
          padding=1,
          kernel_init=_conv_init,
          dtype=self.dtype,
          conv_general_dilated_cls=self.conv_general_dilated_cls,
        )(x)
        x = nn.relu(_bn(train, dtype=self.dtype)(x))
    return _classifier(x, self.num_classes, self.dtype)  # 1x1 spatial on 32x32 inputs.


class EncoderBlock(nn.Module):
  """Pre-LayerNorm transformer block: MHSA and a GELU MLP, each with a residual."""

  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)(x)
    y = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads,
      deterministic=not train,
      dropout_rate=self.dropout_rate,
      dtype=self.dtype,
    )(y, y)
    x = x + nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype)(x)
    y = nn.gelu(nn.Dense(self.mlp_dim, dtype=self.dtype)(y))
    y = nn.Dense(x.shape[-1], dtype=self.dtype)(
      nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    )
    return x + nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class VisionTransformer(nn.Module):
  """ViT/DeiT classifier with a class token and learned position embeddings."""

  patch_size: int = 16
  hidden_dim: int = 192
  depth: int = 12
  num_heads: int = 3
  mlp_ratio: int = 4
  num_classes: int = 1000
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  conv_general_dilated_cls: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    p = self.patch_size
    x = nn.Conv(
      self.hidden_dim,
      (p, p),
      (p, p),
      padding="VALID",
      name="patch_embed",
      dtype=self.dtype,
      conv_general_dilated_cls=self.conv_general_dilated_cls,
    )(x)
    n, h, w, c = x.shape
    x = x.reshape((n, h * w, c))
    cls = self.param("cls_token", nn.initializers.zeros, (1, 1, c))
    # The float32 parameters join the activations in their dtype (no silent upcast).
    x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, c)).astype(x.dtype), x], axis=1)
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, h * w + 1, c))
    x = x + pos.astype(x.dtype)
    for i in range(self.depth):
      x = EncoderBlock(
        self.num_heads, self.mlp_ratio * c, self.dropout_rate, name=f"block{i}", dtype=self.dtype
      )(x, train)
    x = nn.LayerNorm(epsilon=1e-6, name="norm", dtype=self.dtype)(x[:, 0])
    x = nn.Dense(
      self.num_classes, kernel_init=nn.initializers.zeros, name="head", dtype=self.dtype
    )(x)
    return x.astype(jnp.float32)


_FACTORIES: dict[str, Callable[..., nn.Module]] = {
  "cnn": SmallCNN,
  "resnet20": functools.partial(CifarResNet, depth=20),
  "resnet32": functools.partial(CifarResNet, depth=32),
  "resnet56": functools.partial(CifarResNet, depth=56),
  "resnet18": functools.partial(
    ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock, cifar_stem=True
  ),
  "wrn28_10": functools.partial(WideResNet, depth=28, width=10),
  "vgg11_bn": VGG,
  "resnet50": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck),
  "deit_tiny": functools.partial(VisionTransformer, hidden_dim=192, depth=12, num_heads=3),
  "deit_small": functools.partial(VisionTransformer, hidden_dim=384, depth=12, num_heads=6),
}

MODELS: tuple[str, ...] = tuple(_FACTORIES)


def create_model(
  name: str, num_classes: int, *, dtype: str = "float32", **kwargs: Any
) -> nn.Module:
  """Builds model ``name`` (one of ``MODELS``) with ``num_classes`` outputs.

  ``dtype``: the computation dtype, a key of ``DTYPES`` (``"bfloat16"``: mixed precision with
  float32 parameters, see the module docstring). ``kwargs`` go to the module (e.g.
  ``patch_size=4`` for a DeiT on 32x32 images).
  """
  if name not in _FACTORIES:
    raise ValueError(f"unknown model '{name}'; valid: {', '.join(MODELS)}")
  if dtype not in DTYPES:
    raise ValueError(f"unknown model dtype {dtype!r}; valid: {', '.join(DTYPES)}")
  return _FACTORIES[name](num_classes=num_classes, dtype=DTYPES[dtype], **kwargs)


def count_params(params: Any) -> int:
  """Number of scalars in a parameter pytree (works on ``jax.ShapeDtypeStruct`` leaves)."""
  return sum(math.prod(jnp.shape(x)) for x in jax.tree.leaves(params))
