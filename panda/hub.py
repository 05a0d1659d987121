"""Where a pretrained model named in params.yaml comes from: a local folder or the Hugging Face hub.

diffusers and transformers load both through their own `from_pretrained` and the hub's cache
(`HF_HOME`, `HF_HUB_OFFLINE`); this module only decides, before they start, whether that can work,
so an offline machine gets one line naming the key and the fix instead of the hub client's retries.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from panda.errors import PandaError


def looks_like_path(name: str) -> bool:
    """A hub id is `owner/name`; anything else that is not a folder here was meant as a folder."""
    return name.startswith((".", "/", "~")) or name.count("/") != 1


def require_hub(key: str, name: str) -> None:
    """One connection attempt to the hub endpoint; unreachable: a PandaError that says what to do."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=5).close()
    except OSError:
        raise PandaError(
            f"{key} = '{name}' is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub "
            f"({constants.ENDPOINT}) cannot be reached. Download it where the hub is reachable "
            f"(`hf download {name} --local-dir <folder>`), copy the folder here and set {key} to it "
            "(or point HF_HOME at a cache that holds it)"
        ) from None


def locate(key: str, name: str, marker: str) -> tuple[str, bool]:
    """(what to pass to `from_pretrained`, whether to stay offline) for `name` given as `key`.

    `marker` is a file every such model has at its top (`model_index.json` for a diffusers pipeline,
    `config.json` for a transformers model): a hub id whose marker is cached loads from the cache."""
    from huggingface_hub import try_to_load_from_cache

    folder = Path(name).expanduser()
    if folder.is_dir():
        return str(folder), True
    if looks_like_path(name):
        raise PandaError(f"{key} = '{name}': no such folder; give a model folder or a hub id (owner/name)")
    if isinstance(try_to_load_from_cache(name, marker), str):
        return name, True
    require_hub(key, name)
    return name, False


def load_transformers_model(key: str, name: str, cls: Any, example: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained(name, **kwargs)` for the model `key` names, from the cache when it is there;
    a checkpoint of another kind is one line naming the key and a hub id that fits (`example`)."""
    source, cached = locate(key, name, "config.json")
    try:
        return cls.from_pretrained(source, local_files_only=cached, **kwargs)
    except (OSError, ValueError) as exc:
        raise PandaError(
            f"{key} = '{name}' is not a checkpoint {cls.__name__} can load ({type(exc).__name__}); give "
            f"a hub id such as {example} or a folder written by `save_pretrained`"
        ) from None
