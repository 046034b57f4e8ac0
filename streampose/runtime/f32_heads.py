"""Output heads kept in f32 when the rest of a model runs in bf16.

bf16 keeps 8 bits of mantissa, and OpenVINO's CPU plugin rounds the last layer's result to bf16
before handing it back as f32. For PP-TinyPose that result is the heatmap itself: steps of ~0.4 %
near each peak, which DARK's sub-pixel refinement (derivatives of the heatmap's log) turns into
joint shifts. Measured on an Intel Xeon with AMX (OpenVINO 2026.4, coco_mini, PaddleX's boxes):
OKS AP 0.591 with the whole model in bf16, 0.600 (PaddleX's figure) with only the head
convolution in f32, for 1.6 % of a call (batch 4, one thread: 16.0 → 16.3 ms; f32 throughout
21.7 ms). The features feeding the head may stay bf16: rounding them did not move the AP.

OpenVINO keeps a node's own precision when it carries the "precise" runtime attribute (what
``ov::disable_fp16_compression`` sets; IR files carry it as ``<attribute name="precise"
version="0"/>``). Its Python API cannot create that typed attribute, so the model is saved as IR,
the attribute is added to the head layers' XML, and the model is read back from memory.
"""

from __future__ import annotations

import logging
import tempfile
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

_log = logging.getLogger("streampose.runtime")

# Ops a head's output passes through after its last weighted layer (bias, layout, casts).
_PASS_THROUGH = {"Add", "Multiply", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Convert"}
# The weighted layers whose output is a head.
_WEIGHTED = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul"}
_MAX_HEAD_DEPTH = 4


def head_layer_names(model) -> list[str]:
    """Names of the ops from each float output back to its last weighted layer, that layer included.

    An output that does not end in a weighted layer within a few pass-through ops (a softmax, a
    concatenation of several heads) gets nothing marked: its values are not a single layer's.
    """
    names: list[str] = []
    for result in model.get_results():
        if not result.get_output_element_type(0).is_real():
            continue
        path = []
        node = result.input_value(0).get_node()
        for _ in range(_MAX_HEAD_DEPTH):
            kind = node.get_type_name()
            if kind in _WEIGHTED:
                path.append(node.get_friendly_name())
                names.extend(name for name in path if name not in names)
                break
            if kind not in _PASS_THROUGH:
                break
            path.append(node.get_friendly_name())
            # Follow the one input that is not a constant (a bias, a shape).
            moving = [value.get_node() for value in node.input_values() if not _is_constant(value.get_node())]
            if len(moving) != 1:
                break
            node = moving[0]
    return names


def _is_constant(node) -> bool:
    """A Constant, or one decompressed by Convert ops (f16 weights and biases in IR files)."""
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Constant"


def keep_heads_in_f32(core, model):
    """``model`` with its heads marked to stay f32 under a bf16 hint, and the names marked.

    Returns the model unchanged (and no names) when it has no such head. Harmless in f32.
    """
    import openvino  # noqa: PLC0415 - optional backend, imported by the caller already

    names = set(head_layer_names(model))
    if not names:
        return model, []
    with tempfile.TemporaryDirectory(prefix="streampose-heads-") as folder:
        xml_path = Path(folder) / "model.xml"
        openvino.save_model(model, str(xml_path), compress_to_fp16=False)
        tree = ElementTree.parse(xml_path)
        marked = []
        for layer in tree.getroot().iter("layer"):
            if layer.get("name") in names:
                rt_info = layer.find("rt_info")
                if rt_info is None:
                    rt_info = ElementTree.Element("rt_info")
                    layer.insert(0, rt_info)
                ElementTree.SubElement(rt_info, "attribute", {"name": "precise", "version": "0"})
                marked.append(layer.get("name"))
        weights = np.fromfile(xml_path.with_suffix(".bin"), dtype=np.uint8)
        text = ElementTree.tostring(tree.getroot(), encoding="unicode")
    marked_model = core.read_model(text, openvino.Tensor(weights))
    _log.debug("bf16: kept in f32: %s", ", ".join(marked))
    return marked_model, sorted(marked)
