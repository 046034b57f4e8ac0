"""streampose bench-precision: real pose models timed and scored on the shared COCO keypoint sets."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from streampose.bench_precision import (PrecisionBenchSettings, available_precisions, cpu_supports_bf16,
                                        run_precision_bench)
from streampose.models.registry import load_model_files


def paddlex_persons(reference_dir, set_name: str) -> int:
    """Persons PaddleX found on the set (same detector and threshold), from its saved outputs."""
    folder = reference_dir / set_name / "base_128x96"
    return sum(len(json.loads(path.read_text())["boxes"]) for path in folder.glob("*_res.json"))


def test_f32_poses_paddlexs_persons_and_scores_paddlexs_ap(data_dir, reference_dir, model_home):
    settings = PrecisionBenchSettings(data_dir=data_dir, precisions=["f32"], sets=["coco_mini"],
                                      calls=3, rounds=1)
    report = run_precision_bench(settings)
    mini = report["sets"]["coco_mini"]
    assert mini["images"] == 4
    assert mini["persons_detected"] == paddlex_persons(reference_dir, "coco_mini")
    assert mini["paddlex"]["ap"] == pytest.approx(0.600, abs=5e-4)  # the data README's figure
    (f32,) = report["precisions"]
    assert f32["precision"] == "f32"
    assert f32["oks"]["coco_mini"]["ap"] == pytest.approx(mini["paddlex"]["ap"], abs=5e-4)
    assert f32["not_below_paddlex"]
    assert list(f32["ms_per_call"]) == ["1", "4", "8"]
    assert 0 < f32["ms_per_call"]["1"] < f32["ms_per_call"]["8"]  # eight crops are more work than one
    assert f32["ms_per_person"]["8"] == pytest.approx(f32["ms_per_call"]["8"] / 8)


def test_a_model_folder_is_named_by_its_folder_and_compared_with_its_size(data_dir, model_home, tmp_path):
    """--pose-model may be a folder (a user's export): its PaddleX reference is found by size."""
    import shutil  # noqa: PLC0415

    folder = tmp_path / "exported_tinypose_128x96"
    shutil.copytree(model_home / "PP-TinyPose_128x96", folder)
    report = run_precision_bench(PrecisionBenchSettings(data_dir=data_dir, pose_model=str(folder),
                                                        precisions=["f32"], sets=["coco_mini"],
                                                        batch_sizes=(1,), calls=1, rounds=1))
    assert report["pose_model"] == "exported_tinypose_128x96"
    assert report["sets"]["coco_mini"]["paddlex"] is not None
    assert report["precisions"][0]["not_below_paddlex"]


def test_int8_is_offered_only_once_a_quantized_copy_exists(tmp_path, monkeypatch, model_home):
    monkeypatch.setenv("STREAMPOSE_CACHE_HOME", str(tmp_path))
    expected = ["f32", "bf16"] if cpu_supports_bf16() else ["f32"]
    assert available_precisions(load_model_files("PP-TinyPose_128x96", None)) == expected


def run_cli(tmp_path, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "streampose.cli", "bench-precision", "--json", str(tmp_path / "r.json"), *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)


def test_cli_int8_without_a_quantized_copy_says_what_to_run(tmp_path, data_dir, model_home):
    env = {**os.environ, "STREAMPOSE_CACHE_HOME": str(tmp_path / "cache")}
    done = run_cli(tmp_path, "--data", str(data_dir), "--precision", "int8", env=env)
    assert done.returncode != 0
    assert "run `streampose models quantize --model PP-TinyPose_128x96` first" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("flags, message", [
    (["--data", "no-such-folder"], "data no-such-folder: no such folder"),
    (["--precision", "f16"], "invalid choice: 'f16'"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, flags, message):
    done = run_cli(tmp_path, *flags)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
