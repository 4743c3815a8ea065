"""Can a Hugging Face model named in a config be loaded from here? Asked before a run starts.

A name that is not a local folder loads from the local cache, else from the hub. A dry run or
`validate` asks once: the cache, then (unless the hub is switched off) one request with a short
timeout, so an offline machine learns it now instead of from a trial retrying the hub.
"""

from __future__ import annotations

import os

from .errors import ConfigError

TIMEOUT_S = 5.0
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def check_hub_model(name: str, key: str = "model.pretrained") -> str:
    """'cache' or 'hub' when `name` can be loaded; raises ConfigError saying why it cannot."""
    import huggingface_hub as hub

    try:
        cached = hub.try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - a name the hub would refuse too: asked below
        cached = None
    if isinstance(cached, str):
        return "cache"
    offline = [v for v in OFFLINE_VARS if os.environ.get(v, "").lower() in ("1", "true", "yes", "on")]
    if offline:
        raise ConfigError(f"{key}: {name!r} is not a local folder nor in the Hugging Face cache, and the "
                          f"hub is switched off ({offline[0]}); download it first or name a local folder")
    try:
        hub.HfApi().model_info(name, timeout=TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - no network, unknown name, gated: each one line
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise ConfigError(f"{key}: {name!r} is not a local folder nor in the Hugging Face cache, and the "
                          f"hub cannot be asked ({type(e).__name__}: {first}); download it on a machine "
                          "with network (it lands in the cache) or name a local folder") from None
    return "hub"
