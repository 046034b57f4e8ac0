"""Run an ASGI app with uvicorn: in the foreground (``serve``) or on a background thread (live view).

The listening socket is bound here, before uvicorn starts, so that a busy port or a bad host is a
one-line :class:`~streampose.errors.ConfigError` at once (uvicorn would log and ``sys.exit`` inside
its thread), and so that port 0 works: the OS picks a free port and :attr:`port` reports it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import uvicorn

from streampose.errors import ConfigError

GRACEFUL_SHUTDOWN_S = 3.0


def parse_listen_address(text: str, default_host: str = "0.0.0.0") -> tuple[str, int]:  # noqa: S104
    """``":8080"`` → (default_host, 8080); ``"127.0.0.1:8080"``; ``"[::1]:8080"``; ``"8080"``."""
    value = text.strip()
    host, _, port_text = value.rpartition(":")
    if not _:
        host, port_text = "", value
    host = host.strip("[]") or default_host
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"listen address {text!r}: expected [HOST]:PORT, e.g. :8080 or 127.0.0.1:8080") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"listen address {text!r}: port must be between 0 and 65535")
    return host, port


def bind_socket(host: str, port: int, send_buffer_bytes: int | None = None) -> socket.socket:
    """A listening socket; ``send_buffer_bytes`` caps the kernel send buffer of every connection.

    Accepted connections inherit the cap (Linux). For live video that matters: an autotuned
    buffer grows to megabytes, i.e. seconds of frames queued for a slow viewer, exactly the
    backlog the live view's latest-frame-only design exists to avoid.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer_bytes:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}"


def uvicorn_config(app: Any, host: str, port: int, log_level: str = "warning",
                   access_log: bool = False) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                          timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, lifespan="on")


class _HideHealthChecks(logging.Filter):
    """Load balancers poll /health every few seconds; those lines would drown the real requests."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(isinstance(arg, str) and arg.startswith("/health") for arg in (record.args or ()))


def serve_forever(app: Any, host: str, port: int, log_level: str = "info") -> None:
    """Foreground server (``streampose serve``); returns after Ctrl-C, once requests are finished.

    uvicorn shuts down gracefully on SIGINT and then re-raises it; that interrupt is the normal
    way to stop a server, not a failure, so it ends here.
    """
    sock = bind_socket(host, port)
    server = uvicorn.Server(uvicorn_config(app, host, port, log_level, access_log=True))
    logging.getLogger("uvicorn.access").addFilter(_HideHealthChecks())
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


class BackgroundServer:
    """uvicorn on a daemon thread; :meth:`stop` sets ``should_exit`` and joins."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 send_buffer_bytes: int | None = None) -> None:
        self.app = app
        self.send_buffer_bytes = send_buffer_bytes
        self.host = host
        self._requested_port = port
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._log_level = log_level
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        return url_for(self.host, self.port)

    def start(self, timeout: float = 15.0) -> None:
        self._socket = bind_socket(self.host, self._requested_port, self.send_buffer_bytes)
        self.port = self._socket.getsockname()[1]
        self._server = uvicorn.Server(uvicorn_config(self.app, self.host, self.port, self._log_level))
        self._thread = threading.Thread(target=self._run, name=f"streampose-http-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                cause = f" ({self.error})" if self.error else ""
                raise ConfigError(f"HTTP server on {self.host}:{self.port} did not start{cause}")
            time.sleep(0.01)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # noqa: BLE001 - reported by start()/stop(), not lost in a thread
            self.error = exc

    def stop(self, timeout: float = GRACEFUL_SHUTDOWN_S + 5.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(2.0)
        if self._socket is not None:
            self._socket.close()
            self._socket = None
