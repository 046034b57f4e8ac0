"""Fold channel shuffles into the convolutions around them (an OpenVINO graph pass).

PP-TinyPose is a Lite-HRNet: its blocks are ShuffleNetV2 units (split the channels, convolve one
half, concatenate, shuffle). A shuffle only renames channels, yet on OpenVINO's CPU plugin each
one is a full copy in a blocked layout: in the 128x96 model the 49 shuffles take a third of a
batch-6 bf16 call. This pass carries the renaming instead of moving data. Concatenations and
splits along channels, and the shuffles themselves, become bookkeeping (a *view*: for each
channel, which tensor and which of its channels holds it). A view becomes a tensor only where an
op needs one, as a concatenation of contiguous slices in whatever channel order is cheapest; the
order is then folded into what reads it: the input columns of a convolution, the filters of a
depthwise convolution, per-channel constants, or the output rows of the convolution that feeds
the other side of an addition. Only where nothing can absorb an order is it restored: by a Gather,
or on narrow tensors by a 1x1 convolution whose filters are a permutation matrix.

The function is unchanged; a convolution may sum its input channels in another order (f32
results move by ~1e-6 relative).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

# A channel of a real tensor: (output key, channel index). Keys are (node name, output index).
Key = tuple[str, int]
Channel = tuple[Key, int]

_PER_CHANNEL_BINARY = {"Add", "Multiply", "Subtract", "Divide", "Maximum", "Minimum"}
_PER_CHANNEL_UNARY = {"Relu", "Sigmoid", "HSwish", "HSigmoid", "Swish", "Clamp", "Exp", "Tanh"}
_SHAPE_ONLY = {"ShapeOf"}
# A view split into parts of more slices than this is put in order first (one Gather). Measured on
# TinyPose 128x96, batch 6, bf16, one thread (ms per call, original 15.5): at most 1 slice per
# part 13.9, 2: 12.4, 3: 12.7, 4: 15.0, no limit (5-9 slices per concatenation) 14.5.
MAX_PIECES = 2
# OpenVINO's CPU plugin runs a channel Gather in the plain layout only, so restoring an order with
# one also costs two layout changes around it (the convolutions run channels-last). A 1x1
# convolution whose filters are a permutation matrix moves the channels in that layout instead,
# exactly for finite values (one product by 1, the rest by 0), at C multiply-adds per value.
# Measured with f32, batch 8, one thread on an AVX2 EPYC (ms per call, all Gathers first; limit
# 48 / 96 / 200 / 400): TinyPose 128x96 28.9 → 28.0 / 28.9 / 29.7 / 29.8 (seven 40-channel
# orders at 48), 256x192 175 → 123 / 124 / 127 / 128.
PERMUTE_BY_CONVOLUTION_MAX_CHANNELS = 48


@dataclass
class FoldReport:
    """What the pass did to one model."""

    shuffles: int = 0  # channel shuffles turned into bookkeeping
    gathers: int = 0  # places where an order could not be absorbed and a Gather restores it
    permutations: int = 0  # such places where a permutation convolution does it instead
    concats: list[int] = field(default_factory=list)  # pieces per concatenation the pass made


def _key(output) -> Key:
    return output.get_node().get_name(), output.get_index()


def _channels_of(output) -> int | None:
    shape = output.get_partial_shape()
    if not shape.rank.is_static or shape.rank.get_length() != 4 or not shape[1].is_static:
        return None
    return shape[1].get_length()


def _constant_of(output):
    """(values, Constant node, Convert node or None) when ``output`` is a constant, else None."""
    node = output.get_node()
    convert = None
    if node.get_type_name() == "Convert" and node.input_value(0).get_node().get_type_name() == "Constant":
        convert, node = node, node.input_value(0).get_node()
    if node.get_type_name() != "Constant":
        return None
    return np.array(node.get_data()), node, convert


class _Folder:
    def __init__(self, model, ops) -> None:
        self.model, self.ops = model, ops
        self.views: dict[Key, list[Channel]] = {}
        self.outputs: dict[Key, object] = {}
        self.made: dict[tuple[Channel, ...], tuple[object, np.ndarray]] = {}
        self.slices: dict[tuple[Key, int, int], object] = {}
        self.skip: set[str] = set()
        self.report = FoldReport()

    # -- views ---------------------------------------------------------------------------------

    def view_of(self, output) -> list[Channel] | None:
        key = _key(output)
        self.outputs.setdefault(key, output)
        if key in self.views:
            return self.views[key]
        channels = _channels_of(output)
        return None if channels is None else [(key, index) for index in range(channels)]

    def set_view(self, output, channels: list[Channel]) -> None:
        key = _key(output)
        self.outputs[key] = output
        if channels != [(key, index) for index in range(len(channels))]:
            self.views[key] = channels
        else:
            self.views.pop(key, None)

    def materialize(self, channels: list[Channel]) -> tuple[object, np.ndarray]:
        """A real tensor holding ``channels`` and, per logical channel, its position there.

        Channels are laid out source by source (first seen first), each source's channels in
        ascending order, so every source contributes its contiguous runs as plain slices.
        """
        cache_key = tuple(channels)
        if cache_key in self.made:
            return self.made[cache_key]
        if len(set(channels)) != len(channels):
            return self.made.setdefault(cache_key, self.gathered(channels))
        rank = {}
        for key, _ in channels:
            rank.setdefault(key, len(rank))
        order = sorted(range(len(channels)), key=lambda i: (rank[channels[i][0]], channels[i][1], i))
        runs: list[tuple[Key, int, int]] = []  # (source, start, stop)
        for logical in order:
            key, index = channels[logical]
            if runs and runs[-1][0] == key and runs[-1][2] == index:
                runs[-1] = (key, runs[-1][1], index + 1)
            else:
                runs.append((key, index, index + 1))
        pieces = self.pieces(runs)
        if len(pieces) == 1:
            tensor = pieces[0]
        else:
            tensor = self.ops.concat(pieces, 1).output(0)
            self.report.concats.append(len(pieces))
        physical = np.empty(len(channels), np.int64)
        physical[np.array(order)] = np.arange(len(channels))
        self.made[cache_key] = (tensor, physical)
        return tensor, physical

    def gathered(self, channels: list[Channel]) -> tuple[object, np.ndarray]:
        """A view that repeats channels, as a Gather over its whole sources (in logical order)."""
        offsets: dict[Key, int] = {}
        for key, _ in channels:
            if key not in offsets:
                offsets[key] = sum(_channels_of(self.outputs[k]) for k in offsets)
        sources = [self.outputs[key] for key in offsets]
        base = sources[0] if len(sources) == 1 else self.ops.concat(sources, 1).output(0)
        indices = np.array([offsets[key] + index for key, index in channels], np.int64)
        self.report.gathers += 1
        tensor = self.ops.gather(base, self.ops.constant(indices), self.ops.constant(np.int64(1))).output(0)
        return tensor, np.arange(len(channels))

    def pieces(self, runs: list[tuple[Key, int, int]]) -> list:
        """One tensor per run: a whole source as it is, else a slice of it along channels."""
        pieces = []
        for key, start, stop in runs:
            source = self.outputs[key]
            if (start, stop) == (0, _channels_of(source)):
                pieces.append(source)
                continue
            cache_key = (key, start, stop)
            if cache_key not in self.slices:
                self.slices[cache_key] = self.ops.slice(
                    source, *(self.ops.constant(np.array([value], np.int64)) for value in (start, stop, 1, 1))
                ).output(0)
            pieces.append(self.slices[cache_key])
        return pieces

    def restore_order(self, channels: list[Channel]):
        """``channels`` as a tensor in logical order (a Gather, unless the layout already is)."""
        tensor, physical = self.materialize(channels)
        if np.array_equal(physical, np.arange(len(physical))):
            return tensor
        if _permutable_by_convolution(tensor):
            self.report.permutations += 1
            filters = np.zeros((len(physical), len(physical), 1, 1), tensor.get_element_type().to_dtype())
            filters[np.arange(len(physical)), physical, 0, 0] = 1
            return self.ops.convolution(tensor, self.ops.constant(filters), [1, 1], [0, 0], [0, 0], [1, 1]).output(0)
        self.report.gathers += 1
        return self.ops.gather(tensor, self.ops.constant(physical), self.ops.constant(np.int64(1))).output(0)

    # -- the walk ------------------------------------------------------------------------------

    def run(self) -> FoldReport:
        for node in self.model.get_ordered_ops():
            if node.get_name() in self.skip:
                continue
            kind = node.get_type_name()
            if kind == "Reshape" and self.try_shuffle(node):
                continue
            if kind == "Concat" and self.try_concat(node):
                continue
            if kind in ("Split", "VariadicSplit") and self.try_split(node):
                continue
            if any(_key(node.input_value(i)) in self.views for i in range(node.get_input_size())):
                self.consume(node)
        self.model.validate_nodes_and_infer_types()
        return self.report

    def try_shuffle(self, first) -> bool:
        """A shuffle's output is a view of its input's channels in the shuffled order."""
        found = _shuffle_at(first)
        if found is None:
            return False
        transpose, last, groups, per_group = found
        view = self.view_of(first.input_value(0))
        permutation = np.arange(groups * per_group).reshape(groups, per_group).T.ravel()
        self.set_view(last.output(0), [view[i] for i in permutation])
        self.skip.update({transpose.get_name(), last.get_name()})
        self.report.shuffles += 1
        return True

    def try_concat(self, node) -> bool:
        if node.get_attributes().get("axis") not in (1, -3):
            return False
        views = [self.view_of(node.input_value(i)) for i in range(node.get_input_size())]
        if any(view is None for view in views):
            return False
        self.set_view(node.output(0), [channel for view in views for channel in view])
        return True

    def try_split(self, node) -> bool:
        view = self.view_of(node.input_value(0))
        axis = _constant_of(node.input_value(1))
        if view is None or axis is None or int(axis[0].reshape(-1)[0]) not in (1, -3):
            return False
        sizes = [_channels_of(node.output(i)) for i in range(node.get_output_size())]
        if any(size is None for size in sizes) or sum(sizes) != len(view):
            return False
        bounds = np.cumsum([0, *sizes])
        if max(_run_count(view[a:b]) for a, b in itertools.pairwise(bounds)) > MAX_PIECES:
            # Scattered over many slices: one Gather now is cheaper than a wide concatenation
            # for every reader of every part.
            tensor = self.restore_order(view)
            self.outputs[_key(tensor)] = tensor
            view = [(_key(tensor), index) for index in range(len(view))]
        start = 0
        for index, size in enumerate(sizes):
            self.set_view(node.output(index), view[start:start + size])
            start += size
        return True

    def consume(self, node) -> None:
        """``node`` reads at least one view: make it read real tensors, absorbing orders."""
        kind = node.get_type_name()
        if kind == "Convolution" and self.fold_into_convolution(node):
            return
        if kind == "GroupConvolution" and self.fold_into_depthwise(node):
            return
        if (kind in _PER_CHANNEL_UNARY or kind == "Interpolate") and self.pass_through(node):
            return
        if kind in _PER_CHANNEL_BINARY and self.fold_into_binary(node):
            return
        for index in range(node.get_input_size()):
            source = node.input_value(index)
            if _key(source) in self.views:
                channels = self.views[_key(source)]
                tensor = self.materialize(channels)[0] if kind in _SHAPE_ONLY else self.restore_order(channels)
                node.input(index).replace_source_output(tensor)

    def fold_into_convolution(self, node) -> bool:
        weights = _constant_of(node.input_value(1))
        if weights is None:
            return False
        tensor, physical = self.materialize(self.views[_key(node.input_value(0))])
        values = np.zeros_like(weights[0])
        np.add.at(values, (slice(None), physical), weights[0])
        node.input(0).replace_source_output(tensor)
        node.input(1).replace_source_output(self.constant_like(values, weights))
        return True

    def fold_into_depthwise(self, node) -> bool:
        weights = _constant_of(node.input_value(1))
        view = self.views[_key(node.input_value(0))]
        if weights is None or weights[0].shape[:3] != (len(view), 1, 1):
            return False
        tensor, physical = self.materialize(view)
        values = np.empty_like(weights[0])
        values[physical] = weights[0]
        node.input(0).replace_source_output(tensor)
        node.input(1).replace_source_output(self.constant_like(values, weights))
        self.set_view(node.output(0), [(_key(node.output(0)), int(p)) for p in physical])
        return True

    def pass_through(self, node) -> bool:
        """Per-channel ops (activations, spatial resize) keep a view's order on their output."""
        if node.get_output_size() != 1 or _channels_of(node.output(0)) != len(self.views[_key(node.input_value(0))]):
            return False
        if any(_key(node.input_value(i)) in self.views for i in range(1, node.get_input_size())):
            return False
        tensor, physical = self.materialize(self.views[_key(node.input_value(0))])
        node.input(0).replace_source_output(tensor)
        self.set_view(node.output(0), [(_key(node.output(0)), int(p)) for p in physical])
        return True

    def fold_into_binary(self, node) -> bool:
        """Elementwise op of views, per-channel constants and tensors whose producer can reorder."""
        channels = _channels_of(node.output(0))
        if channels is None or node.get_input_size() != 2:
            return False
        layout = None
        plans = []
        for index in range(2):
            source = node.input_value(index)
            if _key(source) in self.views:
                tensor, physical = self.materialize(self.views[_key(source)])
                if layout is not None and not np.array_equal(layout, physical):
                    return False
                layout = physical
                plans.append(("view", tensor))
            elif (constant := _constant_of(source)) is not None:
                plans.append(("constant", constant))
            else:
                plans.append(("producer", source))
        for kind, item in plans:
            if kind == "constant" and not _permutable_constant(item[0], channels):
                return False
            if kind == "producer" and self.producer_chain(item) is None:
                return False
        for index, (kind, item) in enumerate(plans):
            if kind == "view":
                node.input(index).replace_source_output(item)
            elif kind == "constant":
                node.input(index).replace_source_output(self.permuted_constant(item, layout, 1))
            else:
                self.reorder(item, layout)
        self.set_view(node.output(0), [(_key(node.output(0)), int(p)) for p in layout])
        return True

    # -- reordering a producer's output channels ---------------------------------------------

    def producer_chain(self, output) -> list | None:
        """The nodes that make ``output``, back to convolutions whose output rows can be reordered.

        Every node on the way must be per-channel (or add two such trees), feed nothing but the
        next one (ShapeOf aside) and read no view.
        """
        node = output.get_node()
        readers = list({t.get_node().get_name(): t.get_node() for t in output.get_target_inputs()
                        if t.get_node().get_type_name() not in _SHAPE_ONLY}.values())
        if len(readers) != 1:  # measured: letting other readers see a view cost more Gathers
            return None
        kind = node.get_type_name()
        if kind == "Convolution" and _constant_of(node.input_value(1)) is not None:
            return [node]  # its output rows reorder whatever it reads
        if any(_key(node.input_value(i)) in self.views for i in range(node.get_input_size())):
            return None
        if kind == "GroupConvolution":
            weights = _constant_of(node.input_value(1))
            if weights is None or weights[0].shape[1:3] != (1, 1):
                return None
        elif kind == "Add" and all(_constant_of(node.input_value(i)) is None for i in range(2)):
            left, right = self.producer_chain(node.input_value(0)), self.producer_chain(node.input_value(1))
            return None if left is None or right is None else [node, *left, *right]
        elif kind in _PER_CHANNEL_BINARY:
            constant = _constant_of(node.input_value(1))
            if constant is None or not _permutable_constant(constant[0], _channels_of(node.output(0))):
                return None
        elif kind not in _PER_CHANNEL_UNARY and kind != "Interpolate":
            return None
        rest = self.producer_chain(node.input_value(0))
        return None if rest is None else [node, *rest]

    def reorder(self, output, layout: np.ndarray) -> None:
        """Make ``output`` hold logical channel i at position ``layout[i]``, at its producer."""
        chain = {node.get_name(): node for node in self.producer_chain(output)}  # x + x: once
        for node in chain.values():
            kind = node.get_type_name()
            constant = _constant_of(node.input_value(1)) if node.get_input_size() > 1 else None
            if constant is not None and (kind in ("Convolution", "GroupConvolution") or kind in _PER_CHANNEL_BINARY):
                axis = 1 if kind in _PER_CHANNEL_BINARY else 0
                node.input(1).replace_source_output(self.permuted_constant(constant, layout, axis))

    def permuted_constant(self, constant, layout: np.ndarray, axis: int):
        """``constant`` laid out so that logical channel i sits at ``layout[i]`` along ``axis``.

        Filters are permuted along axis 0 (output channels), broadcast constants [1, C, 1, 1]
        along axis 1; a per-tensor constant stays as it is.
        """
        values = constant[0]
        if values.size == 1:
            return constant[1].output(0) if constant[2] is None else constant[2].output(0)
        permuted = np.empty_like(values)
        index = [slice(None)] * values.ndim
        index[axis] = layout
        permuted[tuple(index)] = values
        return self.constant_like(permuted, constant)

    def constant_like(self, values: np.ndarray, constant):
        """A new constant of ``values``, stored like the original (e.g. f16 decompressed by a Convert)."""
        new = self.ops.constant(values)
        if constant[2] is None:
            return new.output(0)
        return self.ops.convert(new, constant[2].get_output_element_type(0)).output(0)


