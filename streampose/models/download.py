"""Fetch an official PaddleX model archive into the local cache, safely.

The official models are plain tarballs on Baidu object storage. Users on slow or flaky links must
be able to resume, several processes (a CLI run beside a server) may ask for the same model at
once, and a half-downloaded or half-extracted model must never look like a good one. So the
archive goes to a ``.part`` file (resumed with HTTP ``Range``), is checked, is extracted into a
staging folder inside the cache, and only then is renamed into place in one step, all under a
per-model file lock.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import posixpath
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from streampose.errors import DownloadError, ModelError
from streampose.models.folder import find_model_files

try:  # POSIX only; on Windows concurrent downloads of one model are simply not serialised.
    import fcntl
except ImportError:  # pragma: no cover - exercised on Windows only
    fcntl = None  # type: ignore[assignment]

DEFAULT_URL_BASE = "https://paddle-model-ecology.bj.bcebos.com/paddlex/official_inference_model/paddle3.0.0"
URL_BASE_ENV = "STREAMPOSE_MODEL_URL_BASE"
DOWNLOADS_SUBDIR = ".downloads"

_CHUNK_BYTES = 1 << 16
_MAX_ATTEMPTS = 4  # one first try plus resumes after mid-transfer drops that made progress
_USER_AGENT = "streampose-model-download"


class _InterruptedTransferError(Exception):
    """The connection broke mid-body; the ``.part`` keeps what arrived, so a retry can resume."""


class _CannotResumeError(Exception):
    """The server cannot continue the ``.part`` we hold; it must be discarded."""


class _UnsafeMemberError(Exception):
    """An archive member would land outside the extraction folder (or is a device)."""


# tarfile's "data" filter (Python 3.10.12+/3.11.4+) is a second line of defence behind _unsafe_reason.
_DATA_FILTER: dict[str, str] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_FILTER_ERRORS: tuple[type[Exception], ...] = (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()


def official_model_url(model_name: str) -> str:
    """URL of ``model_name``'s archive; ``STREAMPOSE_MODEL_URL_BASE`` lets mirrors and tests stand in."""
    base = os.environ.get(URL_BASE_ENV) or DEFAULT_URL_BASE
    return f"{base.rstrip('/')}/{model_name}_infer.tar"


def download_official_model(
    model_name: str,
    cache_dir: Path,
    *,
    url: str | None = None,
    timeout: float = 15.0,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    progress: bool = True,
) -> Path:
    """Download and unpack ``model_name`` into ``cache_dir/model_name`` and return that folder.

    Returns at once when the folder is already complete (e.g. another process just finished it).
    Raises :class:`DownloadError` with a one-line reason on any failure; a broken transfer keeps
    its ``.part`` file so the next call resumes, every other failure leaves nothing behind.
    """
    _check_plain_name(model_name)
    cache = Path(cache_dir).expanduser()
    source = url or official_model_url(model_name)
    target = cache / model_name
    downloads = cache / DOWNLOADS_SUBDIR
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cache_error(model_name, cache, exc) from None

    with _model_lock(downloads / f"{model_name}.lock", model_name, cache):
        if target.exists():
            return _existing_target(model_name, target)
        _remove_stale_staging(cache, model_name)
        part = downloads / f"{model_name}.tar.part"
        try:
            _download_to_part(model_name, source, part, timeout=timeout, expected_size=expected_size, show=progress)
            _verify_archive(model_name, source, part, expected_sha256=expected_sha256, expected_size=expected_size)
            _install_archive(model_name, source, part, cache, target)
        except OSError as exc:  # the network side is already translated: this is the local disk
            raise _cache_error(model_name, cache, exc) from None
        part.unlink(missing_ok=True)
    return target


def _check_plain_name(model_name: str) -> None:
    if not model_name or model_name in {".", ".."} or "/" in model_name or "\\" in model_name:
        raise DownloadError(f"model {model_name!r}: not a plain model name (no path separators allowed)")


