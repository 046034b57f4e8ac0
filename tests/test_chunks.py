"""Packing persons of consecutive frames into fixed-size pose calls (graph/chunks.py)."""

from __future__ import annotations

import pytest

from streampose.graph.chunks import FrameSplitter, PersonPacker


def pack(counts: list[int], batch: int, max_frames: int | None = None):
    packer = PersonPacker(batch, max_frames)
    chunks = [chunk for frame, count in enumerate(counts) for chunk in packer.add(frame, count)]
    last = packer.flush()
    return chunks + ([last] if last is not None else [])


def test_every_call_but_the_last_holds_exactly_the_batch():
    counts = [5, 6, 7, 3, 0, 9, 4, 6, 8, 2, 5]
    chunks = pack(counts, 8, max_frames=100)
    assert [chunk.persons for chunk in chunks] == [8] * (sum(counts) // 8) + [sum(counts) % 8]
    assert all(chunk.persons == sum(p.stop - p.start for p in chunk.pieces) for chunk in chunks)


def test_pieces_rebuild_every_frame_in_order_and_complete_it_once():
    counts = [5, 6, 0, 20, 1, 0, 0, 3]  # 20 persons span three calls
    pieces = [piece for chunk in pack(counts, 8, max_frames=100) for piece in chunk.pieces]
    assert [piece.item for piece in pieces if piece.completes] == list(range(len(counts)))
    for frame, count in enumerate(counts):
        ranges = [(piece.start, piece.stop) for piece in pieces if piece.item == frame]
        covered = [slot for start, stop in ranges for slot in range(start, stop)]
        assert covered == list(range(count))  # every person once, in order
        assert [piece.completes for piece in pieces if piece.item == frame][-1] is True
        assert sum(piece.completes for piece in pieces if piece.item == frame) == 1
    items = [piece.item for piece in pieces]
    assert items == sorted(items)  # frame order across calls


def test_frames_without_people_do_not_pile_up():
    chunks = pack([0] * 10 + [1] * 7, 8, max_frames=4)
    assert all(len(chunk.pieces) <= 4 for chunk in chunks)
    assert sum(chunk.frames_completed for chunk in chunks) == 17
    assert chunks[0].persons == 0  # posed at once, with no model call needed


def test_a_crowd_larger_than_the_batch_still_ends_its_frame():
    chunks = pack([19], 8)
    assert [chunk.persons for chunk in chunks] == [8, 8, 3]
    assert [chunk.frames_completed for chunk in chunks] == [0, 0, 1]


def test_live_frames_are_split_over_the_calls_that_run_at_once_with_nothing_held_back():
    splitter = FrameSplitter(2)
    first, second = splitter.add("frame", 13)
    assert [(p.start, p.stop) for chunk in (first, second) for p in chunk.pieces] == [(0, 6), (6, 13)]
    assert (first.persons, second.persons) == (6, 7)
    assert (first.frames_completed, second.frames_completed) == (0, 1)  # one frame, whole at the end
    (alone,) = splitter.add("next", 1)  # one person: nothing to share out
    assert alone.persons == 1 and alone.frames_completed == 1
    (empty,) = splitter.add("empty", 0)  # still one (empty) call, so the frame reaches the sinks
    assert empty.persons == 0 and empty.frames_completed == 1
    assert splitter.flush() is None
    (whole,) = FrameSplitter(1).add("frame", 13)
    assert (whole.pieces[0].start, whole.pieces[0].stop, whole.frames_completed) == (0, 13, 1)


def test_batch_must_be_positive():
    with pytest.raises(ValueError):
        PersonPacker(0)
    with pytest.raises(ValueError):
        FrameSplitter(0)
