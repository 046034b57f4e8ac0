"""``precision: auto`` on OpenVINO: timed once per model and CPU, remembered, never fatal.

The real PP-TinyPose IR is timed in both precisions on this machine's CPU; where a test needs a
particular verdict, the timing function is replaced by fixed figures (a verdict from real timings
could go either way on a machine where both precisions run alike).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from streampose.models.registry import load_model_files
from streampose.runtime import RuntimeOptions
from streampose.runtime import openvino_backend, precision_probe
from streampose.runtime.openvino_backend import OpenVinoSession

pytest.importorskip("openvino")


@pytest.fixture()
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMPOSE_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tinypose(model_home):
    return load_model_files("PP-TinyPose_128x96", None)


def _cpu_has_bf16() -> bool:
    import openvino  # noqa: PLC0415

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _auto(files, **extra) -> OpenVinoSession:
    return OpenVinoSession(files, RuntimeOptions(backend="openvino", precision="auto", extra=extra))


def _fixed_timings(monkeypatch, figures: dict[str, float]) -> list[int]:
    calls: list[int] = []

    def timed(core, static_model, inputs):
        calls.append(len(inputs))
        assert all(array.shape[0] == precision_probe.PROBE_BATCH for array in inputs)
        return dict(figures)

    monkeypatch.setattr(precision_probe, "_time_precisions", timed)
    return calls


def test_auto_times_both_precisions_once_and_remembers_the_faster(tinypose, cache_home, monkeypatch, capfd):
    first = _auto(tinypose)
    choice = first.precision_choice
    if not _cpu_has_bf16():
        assert (choice.precision, choice.how, first.precision) == ("f32", "no bf16 on this CPU", "f32")
        pytest.skip("this CPU has no bf16 units (OpenVINO reports no BF16 capability): nothing to time")
    assert choice.how == "measured" and set(choice.ms) == {"f32", "bf16"}
    assert all(0.1 < value < 1000 for value in choice.ms.values())
    expected = "bf16" if choice.ms["bf16"] < 0.9 * choice.ms["f32"] else "f32"
    assert choice.precision == expected and first.precision == expected
    entries = json.loads((cache_home / precision_probe.CACHE_FILE_NAME).read_text())
    assert [entry["precision"] for entry in entries.values()] == [expected]
    said = capfd.readouterr().err.splitlines()
    assert [line for line in said if "f32 and bf16" in line] == [
        f"streampose: timing {tinypose.model_dir} in f32 and bf16 once to pick the faster "
        f"(remembered in {cache_home / precision_probe.CACHE_FILE_NAME})"]

    # A second session (a later process alike) reads the verdict back without timing anything.
    def must_not_time(*args):
        raise AssertionError("the cached verdict was timed again")

    monkeypatch.setattr(precision_probe, "_time_precisions", must_not_time)
    second = _auto(tinypose)
    assert second.precision_choice.how == "cached"
    assert second.precision == expected and second.precision_choice.ms == choice.ms
    assert "f32 and bf16" not in capfd.readouterr().err


def test_auto_keeps_f32_unless_bf16_is_clearly_faster(tinypose, cache_home, monkeypatch):
    if not _cpu_has_bf16():
        pytest.skip("this CPU has no bf16 units (OpenVINO reports no BF16 capability)")
    calls = _fixed_timings(monkeypatch, {"f32": 10.0, "bf16": 9.5})
    close = _auto(tinypose, precision_cache=False)
    assert (close.precision_choice.precision, close.precision_choice.how, close.precision) == ("f32", "measured", "f32")
    calls_faster = _fixed_timings(monkeypatch, {"f32": 10.0, "bf16": 6.0})
    faster = _auto(tinypose, precision_cache=False)
    assert (faster.precision_choice.precision, faster.precision) == ("bf16", "bf16")
    # Each session timed once, with one input (the crop batch) at the probe's batch size.
    assert calls == calls_faster == [1]
    assert not (cache_home / precision_probe.CACHE_FILE_NAME).exists()  # precision_cache=False
    crops = np.random.default_rng(1).random((3, 3, 128, 96), dtype=np.float32)
    assert faster.run({"image": crops})[0].shape == (3, 17, 32, 24)


def test_a_corrupt_or_unwritable_cache_costs_only_a_measurement(tinypose, tmp_path, monkeypatch, caplog):
    if not _cpu_has_bf16():
        pytest.skip("this CPU has no bf16 units (OpenVINO reports no BF16 capability)")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / precision_probe.CACHE_FILE_NAME).write_text("{not json", encoding="utf-8")
    monkeypatch.setenv("STREAMPOSE_CACHE_HOME", str(cache))
    _fixed_timings(monkeypatch, {"f32": 10.0, "bf16": 6.0})
    assert _auto(tinypose).precision_choice.how == "measured"
    assert [entry["precision"] for entry in json.loads((cache / precision_probe.CACHE_FILE_NAME).read_text()).values()] == ["bf16"]

    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("STREAMPOSE_CACHE_HOME", str(blocker / "cache"))  # its parent is a file
    with caplog.at_level(logging.WARNING, logger="streampose.runtime"):
        session = _auto(tinypose)
    assert session.precision == "bf16"
    assert any("cannot remember the choice" in record.getMessage() for record in caplog.records)
    assert not list(tmp_path.glob("**/*.partial"))


def test_a_failing_probe_leaves_f32_and_says_so(tinypose, cache_home, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("probe exploded\nsecond line")

    monkeypatch.setattr(openvino_backend, "choose_float_precision", broken)
    with caplog.at_level(logging.WARNING, logger="streampose.runtime"):
        session = _auto(tinypose)
    assert session.precision == "f32"
    assert session.precision_choice.how == "probe failed: probe exploded"
    messages = [record.getMessage() for record in caplog.records if "precision auto" in record.getMessage()]
    assert len(messages) == 1 and "using f32" in messages[0] and "\n" not in messages[0]


def test_explicit_precisions_are_not_timed(tinypose, cache_home, monkeypatch):
    def must_not_time(*args):
        raise AssertionError("an explicit precision was timed")

    monkeypatch.setattr(precision_probe, "_time_precisions", must_not_time)
    session = OpenVinoSession(tinypose, RuntimeOptions(backend="openvino", precision="f32"))
    assert session.precision == "f32" and session.precision_choice is None
    assert openvino_backend.precision_hint("auto") is None
    assert openvino_backend.precision_hint("FP32") == "f32"
    assert openvino_backend.precision_hint("bf16") == "bf16"  # an explicit choice is kept