def _existing_target(model_name: str, target: Path) -> Path:
    """Accept a complete folder; refuse to overwrite one we did not make (we never leave partial ones)."""
    try:
        find_model_files(target)
    except ModelError as exc:
        raise DownloadError(
            f"model {model_name}: {target} already exists but is not a complete model ({exc}); "
            "remove it to download again"
        ) from None
    return target


@contextmanager
def _model_lock(lock_path: Path, model_name: str, cache: Path) -> Iterator[None]:
    """Serialise work on one model across processes; the lock dies with its holder, so no stale locks."""
    try:
        handle = open(lock_path, "a+b")  # noqa: SIM115 - closed in finally, after unlocking
    except OSError as exc:
        raise _cache_error(model_name, cache, exc) from None
    try:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


def _remove_stale_staging(cache: Path, model_name: str) -> None:
    """Staging folders left by a killed process; safe to drop because we hold the model's lock."""
    for stale in cache.glob(f".{model_name}.extract-*"):
        shutil.rmtree(stale, ignore_errors=True)


# --- transfer -------------------------------------------------------------------------------


def _download_to_part(
    model_name: str, url: str, part: Path, *, timeout: float, expected_size: int | None, show: bool
) -> None:
    """Bring ``part`` to the full archive, resuming across connection drops that made progress."""
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not show,
    ) as bar:
        task = bar.add_task(f"downloading {model_name}", total=None)
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            size_before = _size(part)
            try:
                _fetch_once(model_name, url, part, timeout=timeout, expected_size=expected_size, bar=bar, task=task)
                return
            except _CannotResumeError:
                part.unlink(missing_ok=True)
                if attempt == _MAX_ATTEMPTS:
                    raise DownloadError(
                        f"model {model_name}: download from {url} failed (server keeps refusing to resume)"
                    ) from None
            except _InterruptedTransferError as exc:
                if attempt == _MAX_ATTEMPTS or _size(part) <= size_before:
                    raise DownloadError(
                        f"model {model_name}: download from {url} interrupted after {_size(part)} bytes ({exc}); "
                        "run again to resume"
                    ) from None
                time.sleep(min(2.0, 0.25 * attempt))


def _fetch_once(
    model_name: str,
    url: str,
    part: Path,
    *,
    timeout: float,
    expected_size: int | None,
    bar: Progress,
    task: TaskID,
) -> None:
    offset = _size(part)
    if expected_size is not None and offset > expected_size:
        raise _CannotResumeError
    response = _open(model_name, url, timeout=timeout, offset=offset)
    if response is None:
        return
    with response:
        if getattr(response, "status", None) == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                raise _CannotResumeError
            mode = "ab"
        else:  # 200 (or a file:// URL): the whole archive again, from byte zero
            offset, mode = 0, "wb"
            total = _int_or_none(response.headers.get("Content-Length"))
        if expected_size is not None and total is not None and total != expected_size:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"model {model_name}: {url} serves {total} bytes, expected {expected_size}; wrong file or URL?"
            )
        bar.update(task, total=total, completed=offset)
        with open(part, mode) as sink:
            while True:
                try:
                    chunk = response.read(_CHUNK_BYTES)
                except (http.client.HTTPException, OSError) as exc:
                    raise _InterruptedTransferError(_describe(exc, timeout)) from None
                if not chunk:
                    break
                sink.write(chunk)
                bar.advance(task, len(chunk))
    if total is not None and _size(part) != total:
        raise _InterruptedTransferError(f"connection closed at {_size(part)} of {total} bytes")