def _shuffle_at(first):
    """(transpose, last reshape, groups, channels per group) if a channel shuffle starts at ``first``.

    The pattern: Reshape [N,C,H,W]→[N,g,C/g,H,W], Transpose (0,2,1,3,4), Reshape back to C channels.
    """
    if first.get_type_name() != "Reshape":
        return None
    channels = _channels_of(first.input_value(0))
    out_shape = first.get_output_partial_shape(0)
    if channels is None or not out_shape.rank.is_static or out_shape.rank.get_length() != 5:
        return None
    if not (out_shape[1].is_static and out_shape[2].is_static):
        return None
    groups, per_group = out_shape[1].get_length(), out_shape[2].get_length()
    targets = list(first.output(0).get_target_inputs())
    if groups * per_group != channels or len(targets) != 1:
        return None
    transpose = targets[0].get_node()
    order = _constant_of(transpose.input_value(1)) if transpose.get_type_name() == "Transpose" else None
    if order is None or order[0].tolist() != [0, 2, 1, 3, 4]:
        return None
    targets = list(transpose.output(0).get_target_inputs())
    if len(targets) != 1 or targets[0].get_node().get_type_name() != "Reshape":
        return None
    last = targets[0].get_node()
    if _channels_of(last.output(0)) != channels:
        return None
    return transpose, last, groups, per_group


