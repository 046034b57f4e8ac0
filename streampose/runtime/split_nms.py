"""Cut the NMS off an exported detector graph, so it runs batched and fast outside Paddle.

PaddleDetection exports with NMS inside the graph become, through paddle2onnx, an ONNX
``NonMaxSuppression`` followed by gathers that only work at batch 1, and OpenVINO runs that tail
slowly (PicoDet-S-320: 18 ms a frame against 8 ms without it). The two tensors that feed the NMS
node are exactly what a raw export gives — boxes already in original-image pixels and per-class
scores — so the graph is cut there and NMS runs in numpy with the thresholds read from the node.
The boxes kept are the same (tests compare against Paddle's in-graph NMS).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from streampose.errors import ModelError

SUFFIX = "_pre_nms"
FORMAT_VERSION = 2  # 2: batch dimension made dynamic


@dataclass(frozen=True)
class NmsSettings:
    """What the cut-off NMS did: per-class hard NMS, then the best ``keep_top_k`` boxes."""

    score_threshold: float
    iou_threshold: float
    max_per_class: int
    keep_top_k: int


def split_nms(onnx_path: Path) -> tuple[Path, NmsSettings] | None:
    """The graph up to its NMS (written once beside ``onnx_path``) and the NMS settings.

    None when the graph has no single ``NonMaxSuppression`` node (raw exports, pose models).
    """
    target = onnx_path.with_name(onnx_path.stem + SUFFIX + ".onnx")
    settings_path = target.with_suffix(".json")
    if target.is_file() and settings_path.is_file():
        try:
            saved = json.loads(settings_path.read_text(encoding="utf-8"))
            if saved.get("version") == FORMAT_VERSION:
                return target, NmsSettings(**saved["settings"])
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            pass  # rebuild below
    import onnx  # noqa: PLC0415 - only needed once per model
    from onnx import numpy_helper  # noqa: PLC0415

    model = onnx.load(str(onnx_path))
    nms_nodes = [node for node in model.graph.node if node.op_type == "NonMaxSuppression"]
    if len(nms_nodes) != 1:
        return None
    node = nms_nodes[0]
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for const_node in model.graph.node:
        if const_node.op_type == "Constant":
            for attribute in const_node.attribute:
                if attribute.name == "value":
                    constants[const_node.output[0]] = numpy_helper.to_array(attribute.t)

    def scalar(index: int, default: float) -> float:
        if len(node.input) <= index or node.input[index] not in constants:
            return default
        return float(constants[node.input[index]].reshape(-1)[0])

    settings = NmsSettings(
        score_threshold=scalar(4, 0.0),
        iou_threshold=scalar(3, 0.5),
        max_per_class=int(scalar(2, 0)),
        keep_top_k=_keep_top_k(model, constants),
    )
    graph_inputs = [value.name for value in model.graph.input
                    if value.name not in {init.name for init in model.graph.initializer}]
    try:
        cut = onnx.utils.Extractor(model).extract_model(graph_inputs, [node.input[0], node.input[1]])
    except Exception as exc:  # noqa: BLE001 - any failure: keep using the whole graph
        raise ModelError(f"model {onnx_path}: cannot cut the graph before its NMS ({exc})") from None
    # paddle2onnx froze the batch at 1 for NMS graphs; up to the NMS every op takes any batch
    # (its reshapes keep the batch with 0/-1), so free the batch dimension and drop the stale
    # intermediate shapes for the runtime to infer again.
    for value in [*cut.graph.input, *cut.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims):
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    del cut.graph.value_info[:]
    _atomic_save(cut, target, onnx)
    _atomic_text(settings_path, json.dumps({"version": FORMAT_VERSION, "settings": asdict(settings)}))
    return target, settings


def _keep_top_k(model, constants: dict) -> int:
    """The K of the TopK after the NMS: ``min(selected, keep_top_k)`` in paddle2onnx's tail."""
    producers = {output: node for node in model.graph.node for output in node.output}
    for node in model.graph.node:
        if node.op_type != "TopK" or len(node.input) < 2:
            continue
        reduce = producers.get(node.input[1])
        if reduce is None or reduce.op_type != "ReduceMin":
            continue
        concat = producers.get(reduce.input[0])
        if concat is None:
            continue
        values = [constants[name] for name in concat.input if name in constants]
        if values:
            return int(values[0].reshape(-1)[0])
    return 100


def _atomic_save(model, target: Path, onnx) -> None:
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(handle)
    try:
        onnx.save(model, temp_name)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _atomic_text(target: Path, text: str) -> None:
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
