"""Convert a Paddle model folder to ONNX once, and find that export again.

ONNX Runtime and OpenVINO cannot read Paddle 3 (PIR ``inference.json``) graphs, so those backends
run a paddle2onnx export. Where the export goes is a deliberate choice:

* With no explicit ``output``, exports always go to a cache,
  ``${STREAMPOSE_CACHE_HOME:-~/.cache/streampose}/onnx/<folder>-<fingerprint>/inference.onnx``,
  never into the model folder. Model folders are often read-only (shared, packaged, mounted), and
  an ``inference.onnx`` written beside the weights would go stale silently when the user replaces
  the weights, because :func:`streampose.models.folder.find_model_files` would keep picking it up.
  The cache is keyed by a hash of the graph and weights, so a changed model re-exports.
* An ``inference.onnx`` the user ships inside the folder (``files.onnx``) is trusted and used as is.
* An explicit ``output`` writes exactly there (e.g. to build a folder for another machine).

The conversion runs in a child Python process: paddle2onnx imports all of Paddle (~0.5 GB), prints
on stdout, reports failures with ``sys.exit`` and sets environment variables; none of that should
leak into a streaming process that only wanted ONNX Runtime. Constant folding (polygraphy) is done
by the child itself with auto-install switched off, so a conversion never pip-installs anything;
if ``onnx_graphsurgeon``/``sympy`` are missing the export is kept unfolded (2x slower in ONNX
Runtime) and a notice says so.

Graphs whose NMS is inside the graph export with a working batch of 1 only (paddle2onnx's
``multiclass_nms3`` conversion); the export records that as metadata ``streampose.max_batch = 1``
so the backends can split larger batches into single calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import NoReturn

from streampose.errors import ModelError
from streampose.runtime.base import ModelFiles

DEFAULT_OPSET = 13
ONNX_FILE_NAME = "inference.onnx"
MAX_BATCH_METADATA_KEY = "streampose.max_batch"

_CONVERT_TIMEOUT_S = 900
_NOTICE_PREFIX = "streampose-export-notice: "
_FAILURE_PREFIX = "streampose-export-failure: "
_PADDLE2ONNX_FAILURE = re.compile(r"Failed to convert PaddlePaddle model:\s*(.*)")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
_PADDLE_GRAPH_SUFFIXES = (".json", ".pdmodel")


def cache_home() -> Path:
    """Root of streampose's per-user cache (``STREAMPOSE_CACHE_HOME`` overrides it)."""
    configured = os.environ.get("STREAMPOSE_CACHE_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "streampose"


def content_hash(paths: Iterable[Path], salt: str) -> str:
    """Short sha256 of the files' bytes plus ``salt``: the key of everything derived from a model."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as exc:
            raise ModelError(f"model file {path}: cannot be read ({exc.strerror})") from None
        digest.update(b"\0")
    digest.update(salt.encode())
    return digest.hexdigest()[:12]


def model_fingerprint(files: ModelFiles, opset: int = DEFAULT_OPSET) -> str:
    """Short content hash of graph + weights (+ opset): the cache key of an export."""
    return content_hash((files.graph, files.params), f"opset{opset}")


def cached_onnx_path(files: ModelFiles, opset: int = DEFAULT_OPSET) -> Path:
    """Where the cache keeps (or will keep) this model's export."""
    folder_name = f"{files.model_dir.name}-{model_fingerprint(files, opset)}"
    return cache_home() / "onnx" / folder_name / ONNX_FILE_NAME


def find_onnx(files: ModelFiles) -> Path | None:
    """An existing ONNX file for this model (shipped in the folder, or cached), without exporting."""
    if files.onnx is not None and files.onnx.is_file():
        return files.onnx
    if files.graph.suffix == ".onnx":
        return files.graph
    cached = cached_onnx_path(files)
    return cached if cached.is_file() else None


def onnx_path_for(files: ModelFiles) -> Path:
    """The model's ONNX file, exporting it into the cache on first use (said once on stderr)."""
    existing = find_onnx(files)
    if existing is not None:
        return existing
    print(
        f"streampose: converting {files.model_dir} to ONNX once (cached in {cache_home() / 'onnx'})",
        file=sys.stderr,
        flush=True,
    )
    return export_onnx(files)


def export_onnx(
    files: ModelFiles, output: Path | None = None, opset: int = DEFAULT_OPSET, *, force: bool = False
) -> Path:
    """Convert the Paddle graph to ONNX (outputs keep their ``fetch_name_*`` names).

    ``output`` may be a file path or an existing folder (``inference.onnx`` is written inside).
    Without it the export goes to the cache and an existing cached export is reused unless
    ``force``. The file appears atomically: readers never see a half-written model.
    """
    if files.graph.suffix not in _PADDLE_GRAPH_SUFFIXES:
        raise ModelError(f"model {files.model_dir}: no Paddle graph to convert ({files.graph.name})")
    if output is None:
        target = cached_onnx_path(files, opset)
        if target.is_file() and not force:
            return target
    else:
        target = Path(output).expanduser()
        if target.is_dir():
            target = target / ONNX_FILE_NAME
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"ONNX export {target}: cannot create its folder ({exc.strerror})") from None
    partial = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    try:
        _convert_in_child(files, partial, opset)
        os.replace(partial, target)
    except OSError as exc:
        raise ModelError(f"ONNX export {target}: cannot be written ({exc.strerror})") from None
    finally:
        partial.unlink(missing_ok=True)
        if output is None and not target.exists():
            _remove_if_empty(target.parent)
    return target


