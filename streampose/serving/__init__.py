"""The HTTP side of streampose: PaddleX's serving API and a live browser view of a running graph.

The names below pull in FastAPI and uvicorn (the ``serve`` extra) and the streaming graph, so
they load on first use: the CLI imports ``streampose.serving.cli`` to register its flags on every
start, and that must not cost the ~1.5 s those imports take when the command serves nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ServingSettings": "streampose.serving.app",
    "create_app": "streampose.serving.app",
    "MicroBatcher": "streampose.serving.batcher",
    "LiveView": "streampose.serving.live",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
