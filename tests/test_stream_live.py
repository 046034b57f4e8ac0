"""Live sources through the whole graph: RTSP reconnects, and a sink slower than the camera.

The RTSP server is the real GStreamer one from ``test_rtsp.py`` (killed and restarted to cut the
network); the camera stand-in is FFmpeg's lavfi test picture, paced in real time.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from streampose.graph.runner import FrameOutput, StreamGraph, StreamSettings
from streampose.sources import ReconnectPolicy, RtspSource, open_source
from test_graph import fastest_backend, wait_for_no_graph_threads
from test_rtsp import (  # noqa: F401 - rtsp_server is a fixture used by name
    DEBIAN_PACKAGES,
    SYSTEM_PYTHON,
    RtspServer,
    _gstreamer_rtsp_available,
    free_port,
    rtsp_server,
)
from test_stream_e2e import cli_command

BACKEND = fastest_backend()
FAST_RECONNECT = ReconnectPolicy(initial_delay_s=0.25, max_delay_s=1.0)

needs_rtsp_server = pytest.mark.skipif(
    not _gstreamer_rtsp_available(),
    reason=f"GStreamer RTSP server not installed for {SYSTEM_PYTHON}: apt-get install {DEBIAN_PACKAGES}",
)


@pytest.fixture(scope="module")
def pipeline(model_home):
    from streampose import create_pipeline

    return create_pipeline("human_keypoint_detection", backend=BACKEND)


def restart_after(server: RtspServer, delay_s: float) -> threading.Thread:
    def restart() -> None:
        time.sleep(delay_s)
        server.start()

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    return thread


def vm_rss_mb() -> float:
    """Resident memory of this process (psutil is not a dependency; Linux's /proc is enough)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status on this system")


# -- RTSP ----------------------------------------------------------------------------------------


@needs_rtsp_server
def test_rtsp_stream_keeps_going_after_the_server_comes_back(pipeline, rtsp_server):
    source = RtspSource(rtsp_server.url, reconnect=FAST_RECONNECT)
    stream = pipeline.stream(source, det_interval=3)
    before: list[int] = []
    after: list[int] = []
    persons_after = 0
    restarter = None
    deadline = time.monotonic() + 60
    try:
        for result in stream:
            assert time.monotonic() < deadline, f"stalled: {len(before)} frames before, {len(after)} after"
            if source.stats.reconnects == 0:
                before.append(result["frame_index"])
                if len(before) == 10:
                    rtsp_server.kill()  # the graph must notice and reconnect on its own
                    restarter = restart_after(rtsp_server, 2.0)
            else:
                after.append(result["frame_index"])
                persons_after += len(result["boxes"])
                if len(after) == 15:
                    break
    finally:
        stream.close()
    assert restarter is not None
    restarter.join(10)
    assert source.stats.reconnects >= 1
    assert len(after) == 15 and persons_after > 15  # vtest's street again, with people posed
    indices = before + after
    assert all(later > earlier for earlier, later in zip(indices, indices[1:]))
    assert wait_for_no_graph_threads() == []


@needs_rtsp_server
def test_cli_on_rtsp_reconnects_and_stops_on_ctrl_c_with_a_summary(model_home, rtsp_server, tmp_path):
    """``--json -`` streams one line per frame; SIGINT ends a live run with exit 130."""
    summary_path = tmp_path / "summary.json"
    process = subprocess.Popen(
        cli_command("--source", rtsp_server.url, "--json", "-", "--summary-json", str(summary_path)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")
    lines: queue.Queue[str] = queue.Queue()
    stderr_lines: list[str] = []
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    threading.Thread(target=lambda: stderr_lines.extend(process.stderr), daemon=True).start()
    records: list[dict] = []

    def read_records(count: int, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        for _ in range(count):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            records.append(json.loads(line))  # stdout carries nothing but JSON

    try:
        read_records(10, limit_s=90)
        rtsp_server.kill()
        killed_at = time.monotonic()
        restarter = restart_after(rtsp_server, 2.0)
        while True:  # frames already decoded still arrive; then the outage, then new frames
            read_records(1, limit_s=30)
            if records[-1]["time"] - records[-2]["time"] > 1.5:
                break
            assert time.monotonic() - killed_at < 30, "no gap in time: the outage was not seen"
        read_records(10, limit_s=30)
        restarter.join(10)
        process.send_signal(signal.SIGINT)
        returncode = process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert returncode == 130, "".join(stderr_lines)[-2000:]
    time.sleep(0.5)
    while not lines.empty():
        records.append(json.loads(lines.get()))
    frames = [record["frame"] for record in records]
    assert frames == sorted(set(frames))
    summary = json.loads(summary_path.read_text())
    print(f"\nRTSP CLI: {summary['frames']} frames, reconnects {summary['reconnects']}, "
          f"dropped {summary['dropped']}, latency p95 {summary['latency']['p95_ms']:.0f} ms")
    assert summary["interrupted"] is True and summary["reconnects"] >= 1
    assert summary["frames"] == len(records)


# -- a sink slower than the camera --------------------------------------------------------------


def test_slow_sink_on_a_live_source_drops_frames_and_stays_bounded(pipeline):
    """A 25 fps camera and a sink that takes 0.1 s a frame (4x too slow).

    Only the decoded queue drops; the stages after it apply backpressure, so a frame can wait
    behind at most (queue_size - 1) decoded + 1 held by the track stage + W queues of queue_size
    to the W pose workers + W held by them + W queues of queue_size posed + 1 in the sink
    (live queues are smaller still; this is the loose bound). That bound is what latency must
    stay under, and it must not grow.
    """
    sink_s, queue_size = 0.1, 4
    settings = StreamSettings(det_interval=3, queue_size=queue_size, det_threshold=pipeline.det_threshold)
    sink_latencies: list[float] = []

    def slow_sink(output: FrameOutput) -> None:
        time.sleep(sink_s)
        sink_latencies.append(time.perf_counter() - output.decoded_at)

    source = open_source("lavfi:testsrc2=size=640x480:rate=25")
    graph = StreamGraph(source, pipeline.detector, pipeline.keypoint_model, settings, [slow_sink])
    workers = graph.pose_workers
    frames_ahead = (queue_size - 1) + 1 + workers * (2 * queue_size + 1) + 1
    latency_bound_s = (frames_ahead + 1) * sink_s
    graph.start()
    try:
        time.sleep(2.0)  # warm-up: queues fill, allocators settle
        rss_warm = vm_rss_mb()
        time.sleep(6.0)
        rss_growth = vm_rss_mb() - rss_warm
        stopped_at = time.monotonic()
    finally:
        graph.stop()
        all_ended = graph.wait(10.0)
        source.close()
    stop_seconds = time.monotonic() - stopped_at
    summary = graph.summary()
    latency = summary["latency"]
    print(f"\nslow sink: {summary['frames']} frames out, {summary['dropped']} dropped, queue depths "
          f"{summary['queue_max_depth']}, latency p50 {latency['p50_ms']:.0f} / p95 {latency['p95_ms']:.0f} / "
          f"max {latency['max_ms']:.0f} ms (bound {latency_bound_s * 1000:.0f}), RSS +{rss_growth:.1f} MB, "
          f"stop {stop_seconds:.2f} s")
    assert all_ended and graph.error is None
    assert wait_for_no_graph_threads() == []
    assert stop_seconds < 2.0
    assert summary["dropped"] > 0
    decoded = next(stage["items"] for stage in summary["stages"] if stage["stage"] == "decode")
    assert summary["frames"] + summary["dropped"] <= decoded
    assert summary["frames"] < 0.7 * decoded  # the sink really was the bottleneck
    assert all(depth <= queue_size + 1 for depth in summary["queue_max_depth"].values())  # +1: end marker
    assert latency["p95_ms"] < latency_bound_s * 1000
    # Latency settles instead of growing with the run: the last third is no worse than the middle.
    thirds = np.array_split(np.asarray(sink_latencies), 3)
    assert thirds[2].mean() <= thirds[1].mean() + 0.3
    assert rss_growth < 50
