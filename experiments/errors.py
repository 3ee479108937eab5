"""The trainer's errors for configs it refuses and data it lacks: a module of its own, so that
every layer (``input_pipeline``, ``checks``, ``workdir``, ``train``) can raise them without
importing another, and the commands can catch them without importing JAX (which
``input_pipeline`` does) before their ``--help``."""

from __future__ import annotations


class ConfigError(ValueError):
  """The config or the workdir cannot be used; raised before anything is compiled or written."""


class DataMissingError(RuntimeError):
  """Data a run needs is not in ``data_dir`` and cannot be fetched; says how to get it."""


class CheckpointError(RuntimeError):
  """A checkpoint could not be written, or, resuming, none of the saved ones could be read; says
  which checkpoint is intact."""
