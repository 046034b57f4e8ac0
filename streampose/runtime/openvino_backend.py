"""OpenVINO backend (CPU): the fastest route on Intel CPUs.

Model source, in order: an OpenVINO IR shipped in the folder's ``openvino/`` (used as is, batch
dimension reshaped to dynamic), else the folder's ONNX export (:func:`onnx_path_for`). OpenVINO
2026.4's ``convert_model`` cannot read Paddle 3 PIR ``inference.json`` graphs ("Cannot recognize
input model"), hence the ONNX detour. NMS-in-graph detectors have no shipped IR and export to ONNX
with a working batch of 1: larger batches are run one image at a time and joined.

IRs name their tensors after the original graph (``conv2d_441.tmp_1``, ``argmax_0.tmp_0``), not
after Paddle's feeds and fetches, so inputs and outputs are matched to the Paddle graph's declared
signature by rank, dtype and static dimensions; callers always see Paddle's names and order.

Channel shuffles (PP-TinyPose) are folded into the convolutions around them before compiling
(:mod:`streampose.runtime.channel_shuffle`): same function, ~20% less time per pose call.

Precision: on CPUs with AMX, OpenVINO would default to bf16 (heatmaps move by ~1e-2);
``RuntimeOptions.precision`` picks ``f32`` (default, Paddle parity) or ``bf16`` explicitly,
``auto`` (whichever of the two is faster on this CPU, timed once and remembered:
:mod:`streampose.runtime.precision_probe`; where bf16 may run, the output heads stay f32:
:mod:`streampose.runtime.f32_heads`), or
``int8``: the model's post-training-quantized copy that ``streampose models quantize`` wrote into
the cache (:mod:`streampose.models.quantize`, found via :mod:`streampose.runtime.int8_cache`), same inputs and outputs as the float model.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streampose.errors import ConfigError, DeviceError, ModelError
from streampose.runtime.onnx_export import MAX_BATCH_METADATA_KEY, cache_home, content_hash, onnx_path_for
from streampose.runtime.int8_cache import INT8, find_int8_model
from streampose.runtime.split_nms import NmsSettings, split_nms
from streampose.runtime.base import ModelFiles, RuntimeOptions
from streampose.runtime.channel_shuffle import fold_channel_shuffles
from streampose.runtime.f32_heads import keep_heads_in_f32
from streampose.runtime.precision_probe import CACHE_FILE_NAME, PROBE_BATCH, PrecisionChoice, choose_float_precision
from streampose.runtime.devices import parse_device
from streampose.runtime.onnxruntime_backend import paddle_output_order, run_in_single_batches

_PRECISION_HINTS = {"f32": "f32", "fp32": "f32", "bf16": "bf16"}
# "auto": bf16 only where it is measured faster (precision_probe); with the output heads kept in
# f32 (f32_heads) the OKS AP is PaddleX's either way (README).
AUTO = "auto"
# What the ops an INT8 model keeps in float (first conv, heads, softmax-like tails) run in.
_INT8_FLOAT_PART = "f32"
_MAX_PERMUTED_PORTS = 6
_STATIC_BATCH_LIMIT = 16
# A batch size gets its static compile (~1 s of CPU for PP-TinyPose on 2 cores) once it makes
# three of the last twenty calls. Each compiled model holds its own buffers (measured: +75 MB
# RSS and two threads for TinyPose batch 7 with two streams), so sizes met once in a while (a
# video's last pose call, the odd sparse chunk at a looped video's seam, seen compiling after
# 60 s of a soak run when the rule was "third call ever") stay on the dynamic model, while a
# size that becomes common (a crowd grows, a benchmark switches sizes) is compiled at once.
_STATIC_AFTER_CALLS = 3
_RECENT_CALLS = 20
# At most this many static models per session (~75-135 MB each for PP-TinyPose with two streams).
# A live camera's crowd size wanders: without a bound, weeks of footage would keep a model for
# every size that was ever common (sizes 1-9: +765 MB, measured). Eight hold the seven sizes of
# vtest.avi played live; with four and no idle rule, sizes took each other's place 6 times in
# 32 s, every swap a ~0.7 s compile on an already saturated CPU. A new common size takes
# the place of the least recently used model only when no call needed it for
# _EVICT_AFTER_IDLE_CALLS calls (10 s at 25 fps), so a swap happens at most that often; until
# then the new size runs on the dynamic model. A freed model gives its memory back (measured).
_MAX_STATIC_MODELS = 8
_EVICT_AFTER_IDLE_CALLS = 250
# OpenVINO sets the whole process to the C locale while it reads or writes a CACHE_DIR entry and
# sets it back afterwards. Two such compiles at once restore each other's "C" and the process
# stays in C (Python's text I/O then defaults to ASCII), so compiles with a cache take turns.
_CACHED_COMPILE_LOCK = threading.Lock()
_log = logging.getLogger("streampose.runtime")


@dataclass(frozen=True)
class TensorSpec:
    """What a graph declares about one input or output; ``-1`` marks a dynamic dimension."""

    name: str
    shape: tuple[int, ...]
    is_float: bool

    def fits(self, other: TensorSpec) -> bool:
        """Could both describe the same tensor (dynamic dimensions match anything)?"""
        return (
            self.is_float == other.is_float
            and len(self.shape) == len(other.shape)
            and all(a == b or a < 0 or b < 0 for a, b in zip(self.shape, other.shape))
        )


def _import_openvino():
    try:
        import openvino  # noqa: PLC0415 - optional backend
    except ImportError as exc:
        raise DeviceError(f"backend openvino: openvino is not installed ({exc})") from None
    return openvino


def precision_hint(precision: str) -> str | None:
    """``RuntimeOptions.precision`` as OpenVINO's ``INFERENCE_PRECISION_HINT``; None for ``auto``,
    which is measured on the model (:func:`choose_float_precision`)."""
    name = str(precision).strip().lower()
    if name == AUTO:
        return None
    hint = _INT8_FLOAT_PART if name == INT8 else _PRECISION_HINTS.get(name)
    if hint is None:
        raise ConfigError(f"precision {precision!r}: the openvino backend supports auto, f32, bf16 or int8")
    return hint


def float_model_source(files: ModelFiles, split: bool = True) -> tuple[Path, NmsSettings | None]:
    """The float model this backend runs, and the NMS settings when its NMS was cut off.

    Detectors with NMS in the graph run up to the NMS (any batch, and OpenVINO runs the NMS
    tail slowly); the detector then does the NMS itself (see split_nms).
    """
    source = files.openvino_xml or onnx_path_for(files)
    cut = split_nms(source) if files.openvino_xml is None and split else None
    return cut if cut is not None else (source, None)


class OpenVinoSession:
    """One model, compiled once per batch size, with infer requests pooled per compiled model.

    ``RuntimeOptions.streams`` runs may execute at once from different threads (the graph's pose
    workers): each stream has its own threads, and each concurrent caller takes a request of its
    own from the pool (a request is not re-entrant). With one stream, concurrent runs queue.
    """

    backend_name = "openvino"

    def __init__(self, files: ModelFiles, options: RuntimeOptions) -> None:
        ov = _import_openvino()
        device = parse_device(options.device)
        if device.kind != "cpu":
            raise DeviceError(
                f"device {device}: streampose runs OpenVINO on the CPU only; "
                "use --backend onnxruntime (onnxruntime-gpu) for a GPU"
            )
        self.streams = max(1, int(options.streams))
        hint = precision_hint(options.precision)
        config = {
            "PERFORMANCE_HINT": "LATENCY" if self.streams == 1 else "THROUGHPUT",
            # Measured: with pinning on, two compiled models of one thread each (the graph's
            # detector and pose) were both pinned to core 0 and ran one after the other.
            "ENABLE_CPU_PINNING": False,
        }
        if self.streams > 1:
            config["NUM_STREAMS"] = self.streams
        if options.cpu_threads > 0:
            config["INFERENCE_NUM_THREADS"] = int(options.cpu_threads) * self.streams
        compile_cache = compile_cache_dir(options)
        if compile_cache is not None:
            config["CACHE_DIR"] = str(compile_cache)
        core = ov.Core()
        int8 = str(options.precision).strip().lower() == INT8
        source, self.pre_nms = float_model_source(files, split=bool(options.extra.get("split_nms", True)))
        if int8:
            source = _int8_source(files, source)
        try:
            model = core.read_model(str(source))
        except Exception as exc:  # OpenVINO raises RuntimeError/GeneralFailure with long texts
            raise ModelError(f"model {source}: OpenVINO could not read it ({_first_line(exc)})") from exc
        # Where bf16 may run, the output heads stay f32 (bf16 heatmaps cost OKS AP: f32_heads).
        self.f32_heads: list[str] = []
        if not int8 and hint != "f32" and "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            try:
                model, self.f32_heads = keep_heads_in_f32(core, model)
            except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with long texts
                raise ModelError(f"model {source}: cannot keep its output heads in f32 "
                                 f"({_first_line(exc)})") from exc
        # Float models only: an INT8 copy's weights sit behind FakeQuantize nodes the pass leaves alone.
        self.folded = None if int8 or not options.extra.get("fold_shuffles", True) else fold_channel_shuffles(model)
        self.max_batch = None if self.pre_nms is not None else _max_batch_of(model)
        self.input_names, input_ports, self._output_ports = _paddle_layout(files, model)
        is_float = [_spec_of(port).is_float for port in model.inputs]
        self._input_ports = dict(zip(self.input_names, input_ports))
        self._input_is_float = {name: is_float[port] for name, port in self._input_ports.items()}
        if files.openvino_xml is not None:
            make_batch_dynamic(model, ov)
        # How "auto" was resolved (None for an explicit precision): bench and logs report it.
        self.precision_choice: PrecisionChoice | None = None
        if hint is None:
            self.precision_choice = self._choose_precision(core, model, files, source, options)
            hint = self.precision_choice.precision
        config["INFERENCE_PRECISION_HINT"] = hint
        self._core, self._model, self._config, self._source = core, model, config, source
        # Compiled models by batch size. OpenVINO's CPU plugin runs a static shape 25-40% faster
        # than a dynamic one (TinyPose batch 4: 11.0 vs 14.8 ms), so each batch size met often
        # gets its own static compile. Compiling takes 0.3-1.2 s, so it happens on a background
        # thread while the dynamic model answers; the static one takes over once it is ready.
        self._static: dict[int, object] = {}  # batch size → compiled model, least recently used first
        self._last_call: dict[int, int] = {}  # batch size → number of the last call that ran it
        self._calls = 0
        self.max_static_models = _MAX_STATIC_MODELS
        self.evict_after_idle_calls = _EVICT_AFTER_IDLE_CALLS
        self._compiling: set[int] = set()
        # Sizes whose static compile failed, with the reason: they stay on the dynamic model.
        self.failed_static: dict[int, str] = {}
        self._recent: collections.deque[int] = collections.deque(maxlen=_RECENT_CALLS)  # batch sizes
        # Sizes compiled by preload() that no call has used yet, and the call count then: released
        # if still unused evict_after_idle_calls calls later (a guess that did not come true).
        self._preloaded_unused: set[int] = set()
        self._preloaded_at = 0
        self._dynamic = self._compile(None)
        # Idle requests per compiled model (keyed by batch size, None: the dynamic model). A
        # request is created when every existing one is busy, so the pool never exceeds the
        # number of concurrent callers.
        self._idle: dict[int | None, list[object]] = {None: [self._dynamic.create_infer_request()]}
        self._lock = threading.Lock()  # guards the pool, never held while inferring
        self._one_at_a_time = threading.Lock() if self.streams == 1 else None
        # What really runs: "f32"/"bf16", or "int8+f32" (int8 ops, the rest in f32).
        compiled = _type_name(self._compiled_precision)
        self.precision = f"{INT8}+{compiled}" if int8 else compiled

    def _choose_precision(self, core, model, files: ModelFiles, source: Path,
                          options: RuntimeOptions) -> PrecisionChoice:
        """Resolve ``auto`` for this model; any failure of the probe leaves f32, said in the log."""
        batch = min(PROBE_BATCH, self.max_batch or PROBE_BATCH)
        cache_file = None if options.extra.get("precision_cache") is False else cache_home() / CACHE_FILE_NAME
        def make_static():
            static = model.clone()
            static.reshape({port: _with_batch(port.get_partial_shape(), batch) for port in static.inputs})
            return static

        try:
            weights = source.with_suffix(".bin")
            key = content_hash([source, weights] if weights.exists() else [source],
                               f"folded={self.folded};batch={batch};"
                               f"f32_heads={','.join(self.f32_heads)}")
            return choose_float_precision(core, make_static, key, cache_file, label=str(files.model_dir))
        except Exception as exc:  # noqa: BLE001 - the probe is an optimisation: never fatal
            _log.warning("precision auto: %s could not be timed (%s); using f32", source, _first_line(exc))
            return PrecisionChoice("f32", f"probe failed: {_first_line(exc)}")

    def _compile(self, batch: int | None):
        model = self._model
        if batch is not None:
            model = model.clone()
            model.reshape({port: _with_batch(port.get_partial_shape(), batch) for port in model.inputs})
        try:
            with _CACHED_COMPILE_LOCK if "CACHE_DIR" in self._config else contextlib.nullcontext():
                compiled = self._core.compile_model(model, "CPU", self._config)
        except Exception as exc:
            raise ModelError(f"model {self._source}: OpenVINO could not compile it ({_first_line(exc)})") from exc
        if batch is None:
            self._compiled_precision = compiled.get_property("INFERENCE_PRECISION_HINT")
        return compiled

    def _acquire(self, batch: int) -> tuple[int | None, object, object]:
        """An idle request for ``batch``: the static model's once compiled, else the dynamic one's.

        Returns the pool key, the compiled model the request belongs to, and the request.
        """
        with self._lock:
            self._recent.append(batch)
            self._calls += 1
            self._last_call[batch] = self._calls
            if self._preloaded_unused:
                self._release_unused_preloads(batch)
            compiled = self._static.pop(batch, None)
            if compiled is not None:
                self._static[batch] = compiled  # now the most recently used
            elif (self._compilable(batch) and self._recent.count(batch) >= _STATIC_AFTER_CALLS
                    and self._make_room()):
                self._compiling.add(batch)
                # Not a daemon: a compile cut off by interpreter exit aborts the process in C++.
                threading.Thread(target=self._compile_static, args=(batch,), daemon=False,
                                 name=f"streampose-ov-compile-{batch}").start()
            key = batch if compiled is not None else None
            owner = compiled or self._dynamic
            idle = self._idle.setdefault(key, [])
            if idle:
                return key, owner, idle.pop()
        return key, owner, owner.create_infer_request()

    def preload(self, batch_sizes: Iterable[int]) -> list[int]:
        """Compile and run once the static models of ``batch_sizes`` now, on this thread.

        For live sources, before their first frame: compiled on demand, each new size costs a
        compile on a CPU that is already posing (0.3 s from the compile cache, ~0.9 s without,
        ~65 MB each) and runs on the slower dynamic model meanwhile; measured on vtest.avi paced
        at 25 fps, the first 50 frames then waited p50 120 / p95 200-250 ms and 2-9 were
        dropped, against p50 18-21 / p95 29-33 ms and none with sizes 1-4 and the detector's 1
        compiled first. A preloaded size that no call uses within ``evict_after_idle_calls``
        calls is released. Sizes already compiled, too big for a static model, or beyond the
        session's bound of static models are skipped; returns the sizes compiled.
        """
        todo = []
        with self._lock:
            for batch in dict.fromkeys(int(size) for size in batch_sizes):
                if (batch < 1 or (self.max_batch and batch > self.max_batch) or batch in self._static
                        or not self._compilable(batch)):
                    continue
                if len(self._static) + len(self._compiling) >= self.max_static_models:
                    break
                self._compiling.add(batch)
                self._last_call[batch] = self._calls  # for the eviction order: "used" now
                todo.append(batch)
        for batch in todo:
            self._compile_static(batch)
        with self._lock:
            compiled = [batch for batch in todo if batch in self._static]
            self._preloaded_unused.update(compiled)
            self._preloaded_at = self._calls
        return compiled

    def _compilable(self, batch: int) -> bool:
        """Whether ``batch`` may get a static model (pool lock held): small enough, not being
        compiled, and its compile did not fail before."""
        return batch <= _STATIC_BATCH_LIMIT and batch not in self._compiling and batch not in self.failed_static

    def _release_unused_preloads(self, batch: int) -> None:
        """Called with the pool lock held, on every call while some preloaded size is unused."""
        self._preloaded_unused.discard(batch)
        if self._calls - self._preloaded_at <= self.evict_after_idle_calls:
            return
        for unused in self._preloaded_unused:
            if self._calls - self._last_call.get(unused, 0) > self.evict_after_idle_calls:
                self._static.pop(unused, None)
                self._idle.pop(unused, None)
        self._preloaded_unused.clear()

    def _make_room(self) -> bool:
        """Whether one more static model may be compiled, evicting an idle one if need be.

        Called with the pool lock held. Evicts the least recently used static model if no call
        needed it for ``evict_after_idle_calls`` calls; a request of it still running finishes
        and is then dropped.
        """
        if len(self._static) + len(self._compiling) < self.max_static_models:
            return True
        unused = next(iter(self._static), None)  # the least recently used
        if unused is None or self._calls - self._last_call[unused] <= self.evict_after_idle_calls:
            return False
        del self._static[unused]
        self._idle.pop(unused, None)
        return True

    def _release(self, key: int | None, owner: object, request: object) -> None:
        with self._lock:
            # An evicted model's request goes with it (not into the pool of a later recompile).
            if key is None or self._static.get(key) is owner:
                self._idle.setdefault(key, []).append(request)

    def _compile_static(self, batch: int) -> None:
        try:
            compiled = self._compile(batch)
        except ModelError as exc:
            _log.warning("batch %d stays on the dynamic model: %s", batch, exc)
            with self._lock:
                self.failed_static[batch] = str(exc)
                self._compiling.discard(batch)
            return
        request = _warmed_up_request(compiled, batch)
        # In this order, a look without the lock (a test waiting for compiles) never sees the size
        # in neither place.
        with self._lock:
            self._static[batch] = compiled
            if request is not None:
                self._idle[batch] = [request]
            self._compiling.discard(batch)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        prepared = {}
        for name in self.input_names:
            if name not in feeds:
                raise ValueError(f"missing model input {name!r}")
            dtype = np.float32 if self._input_is_float[name] else None
            prepared[name] = np.ascontiguousarray(feeds[name], dtype=dtype)
        if self._one_at_a_time is None:
            return self._run_batches(prepared)
        with self._one_at_a_time:  # one stream: a second request would only queue inside OpenVINO
            return self._run_batches(prepared)

    def _run_batches(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.max_batch == 1:
            return run_in_single_batches(self._run_once, feeds)
        return self._run_once(feeds)

    def _run_once(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        batch = int(next(iter(feeds.values())).shape[0])
        key, owner, request = self._acquire(batch)
        try:
            request.infer({self._input_ports[name]: array for name, array in feeds.items()})
            outputs = [request.get_output_tensor(port).data.copy() for port in self._output_ports]
        finally:
            self._release(key, owner, request)
        if self.max_batch == 1 and outputs and _is_nms_rows(outputs[0]):
            outputs[0] = _by_descending_score(outputs[0])
        return outputs


def _warmed_up_request(compiled, batch: int):
    """A request of ``compiled`` that has run once, or None if that run failed.

    A compiled model's first inference is slow (measured: TinyPose static batch 2-4 ~90 ms
    instead of 8-11, the detector 110 instead of 13; OpenVINO sets up its buffers and weights
    then). Run on the compile thread, that cost stays off the frame that first uses the model:
    a live camera otherwise met one such spike per new batch size in its first seconds.
    """
    try:
        request = compiled.create_infer_request()
        request.infer({port: np.zeros(tuple(port.get_shape()), port.get_element_type().to_dtype())
                       for port in compiled.inputs})
    except Exception as exc:  # noqa: BLE001 - a warm-up only: the real call reports real errors
        _log.debug("batch %d: warm-up run failed (%s)", batch, _first_line(exc))
        return None
    return request


def compile_cache_dir(options: RuntimeOptions) -> Path | None:
    """Where OpenVINO keeps compiled models between processes, or None to compile afresh.

    A compile of PP-TinyPose costs ~1.2 s of CPU on a 2-core machine, loading it back from the
    cache ~0.5 s; a video run compiles four models (two per model: dynamic and one static size),
    so later runs start ~3 s of CPU sooner. OpenVINO keys each entry by the model and the compile
    settings. Off with ``STREAMPOSE_OPENVINO_CACHE=0`` or ``RuntimeOptions.extra["compile_cache"]
    = False``; an unwritable cache folder only turns it off.
    """
    if options.extra.get("compile_cache") is False:
        return None
    if os.environ.get("STREAMPOSE_OPENVINO_CACHE", "").strip().lower() in ("0", "false", "no", "off"):
        return None
    folder = cache_home() / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def _int8_source(files: ModelFiles, float_source: Path) -> Path:
    """The cached INT8 copy of ``float_source``; its absence is the user's to fix, in one line."""
    found = find_int8_model(files, float_source)
    if found is None:
        raise ModelError(
            f"model {files.model_dir.name}: no INT8 copy in the cache; "
            f"run `streampose models quantize --model {files.model_dir.name}` first"
        )
    return found


