"""The HTTP side of streampose: PaddleX's serving API and a live browser view of a running graph.

Importing this package pulls in FastAPI and uvicorn (the ``serve`` extra); the rest of
streampose does not need them.
"""

from __future__ import annotations

from streampose.serving.app import ServingSettings, create_app
from streampose.serving.batcher import MicroBatcher
from streampose.serving.live import LiveView

__all__ = ["LiveView", "MicroBatcher", "ServingSettings", "create_app"]
