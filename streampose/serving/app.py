"""The PaddleX-compatible HTTP API: ``POST /human-keypoint-detection`` and ``GET /health``.

Same request and response JSON, status codes and error shapes as PaddleX 3.7's basic serving
(paddlex-compat §6), so PaddleX clients work unchanged. What differs is underneath: requests are
micro-batched into shared model calls (see :mod:`streampose.serving.batcher`), inference and
image decoding never run on the event loop, and the body size, image size and URL fetching are
bounded so that a stranger's request cannot exhaust the server.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from streampose.errors import StreamposeError
from streampose.inputs import ImageItem, check_array
from streampose.serving.batcher import MicroBatcher
from streampose.serving.images import (
    ImageLimits,
    decode_base64_image,
    decode_image_bytes,
    fetch_image_bytes,
    is_url,
)

logger = logging.getLogger("streampose.serving")

INFER_PATH = "/human-keypoint-detection"
INTERNAL_ERROR = "Internal server error"  # PaddleX's message for every unhandled failure


@dataclass(frozen=True)
class ServingSettings:
    """Limits and batching of one server; ``visualize`` None → the pipeline YAML's ``Serving.visualize``."""

    max_body_bytes: int = 32 * 1024 * 1024
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    max_batch: int = 8
    batch_wait_s: float = 0.005
    visualize: bool | None = None


# -- schema (PaddleX names, camelCase) ----------------------------------------------------------
class InferRequest(BaseModel):
    image: str = Field(description="Base64 of an image file, or an http(s) URL the server can fetch")
    detThreshold: float | None = Field(default=None, ge=0.0, le=1.0)  # noqa: N815 - PaddleX name
    visualize: bool | None = None


class Person(BaseModel):
    bbox: Annotated[list[float], Field(min_length=4, max_length=4)]
    kpts: list[Annotated[list[float], Field(min_length=3, max_length=3)]]
    detScore: float  # noqa: N815
    kptScore: float  # noqa: N815


class InferResult(BaseModel):
    persons: list[Person]
    image: str | None = Field(default=None, description="Base64 JPEG of the visualization")


class InferResponse(BaseModel):
    logId: str  # noqa: N815
    errorCode: int = 0  # noqa: N815
    errorMsg: str = "Success"  # noqa: N815
    result: InferResult


class NoResultResponse(BaseModel):
    logId: str  # noqa: N815
    errorCode: int  # noqa: N815
    errorMsg: str  # noqa: N815


def new_log_id() -> str:
    return str(uuid.uuid4())


def error_body(status: int, message: str, log_id: str | None = None) -> dict:
    return {"logId": log_id or new_log_id(), "errorCode": status, "errorMsg": message}


