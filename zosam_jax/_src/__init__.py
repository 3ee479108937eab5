"""The private layer: helpers shared by the public modules of ``zosam_jax``.

Public modules import these modules (``from zosam_jax._src import trees``) and use their
public names; nothing outside ``zosam_jax`` should rely on them.
"""
