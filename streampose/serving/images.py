"""Turn a request's ``image`` field into BGR pixels: Base64 of file bytes, or an http(s) URL.

A service reads input from strangers, so the rules are stricter than ``predict``'s: only http
and https (every redirect is checked too, and followed by hand), a byte cap while downloading,
timeouts on connect and on the whole fetch, nothing ever read from the server's own disk, and
the pixel count checked from the image *header* before anything is decoded (a 20000x10000 PNG
of zeros is a few KB on the wire and 600 MB once decoded).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
import urllib.parse
from dataclasses import dataclass

import cv2
import httpx
import numpy as np

from streampose.errors import InputError

PADDLEX_MAX_PIXELS = 178_956_970  # PaddleX rejects decoded images above this (Pillow's bomb limit)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_REDIRECTS = {301, 302, 303, 307, 308}


@dataclass(frozen=True)
class ImageLimits:
    """Limits on one request's image; defaults follow PaddleX where it has one."""

    max_pixels: int = PADDLEX_MAX_PIXELS
    max_download_bytes: int = 32 * 1024 * 1024
    connect_timeout_s: float = 5.0
    fetch_timeout_s: float = 20.0  # the whole download, redirects included
    max_redirects: int = 5


def is_url(text: str) -> bool:
    """PaddleX's test: a string starting with http:// or https:// is fetched, anything else is Base64."""
    return text.startswith(("http://", "https://"))


def decode_base64_image(text: str, limits: ImageLimits) -> np.ndarray:
    """Base64 of an image file → BGR array. Runs in a worker thread (decoding is CPU work)."""
    if _SCHEME.match(text):
        # file://, ftp://, data:... never reach the disk or the network.
        raise InputError(f"image {text[:40]!r}: unsupported URL scheme (only http and https)")
    try:
        data = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"image: not valid Base64 ({exc})") from None
    return decode_image_bytes(data, limits, "image")


def image_header_size(data: bytes, name: str = "image") -> tuple[int, int] | None:
    """(width, height) from the file header without decoding pixels; None if Pillow cannot tell."""
    from PIL import Image  # noqa: PLC0415

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Image.DecompressionBombError as exc:  # Pillow's own ceiling (the PaddleX limit)
        raise InputError(f"{name}: too many pixels ({exc})") from None
    except Exception:  # noqa: BLE001 - unknown to Pillow: OpenCV gets its chance
        return None


def decode_image_bytes(data: bytes, limits: ImageLimits, name: str) -> np.ndarray:
    if not data:
        raise InputError(f"{name}: empty image data")
    size = image_header_size(data, name)
    if size is not None and size[0] * size[1] > limits.max_pixels:
        raise InputError(f"{name}: {size[0]}x{size[1]} is more than {limits.max_pixels} pixels")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{name}: not a readable image (unknown or corrupt format)")
    if image.shape[0] * image.shape[1] > limits.max_pixels:
        raise InputError(f"{name}: {image.shape[1]}x{image.shape[0]} is more than {limits.max_pixels} pixels")
    return image


async def fetch_image_bytes(url: str, limits: ImageLimits) -> bytes:
    """Download ``url`` with the limits above; redirects are followed only to http(s)."""
    try:
        return await asyncio.wait_for(_fetch(url, limits), timeout=limits.fetch_timeout_s)
    except asyncio.TimeoutError:
        raise InputError(f"image URL {url}: no complete answer within {limits.fetch_timeout_s:g} s") from None


async def _fetch(url: str, limits: ImageLimits) -> bytes:
    timeout = httpx.Timeout(limits.fetch_timeout_s, connect=limits.connect_timeout_s)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(limits.max_redirects + 1):
            _check_http_url(url)
            try:
                async with client.stream("GET", url, headers={"User-Agent": "streampose"}) as response:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        url = urllib.parse.urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise InputError(f"image URL {url}: HTTP {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > limits.max_download_bytes:
                        raise InputError(f"image URL {url}: {declared} bytes is over the "
                                         f"{limits.max_download_bytes} byte limit")
                    chunks, received = [], 0
                    async for chunk in response.aiter_bytes():
                        received += len(chunk)
                        if received > limits.max_download_bytes:
                            raise InputError(f"image URL {url}: more than {limits.max_download_bytes} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.HTTPError as exc:
                raise InputError(f"image URL {url}: cannot be fetched ({type(exc).__name__}: {exc})") from None
        raise InputError(f"image URL {url}: more than {limits.max_redirects} redirects")


def _check_http_url(url: str) -> None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InputError(f"image URL {url}: only http:// and https:// URLs with a host are fetched")