def _open(model_name: str, url: str, *, timeout: float, offset: int) -> http.client.HTTPResponse | None:
    """GET ``url`` from byte ``offset``; ``None`` when the ``.part`` is already whole.

    Every failure before the body becomes a one-line :class:`DownloadError`.
    """
    try:
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            _, total = _parse_content_range(exc.headers.get("Content-Range"))
            if total == offset:  # the .part already holds the whole archive (checked further on)
                return None
            raise _CannotResumeError from None
        if exc.code == 404:
            raise DownloadError(
                f"model {model_name}: not found at {url} (HTTP 404); check the model name or {URL_BASE_ENV}"
            ) from None
        raise DownloadError(
            f"model {model_name}: download from {url} failed (HTTP {exc.code} {_one_line(exc.reason)})"
        ) from None
    except ValueError as exc:  # "unknown url type" and the like: a typo, not the network
        raise DownloadError(f"model {model_name}: cannot download from {url} ({_one_line(exc)})") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise DownloadError(
            f"model {model_name}: download from {url} failed ({_describe(reason, timeout)}); no network? "
            f"point at local models with --model_dir or STREAMPOSE_MODEL_HOME=<folder holding {model_name}/>"
        ) from None


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/200`` → (100, 200); ``bytes */200`` → (None, 200); unknown parts → None."""
    if not value or not value.strip().lower().startswith("bytes"):
        return None, None
    span, _, total_text = value.strip()[5:].strip().partition("/")
    start_text = span.partition("-")[0]
    return _int_or_none(start_text), _int_or_none(total_text)


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# --- verification and installation ----------------------------------------------------------


def _verify_archive(
    model_name: str, url: str, part: Path, *, expected_sha256: str | None, expected_size: int | None
) -> None:
    """Size and checksum checks; a failing archive is deleted, since resuming it cannot fix it."""
    size = _size(part)
    if expected_size is not None and size != expected_size:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"model {model_name}: download from {url} has {size} bytes, expected {expected_size}; deleted it"
        )
    if expected_sha256 is not None:
        actual = _sha256_of(part)
        if actual != expected_sha256.strip().lower():
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"model {model_name}: download from {url} has sha256 {actual}, expected "
                f"{expected_sha256.strip().lower()}; deleted it (corrupt or altered download)"
            )


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _install_archive(model_name: str, url: str, part: Path, cache: Path, target: Path) -> None:
    """Extract next to the target, check it is a model, then rename it into place in one step."""
    staging = Path(tempfile.mkdtemp(prefix=f".{model_name}.extract-", dir=cache))
    try:
        content = staging / "content"
        content.mkdir()  # made with the user's umask, unlike mkdtemp's 0700
        _extract_safely(model_name, url, part, content)
        root = _single_top_dir(content) or content
        try:
            find_model_files(root)
        except ModelError as exc:
            part.unlink(missing_ok=True)
            raise DownloadError(f"model {model_name}: archive from {url} holds no usable model ({exc})") from None
        os.replace(root, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_safely(model_name: str, url: str, archive: Path, destination: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                problem = _unsafe_reason(member)
                if problem:
                    raise _UnsafeMemberError(f"{member.name!r} {problem}")
            tar.extractall(destination, members=members, **_DATA_FILTER)
    except (_UnsafeMemberError, *_FILTER_ERRORS) as exc:
        archive.unlink(missing_ok=True)
        raise DownloadError(
            f"model {model_name}: archive from {url} has an unsafe member ({_one_line(exc)}); refused to extract it"
        ) from None
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        archive.unlink(missing_ok=True)
        raise DownloadError(
            f"model {model_name}: download from {url} is not a valid tar archive ({_one_line(exc)}); "
            "deleted it, run again to download afresh"
        ) from None


def _unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Our own check before tarfile's ``data`` filter, so the rule does not depend on the Python patch level."""
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "climbs out with '..'"
    if member.isdev() or member.isfifo():
        return "is a device or pipe"
    if member.issym():
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
    elif member.islnk():
        resolved = posixpath.normpath(member.linkname)
    else:
        return None
    if member.linkname.startswith("/") or resolved == ".." or resolved.startswith("../"):
        return f"links outside the archive ({member.linkname})"
    return None


def _single_top_dir(folder: Path) -> Path | None:
    entries = list(folder.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return None


# --- messages -------------------------------------------------------------------------------


def _cache_error(model_name: str, cache: Path, exc: OSError) -> DownloadError:
    reason = exc.strerror or _one_line(exc)
    return DownloadError(
        f"model {model_name}: cannot write to the model cache {cache} ({reason}); "
        "set STREAMPOSE_CACHE_HOME to a writable folder"
    )


def _describe(exc: object, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed early, {len(exc.partial)} bytes in the last read"
    text = _one_line(exc)
    return text or type(exc).__name__


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
