"""Convolutions as patches times a matrix (im2col), for the parts that differentiate the model.

Why: XLA:CPU rewrites convolutions into the layout its fast (Eigen) kernels take only in the
top-level computation, not inside loop bodies. The gradient of a convolution (JAX's transposed
convolutions) is in another layout, so a gradient or Hessian-vector product inside
``lax.fori_loop``/``scan``/``map`` (Lanczos, Hutchinson, ``gradient_variance``) falls back to a
naive kernel. For the small CNN on 512 images: one HVP 0.5 s at top level, 6.8 s inside a loop,
0.8 s inside a loop with im2col (forward alone: 0.06 s lax, 0.16 s im2col, so forward-only parts
keep lax). Same values up to float32 rounding (2e-6 relative on that HVP).

How: every model of ``experiments.models`` hands its ``conv_general_dilated_cls`` to its
``nn.Conv`` layers (Flax's hook); ``model.clone(conv_general_dilated_cls=im2col_conv_cls)`` is
the same model, with the same parameters, computing its convolutions with :func:`im2col_conv`.
``--conv auto`` (:func:`conv_cls`) uses :func:`im2col_on_cpu_conv`, which decides per lowering
platform (``lax.platform_dependent``): im2col where the program is lowered for the CPU, XLA's
convolution for any other platform, so an export for an accelerator made on a CPU host keeps
XLA's convolution.
"""

from __future__ import annotations

from collections.abc import Callable


def conv_cls(conv: str) -> Callable | None:
  """The ``conv_general_dilated_cls`` of ``--conv``: ``None`` (XLA's convolution) for ``lax``,
  :func:`im2col_conv_cls` for ``im2col``, :func:`im2col_on_cpu_conv_cls` for ``auto``."""
  classes = {"lax": None, "im2col": im2col_conv_cls, "auto": im2col_on_cpu_conv_cls}
  if conv not in classes:
    raise ValueError(f"conv mode {conv!r}; valid: {', '.join(classes)}")
  return classes[conv]


def convolution_note(conv: str, platform: str) -> str:
  """analysis.json's account of the convolutions for ``--conv conv`` on devices of ``platform``
  (the analysis's own: the platform ``auto`` is lowered for)."""
  used = conv if conv != "auto" else ("im2col" if platform == "cpu" else "lax")
  label = used if conv != "auto" else f"{used} (auto, lowered for {platform})"
  if used == "lax":
    return f"{label}: XLA's convolution in every part"
  return (
    f"{label}: hessian, spectrum and variance run convolutions as im2col (patches times kernel), "
    "the other parts with XLA's convolution"
  )


def im2col_conv(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  batch_group_count=1,
  precision=None,
  preferred_element_type=None,
):
  """``lax.conv_general_dilated`` as shifted slices of the input times the reshaped kernel.

  The same function (one sum over the same products, in a different order), for 2-D
  channel-last convolutions (``NHWC`` input, ``HWIO`` kernel; Flax's layout) with any strides,
  padding and kernel dilation; every other case (groups, input dilation, other layouts, negative
  padding) falls through to ``lax.conv_general_dilated``. Its derivatives are slices, pads and
  matrix products, which XLA:CPU runs at full speed inside loops (see the module docstring).
  """
  import jax

  def fallback():
    return jax.lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count,
      precision=precision,
      preferred_element_type=preferred_element_type,
    )

  if lhs.ndim != 4 or rhs.ndim != 4 or feature_group_count != 1 or batch_group_count != 1:
    return fallback()
  if lhs_dilation is not None and any(d != 1 for d in lhs_dilation):
    return fallback()
  channel_last = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
  if jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != channel_last:
    return fallback()
  kh, kw, cin, cout = rhs.shape
  n, height, width, channels = lhs.shape
  if channels != cin:
    return fallback()
  dh, dw = (1, 1) if rhs_dilation is None else tuple(rhs_dilation)
  sh, sw = tuple(window_strides)
  span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads((height, width), (span_h, span_w), (sh, sw), padding)
  (top, bottom), (left, right) = padding
  if min(top, bottom, left, right) < 0:
    return fallback()
  padded = jax.lax.pad(
    lhs, jax.numpy.zeros((), lhs.dtype), ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0))
  )
  out_h = (height + top + bottom - span_h) // sh + 1
  out_w = (width + left + right - span_w) // sw + 1
  columns = [
    jax.lax.slice(
      padded,
      (0, i * dh, j * dw, 0),
      (n, i * dh + (out_h - 1) * sh + 1, j * dw + (out_w - 1) * sw + 1, cin),
      (1, sh, sw, 1),
    )
    for i in range(kh)
    for j in range(kw)
  ]
  patches = columns[0] if len(columns) == 1 else jax.numpy.concatenate(columns, axis=-1)
  return jax.lax.dot_general(
    patches,
    rhs.reshape(kh * kw * cin, cout),
    (((3,), (0,)), ((), ())),
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


def im2col_on_cpu_conv(lhs, rhs, window_strides, padding, **kwargs):
  """:func:`im2col_conv` where the computation is lowered for the CPU, XLA's convolution where it
  is lowered for any other platform (``lax.platform_dependent``): an export for an accelerator
  made on a CPU host, or a multi-platform export, keeps XLA's convolution there. Both compute
  the same function with the same shapes and dtypes."""
  import functools

  import jax

  args = dict(window_strides=window_strides, padding=padding, **kwargs)
  return jax.lax.platform_dependent(
    lhs,
    rhs,
    cpu=functools.partial(im2col_conv, **args),
    default=functools.partial(jax.lax.conv_general_dilated, **args),
  )


def im2col_conv_cls() -> Callable:
  """``nn.Conv(conv_general_dilated_cls=im2col_conv_cls)``: Flax calls it for the convolution."""
  return im2col_conv


def im2col_on_cpu_conv_cls() -> Callable:
  """``nn.Conv(conv_general_dilated_cls=...)`` for :func:`im2col_on_cpu_conv`."""
  return im2col_on_cpu_conv
