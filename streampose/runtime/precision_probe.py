"""``precision: auto`` on OpenVINO: the faster of f32 and bf16 on this CPU, measured once.

No CPU flag predicts the answer. Three CPUs of this project's 2-core machine kind, PP-TinyPose
128x96 on one thread: an Intel part with AMX ran bf16 20-30% faster than f32; an Intel part with
AVX-512 bf16 but no AMX ran it 5-15% slower; an AMD EPYC with AVX-512 bf16 (no AMX) ran it 1.65x
faster (batch 8: 10.2 vs 16.9 ms). With the heatmap head kept in f32 (:mod:`f32_heads`; a later
AMX machine lost 0.009 OKS AP on coco_mini without it) the AP matches PaddleX's in both (README).
So ``auto`` times one batch of the real model in both precisions the first time a model meets a
CPU and OpenVINO version, and remembers the answer in the user cache: later processes read it
back for free. f32 is kept unless bf16 is clearly faster (``_BF16_MUST_WIN_BY``), since f32 is
the precision PaddleX itself runs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_log = logging.getLogger("streampose.runtime")

CACHE_FILE_NAME = "openvino-precision.json"
# The probe's batch: between the graph's pose calls on files (eight persons) and live (half a
# frame's crowd, ~3 on vtest.avi).
PROBE_BATCH = 4
_WARMUP_CALLS = 2
_ROUNDS = 6
_CALLS_PER_ROUND = 2
# bf16 must be at least this much faster (a ratio of call times) to be chosen.
_BF16_MUST_WIN_BY = 0.9


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``auto`` resolved to, and the evidence."""

    precision: str  # "f32" or "bf16"
    how: str  # "measured", "cached" or why nothing was measured
    ms: dict[str, float] = field(default_factory=dict)  # best call time per precision

    def describe(self) -> str:
        times = ", ".join(f"{name} {value:.2f} ms" for name, value in self.ms.items())
        return f"{self.precision} ({self.how}{': ' + times if times else ''})"


def choose_float_precision(core, make_static_model: Callable[[], Any], source_key: str,
                           cache_file: Path | None, label: str = "the model") -> PrecisionChoice:
    """f32 or bf16 for a model on this CPU: from the cache file, else by timing both.

    ``make_static_model`` gives the model with every input size fixed (the probe's batch
    included), called only when there is something to time; ``source_key`` names its content
    (a hash of its files): the answer depends on the network's shapes as well as on the CPU.
    ``cache_file`` None measures every time. ``label`` names the model in the one line said on
    stderr while it is timed (a pause of 1-3 s, once).
    """
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in capabilities:
        return PrecisionChoice("f32", "no bf16 on this CPU")
    key = "|".join((core.get_property("CPU", "FULL_DEVICE_NAME"), " ".join(sorted(capabilities)),
                    _openvino_version(), source_key))
    cached = _read_cache(cache_file).get(key)
    if isinstance(cached, dict) and cached.get("precision") in ("f32", "bf16"):
        return PrecisionChoice(cached["precision"], "cached", dict(cached.get("ms", {})))
    static_model = make_static_model()
    inputs = _probe_inputs(static_model)
    if inputs is None:
        return PrecisionChoice("f32", "the model's input sizes are not fixed")
    where = f"remembered in {cache_file}" if cache_file is not None else "not remembered"
    print(f"streampose: timing {label} in f32 and bf16 once to pick the faster ({where})",
          file=sys.stderr, flush=True)
    ms = _time_precisions(core, static_model, inputs)
    precision = "bf16" if ms["bf16"] < _BF16_MUST_WIN_BY * ms["f32"] else "f32"
    _write_cache(cache_file, key, {"precision": precision, "ms": ms, "measured_at": time.time()})
    choice = PrecisionChoice(precision, "measured", ms)
    _log.info("precision auto: %s", choice.describe())
    return choice


def _openvino_version() -> str:
    import openvino  # noqa: PLC0415 - optional backend, imported by the caller already

    return str(openvino.get_version())


def _probe_inputs(model) -> list[np.ndarray] | None:
    """Noise of the right shape and type for each input, or None where a size is not fixed."""
    rng = np.random.default_rng(0)
    arrays = []
    for port in model.inputs:
        shape = port.get_partial_shape()
        if not shape.is_static:
            return None
        dims = [dim.get_length() for dim in shape]
        arrays.append(rng.random(dims, dtype=np.float32).astype(port.get_element_type().to_dtype()))
    return arrays


def _time_precisions(core, static_model, inputs: list[np.ndarray]) -> dict[str, float]:
    """Best call time (ms) of each precision, on one thread, in alternating rounds so that a
    neighbour's burst of load hurts both alike."""
    requests = {}
    for precision in ("f32", "bf16"):
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 1,
                  "INFERENCE_PRECISION_HINT": precision, "ENABLE_CPU_PINNING": False}
        request = core.compile_model(static_model, "CPU", config).create_infer_request()
        for _ in range(_WARMUP_CALLS):
            request.infer(inputs)
        requests[precision] = request
    best = {precision: float("inf") for precision in requests}
    for _ in range(_ROUNDS):
        for precision, request in requests.items():
            for _ in range(_CALLS_PER_ROUND):
                start = time.perf_counter()
                request.infer(inputs)
                best[precision] = min(best[precision], (time.perf_counter() - start) * 1e3)
    return {precision: round(value, 3) for precision, value in best.items()}


def _read_cache(cache_file: Path | None) -> dict:
    if cache_file is None:
        return {}
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache_file: Path | None, key: str, entry: dict) -> None:
    """Merge one entry in and replace the file atomically; a failure only costs a re-measure."""
    if cache_file is None:
        return
    data = _read_cache(cache_file)
    data[key] = entry
    temporary = None
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=cache_file.parent, prefix=cache_file.name, suffix=".partial")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=1, sort_keys=True)
        os.replace(temporary, cache_file)
        temporary = None
    except OSError as exc:
        _log.warning("precision auto: cannot remember the choice in %s (%s)", cache_file, exc.strerror)
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