def _is_nms_rows(array: np.ndarray) -> bool:
    return array.ndim == 2 and array.shape[1] == 6


def _by_descending_score(rows: np.ndarray) -> np.ndarray:
    """One image's NMS rows in Paddle's order.

    OpenVINO's ONNX NonMaxSuppression keeps the same boxes as Paddle's ``multiclass_nms3`` but
    not in its score order; re-sorting makes every backend return identical rows.
    """
    return rows[np.argsort(-rows[:, 1], kind="stable")]


def _paddle_layout(files: ModelFiles, model) -> tuple[list[str], list[int], list[int]]:
    """Paddle's input names with the model port of each, and output ports in Paddle's order.

    ONNX exports keep Paddle's names; an IR is matched against the Paddle graph's signature.
    """
    port_inputs = [_spec_of(port) for port in model.inputs]
    port_outputs = [_spec_of(port) for port in model.outputs]
    names = [spec.name for spec in port_inputs]
    if files.openvino_xml is None:
        return names, list(range(len(names))), paddle_output_order([spec.name for spec in port_outputs])
    paddle_inputs, paddle_outputs = _paddle_signature(files.graph)
    output_ports = _match_ports(paddle_outputs, port_outputs) or _output_order_by_shape(port_outputs)
    input_ports = _match_ports(paddle_inputs, port_inputs)
    if input_ports is None:
        return names, list(range(len(names))), output_ports
    return [spec.name for spec in paddle_inputs], input_ports, output_ports


