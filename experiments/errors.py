"""The trainer's error for configs it refuses: a module of its own, so that every layer
(``input_pipeline``, ``checks``, ``workdir``, ``train``) can raise it without importing another."""

from __future__ import annotations


class ConfigError(ValueError):
  """The config or the workdir cannot be used; raised before anything is compiled or written."""
