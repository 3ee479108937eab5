"""zosam_jax: sharpness-aware and zeroth-order optimisation for sparse training."""