def _type_name(element_type) -> str:
    """``f32``/``bf16`` for an OpenVINO element type (what the plugin really compiled for)."""
    to_string = getattr(element_type, "to_string", None)
    return to_string() if callable(to_string) else str(element_type)


def _spec_of(port) -> TensorSpec:
    shape = port.get_partial_shape()
    dims = tuple(d.get_length() if d.is_static else -1 for d in shape) if shape.rank.is_static else ()
    return TensorSpec(port.get_any_name(), dims, port.get_element_type().is_real())


def make_batch_dynamic(model, ov) -> None:
    """Shipped IRs are frozen at batch 1; every Paddle model here takes any batch."""
    new_shapes = {}
    for port in model.inputs:
        shape = port.get_partial_shape()
        if shape.rank.is_static and shape.rank.get_length() > 0 and shape[0].is_static:
            shape[0] = ov.Dimension()
            new_shapes[port] = shape
    if new_shapes:
        model.reshape(new_shapes)


def _with_batch(shape, batch: int):
    """``shape`` with its first dimension fixed to ``batch`` (scalars and rank-0 kept as is)."""
    if shape.rank.is_static and shape.rank.get_length() > 0:
        shape[0] = batch
    return shape


def _max_batch_of(model) -> int | None:
    """The ``streampose.max_batch`` tag an ONNX export carries (NMS graphs: 1)."""
    key = ["framework", MAX_BATCH_METADATA_KEY]
    return int(model.get_rt_info(key).astype(str)) if model.has_rt_info(key) else None


