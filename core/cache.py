"""Files made once per user and per version of the library that makes them, kept in the user's cache
folder ($XDG_CACHE_HOME, else ~/.cache, then smote2mixup/): what every process of a sweep would
otherwise rebuild at its start (an empty MLflow store, the digits arrays)."""

from __future__ import annotations

import os
import tempfile
from typing import Callable


def folder() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "smote2mixup")


def made_once(name: str, make: Callable[[str], None]) -> str:
    """The path of the file ``name`` in the cache folder, written by ``make(path)`` the first time. It is
    made under a temporary name beside it and moved in whole, so that processes making it at once each
    find a whole file. An OSError (a cache folder that cannot be written) is the caller's to handle."""
    path = os.path.join(folder(), name)
    if not os.path.exists(path):
        os.makedirs(folder(), exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder()) as d:
            made = os.path.join(d, name)
            make(made)
            os.replace(made, path)
    return path