# -- request body limit -------------------------------------------------------------------------
class BodySizeLimit:
    """Reject bodies over ``max_bytes`` with 413 before any JSON parsing.

    A declared Content-Length is checked first; the body is also counted while it is read (a
    chunked upload declares nothing). The excess is drained, up to a bound, so the client gets the
    413 instead of a broken pipe, and nothing over the limit is ever held in memory.
    """

    def __init__(self, app: Callable, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = 4 * max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            if declared <= self.drain_bytes:
                await self._drain(receive, 0)
            await self._reject(send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                received = len(body)
                body = bytearray()
                if message.get("more_body", False):
                    await self._drain(receive, received)
                await self._reject(send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _drain(self, receive: Callable, received: int) -> None:
        while received <= self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _reject(self, send: Callable) -> None:
        payload = json.dumps(error_body(413, f"Request body larger than {self.max_bytes} bytes")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: dict) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Callable) -> Callable[[], Awaitable[dict]]:
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for the disconnect, as the real receive does

    return replayed


# -- the app ------------------------------------------------------------------------------------
def create_app(pipeline: Any, settings: ServingSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``pipeline`` (a :class:`~streampose.pipeline.KeypointPipeline`).

    The batcher (and its inference thread) lives from startup to shutdown of the app; tests and
    monitoring read its counters from ``app.state.batcher.stats``.
    """
    settings = settings or ServingSettings()
    visualize_default = settings.visualize
    if visualize_default is None:
        visualize_default = bool(getattr(getattr(pipeline, "settings", None), "visualize", True))

    def run_batch(images: list[np.ndarray], threshold: float | None) -> list:
        if threshold is None:
            threshold = pipeline.det_threshold
        items = [ImageItem(None, check_array(image)) for image in images]
        return pipeline.predict_images(items, threshold)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.batcher = MicroBatcher(run_batch, max_batch=settings.max_batch,
                                         max_wait_s=settings.batch_wait_s)
        try:
            yield
        finally:
            await asyncio.to_thread(app.state.batcher.close)

    app = FastAPI(title="streampose human_keypoint_detection",
                  description="PaddleX-compatible serving API for human keypoint detection",
                  lifespan=lifespan)
    app.state.pipeline = pipeline
    app.state.settings = settings
    _add_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    @app.get("/health", response_model=NoResultResponse, operation_id="checkHealth")
    async def health() -> dict:
        return {"logId": new_log_id(), "errorCode": 0, "errorMsg": "Healthy"}

    @app.post(INFER_PATH, response_model=InferResponse, response_model_exclude_none=True,
              operation_id="infer", responses={422: {"model": NoResultResponse},
                                               413: {"model": NoResultResponse},
                                               500: {"model": NoResultResponse}})
    async def infer(body: InferRequest, request: Request) -> dict:
        image = await load_request_image(body.image, settings.image_limits)
        batcher: MicroBatcher = request.app.state.batcher
        result = await asyncio.wrap_future(batcher.submit(image, body.detThreshold))
        visualize = visualize_default if body.visualize is None else body.visualize
        encoded = await asyncio.to_thread(jpeg_base64, result) if visualize else None
        return {"logId": new_log_id(), "errorCode": 0, "errorMsg": "Success",
                "result": {"persons": persons_json(result), "image": encoded}}

    return app


async def load_request_image(text: str, limits: ImageLimits) -> np.ndarray:
    """The ``image`` field → BGR pixels; downloads on the loop (async), decoding in a thread."""
    if is_url(text):
        data = await fetch_image_bytes(text, limits)
        return await asyncio.to_thread(decode_image_bytes, data, limits, f"image URL {text}")
    return await asyncio.to_thread(decode_base64_image, text, limits)


def persons_json(result: dict) -> list[dict]:
    return [
        {
            "bbox": [float(value) for value in box["coordinate"]],
            "kpts": np.asarray(box["keypoints"], dtype=np.float64).tolist(),
            "detScore": float(box["det_score"]),
            "kptScore": float(box["kpt_score"]),
        }
        for box in result["boxes"]
    ]


def jpeg_base64(result: Any) -> str:
    """PaddleX's ``image`` field: the result picture, JPEG via Pillow (default quality), Base64."""
    buffer = io.BytesIO()
    result.img["res"].save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"type": error.get("type"), "loc": ".".join(str(part) for part in error.get("loc", ())),
                   "msg": error.get("msg")} for error in exc.errors()]
        body = getattr(exc, "body", None)
        log_id = body.get("logId") if isinstance(body, dict) and isinstance(body.get("logId"), str) else None
        return JSONResponse(status_code=422, content=error_body(422, json.dumps(errors), log_id))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content=error_body(exc.status_code, str(exc.detail)),
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(StreamposeError)
    async def on_bad_input(request: Request, exc: StreamposeError) -> JSONResponse:
        # PaddleX answers every failed inference with a bare 500; the cause goes to the log.
        body = error_body(500, INTERNAL_ERROR)
        logger.warning("request %s failed: %s", body["logId"], exc)
        return JSONResponse(status_code=500, content=body)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        body = error_body(500, INTERNAL_ERROR)
        logger.error("request %s failed unexpectedly", body["logId"], exc_info=exc)
        return JSONResponse(status_code=500, content=body)