def _match_ports(expected: list[TensorSpec], actual: list[TensorSpec]) -> list[int] | None:
    """Port index for each expected tensor, if the signatures pin one assignment down.

    Several valid assignments mean the candidates are indistinguishable; declared order then wins.
    """
    if not expected or len(expected) != len(actual) or len(actual) > _MAX_PERMUTED_PORTS:
        return None
    for permutation in itertools.permutations(range(len(actual))):
        if all(spec.fits(actual[p]) for spec, p in zip(expected, permutation)):
            return list(permutation)
    return None


def _output_order_by_shape(outputs: list[TensorSpec]) -> list[int]:
    """Paddle's order when no Paddle signature is readable (``.pdmodel`` graphs).

    Every model family here puts float outputs before integer ones, and box-like outputs (last
    dimension 4 or 6: raw boxes, NMS rows) before scores.
    """
    return sorted(
        range(len(outputs)),
        key=lambda i: (not outputs[i].is_float, not (outputs[i].shape and outputs[i].shape[-1] in (4, 6))),
    )


def _paddle_signature(graph: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Feeds and fetches declared by a PIR ``inference.json``; empty lists for other graphs."""
    if graph.suffix != ".json":
        return [], []
    try:
        with open(graph, encoding="utf-8") as handle:
            ops = json.load(handle)["program"]["regions"][0]["blocks"][0]["ops"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return [], []
    feeds: list[TensorSpec] = []
    fetches: list[tuple[int, TensorSpec]] = []
    for op in ops:
        kind = str(op.get("#", ""))
        if not (kind.endswith(".data") or kind.endswith(".fetch")):
            continue
        try:
            attributes = {a["N"]: a["AT"]["D"] for a in op["A"]}
            dtype, shape = op["O"][0]["TT"]["D"][0]["#"], op["O"][0]["TT"]["D"][1]
            is_float = "_f" in dtype or "_bf" in dtype  # "0.t_f32", "0.t_bf16"; ints are "0.t_i64"
            spec = TensorSpec(str(attributes["name"]), tuple(int(d) for d in shape), is_float)
        except (KeyError, IndexError, TypeError, ValueError):
            return [], []
        if kind.endswith(".data"):
            feeds.append(spec)
        else:
            fetches.append((int(attributes.get("col", len(fetches))), spec))
    return feeds, [spec for _, spec in sorted(fetches, key=lambda item: item[0])]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
