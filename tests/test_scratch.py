"""Reused per-thread input buffers: reuse within a thread, never across threads, growth, and
the limit above which nothing is kept (real poses from two threads at once: test_keypoints.py)."""

from __future__ import annotations

import threading

import numpy as np

from streampose.models.scratch import ThreadScratch


def test_a_thread_gets_the_same_memory_back_and_other_threads_their_own() -> None:
    scratch = ThreadScratch(max_rows=8)
    first = scratch.array("tensor", (4, 3, 8, 6), np.float32)
    again = scratch.array("tensor", (3, 3, 8, 6), np.float32)
    assert again.shape == (3, 3, 8, 6) and np.shares_memory(first, again)
    other_dtype = scratch.array("tensor", (4, 3, 8, 6), np.uint8)
    other_name = scratch.array("crops", (4, 3, 8, 6), np.float32)
    assert not np.shares_memory(first, other_dtype) and not np.shares_memory(first, other_name)

    from_other_thread: list[np.ndarray] = []
    thread = threading.Thread(target=lambda: from_other_thread.append(scratch.array("tensor", (4, 3, 8, 6), np.float32)))
    thread.start()
    thread.join()
    assert not np.shares_memory(first, from_other_thread[0])


def test_a_larger_call_grows_the_buffer_and_one_over_the_limit_is_not_kept() -> None:
    scratch = ThreadScratch(max_rows=8)
    small = scratch.array("tensor", (2, 5), np.float32)
    grown = scratch.array("tensor", (6, 5), np.float32)
    assert grown.shape == (6, 5) and not np.shares_memory(small, grown)
    assert np.shares_memory(grown, scratch.array("tensor", (6, 5), np.float32))
    huge = scratch.array("tensor", (9, 5), np.float32)
    assert huge.shape == (9, 5) and not np.shares_memory(huge, grown)
    assert not np.shares_memory(huge, scratch.array("tensor", (9, 5), np.float32))
