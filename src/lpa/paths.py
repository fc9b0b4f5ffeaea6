"""Where lpa keeps what it downloads or converts: one cache root for assets, datasets and GGUF conversions.

A leaf module (no lpa imports) so that assets, models and benchmarks can all ask for it without
importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The user cache folder of lpa (``$LPA_CACHE_DIR`` overrides)."""
    env = os.environ.get("LPA_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("lpa"))
