"""Paths a user types, made absolute once where they enter colorjax (CLI arguments, config values,
the Python API's entry points), so that everything below can rely on absolute paths (Orbax
requires them) whatever the current directory was.
"""
from __future__ import annotations

import os


def is_url(path: str | os.PathLike) -> bool:
  """'gs://bucket/x' and other `scheme://` paths, which are kept as they are."""
  return "://" in os.fspath(path)


def absolute(path: str | os.PathLike) -> str:
  """'runs/x' -> '<cwd>/runs/x', '~/x' -> '<home>/x'; 'gs://...' unchanged; '' stays ''."""
  text = os.fspath(path)
  if not text or is_url(text):
    return text
  return os.path.abspath(os.path.expanduser(text))
