"""Hugging Face hub settings for evaluation: caches in the mhmoe home, offline unless asked.

Decision: evaluation runs offline by default (``HF_HUB_OFFLINE=1``, ``HF_DATASETS_OFFLINE=1``)
because the hub is unreachable where mhmoe runs; online, a missing dataset costs ~24 s of retries
before the same failure. ``online=True`` (``mhmoe eval --online``) turns the hub on. A value the
user exported wins over the offline default, so ``HF_HUB_OFFLINE=0`` also means online. Standard
lm-eval tasks whose datasets were fetched once (online) into ``home/huggingface`` keep working
offline from that cache.

The hub libraries read these variables when they are first imported, so :func:`configure_hub`
must run before ``lm_eval``/``datasets`` are imported; later calls cannot switch the mode.
"""

from __future__ import annotations

import logging
import os
import sys

from mhmoe.store.home import home_subdir

log = logging.getLogger(__name__)
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def configure_hub(online: bool = False) -> None:
    """Point HF caches into the mhmoe home and set offline mode (see the module docstring)."""
    os.environ.setdefault("HF_HOME", str(home_subdir("huggingface")))
    for var in OFFLINE_VARS:
        if online:
            os.environ[var] = "0"
        else:
            os.environ.setdefault(var, "1")
    if "datasets" in sys.modules or "huggingface_hub" in sys.modules:
        log.debug("hub libraries already imported: their offline mode was fixed at import time")


def hub_is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