def _remove_if_empty(folder: Path) -> None:
    """Leave no empty cache entry behind a failed export."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _convert_in_child(files: ModelFiles, destination: Path, opset: int) -> None:
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["POLYGRAPHY_AUTOINSTALL_DEPS"] = "0"
    env.setdefault("GLOG_minloglevel", "2")
    command = [
        sys.executable,
        "-c",
        "import sys; from streampose.runtime.onnx_export import convert_here; convert_here(*sys.argv[1:])",
        str(files.graph),
        str(files.params),
        str(destination),
        str(opset),
    ]
    try:
        finished = subprocess.run(
            command, env=env, capture_output=True, text=True, errors="replace", timeout=_CONVERT_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise ModelError(
            f"model {files.model_dir}: ONNX conversion took over {_CONVERT_TIMEOUT_S} s and was stopped"
        ) from None
    except OSError as exc:
        raise ModelError(f"model {files.model_dir}: cannot start the ONNX converter ({exc})") from None
    transcript = _ANSI_ESCAPE.sub("", finished.stdout + "\n" + finished.stderr)
    for line in transcript.splitlines():
        if line.startswith(_NOTICE_PREFIX):
            print(f"streampose: {line[len(_NOTICE_PREFIX):]}", file=sys.stderr, flush=True)
    if finished.returncode != 0 or not destination.is_file():
        cause = _failure_cause(transcript, finished.returncode)
        raise ModelError(f"model {files.model_dir}: ONNX conversion failed ({cause})")


def _failure_cause(transcript: str, returncode: int) -> str:
    """The one line of the child's output that says why, or its exit status."""
    lines = [line.strip() for line in transcript.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(_FAILURE_PREFIX):
            return line[len(_FAILURE_PREFIX):]
    for line in reversed(lines):
        match = _PADDLE2ONNX_FAILURE.search(line)
        if match:
            return match.group(1).rstrip(".").strip() or "paddle2onnx gave no reason"
    return f"converter exited with status {returncode}"


def convert_here(graph: str, params: str, destination: str, opset: str) -> None:
    """Child-process side of :func:`export_onnx`: convert, fold, validate, tag, save."""
    try:
        import onnx  # noqa: PLC0415 - only the converter child needs these
        import paddle2onnx  # noqa: PLC0415
    except ImportError as exc:
        _fail(f"{exc.name} is not installed: pip install paddle2onnx onnx_graphsurgeon sympy")
    try:
        serialized = paddle2onnx.export(graph, params, save_file=None, opset_version=int(opset))
    except Exception as exc:  # noqa: BLE001 - any converter crash becomes one line for the user
        # (paddle2onnx reports most failures itself, then sys.exit()s; the parent finds that line)
        _fail(f"paddle2onnx: {_first_line(exc)}")
    try:
        model = onnx.load_from_string(serialized)
    except Exception as exc:  # noqa: BLE001
        _fail(f"paddle2onnx produced no readable ONNX ({_first_line(exc)})")
    model = _folded_or_unchanged(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # noqa: BLE001 - e.g. weights file truncated: paddle2onnx still "succeeds"
        _fail(f"the exported ONNX graph is invalid: {_first_line(exc)}")
    if any(node.op_type == "NonMaxSuppression" for node in model.graph.node):
        entry = model.metadata_props.add()
        entry.key, entry.value = MAX_BATCH_METADATA_KEY, "1"
    onnx.save(model, destination)


def _folded_or_unchanged(model):
    """Constant-fold with polygraphy (2x faster in ONNX Runtime); keep the graph if that fails."""
    os.environ["POLYGRAPHY_AUTOINSTALL_DEPS"] = "0"
    try:
        from polygraphy.backend.onnx import fold_constants  # noqa: PLC0415

        folded = fold_constants(model)
    except Exception as exc:  # noqa: BLE001 - folding is an optimisation, never a failure
        print(
            f"{_NOTICE_PREFIX}ONNX constant folding skipped ({_first_line(exc)}); "
            "pip install polygraphy onnx_graphsurgeon sympy for a faster export",
            file=sys.stderr,
        )
        return model
    if [_rank(o) for o in folded.graph.output] != [_rank(o) for o in model.graph.output]:
        print(f"{_NOTICE_PREFIX}ONNX constant folding changed output ranks; kept unfolded", file=sys.stderr)
        return model
    return folded


def _rank(value_info) -> int | None:
    tensor_type = value_info.type.tensor_type
    return len(tensor_type.shape.dim) if tensor_type.HasField("shape") else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _fail(reason: str) -> NoReturn:
    print(f"{_FAILURE_PREFIX}{reason}", file=sys.stderr, flush=True)
    sys.exit(3)