def _run_count(channels: list[Channel]) -> int:
    """How many contiguous slices a tensor of ``channels`` is made of (see ``materialize``)."""
    by_source: dict[Key, list[int]] = {}
    for key, index in channels:
        by_source.setdefault(key, []).append(index)
    runs = 0
    for indices in by_source.values():
        ordered = np.sort(np.array(indices))
        runs += 1 + int(np.count_nonzero(np.diff(ordered) != 1))
    return runs


def _permutable_by_convolution(output) -> bool:
    """A float NCHW tensor narrow enough that a 1x1 convolution beats a Gather at reordering it."""
    channels = _channels_of(output)
    return (channels is not None and channels <= PERMUTE_BY_CONVOLUTION_MAX_CHANNELS
            and output.get_element_type().is_real())


def _permutable_constant(values: np.ndarray, channels: int | None) -> bool:
    """Broadcasts to [N, C, H, W] either per tensor or per channel only."""
    if values.size == 1:
        return True
    return values.ndim == 4 and values.shape[1] == channels and values.size == channels


def fold_channel_shuffles(model) -> FoldReport:
    """Rewrite ``model`` (an ``openvino.Model``) in place; returns what was folded.

    A model without channel shuffles is left untouched.
    """
    import openvino.opset13 as ops  # optional backend: imported when used

    if not any(_shuffle_at(node) is not None for node in model.get_ordered_ops()):
        return FoldReport()
    return _Folder(model, ops).run()
