"""The real command line, in subprocesses: PaddleX's flags and files, clean stdout, one-line errors."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streampose import create_pipeline
from streampose.config import load_pipeline_config

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "streampose.cli"]
TIMEOUT_S = 120


def run_cli(args: list[str], command: list[str] = CLI) -> subprocess.CompletedProcess:
    """Run the CLI as a user would; the model home comes from the environment (conftest)."""
    return subprocess.run([*command, *args], capture_output=True, text=True, encoding="utf-8", timeout=TIMEOUT_S, cwd=REPO)


def assert_clean_stdout(stdout: str) -> None:
    """Native libraries must not write on stdout (users pipe it)."""
    assert "ReduceMeanCheckIfOneDNNSupport" not in stdout
    assert "Warning" not in stdout and "I0" not in stdout and "W0" not in stdout


@pytest.fixture(scope="module")
def two_images(samples_dir: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    shutil.copyfile(samples_dir / "messi5.jpg", folder / "messi5.jpg")
    shutil.copyfile(samples_dir / "basketball1.png", folder / "basketball1.png")
    return folder


def test_predict_on_a_folder_writes_paddlex_files(two_images: Path, tmp_path: Path, reference_dir: Path) -> None:
    out = tmp_path / "out"
    done = run_cli(["predict", "--input", str(two_images), "--save_path", str(out), "--backend", "paddle"])
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in out.iterdir()) == [
        "basketball1_res.json", "basketball1_res.png", "messi5_res.jpg", "messi5_res.json"]
    for stem in ("basketball1", "messi5"):
        saved = json.loads((out / f"{stem}_res.json").read_text(encoding="utf-8"))
        reference = json.loads((reference_dir / "samples" / "base_128x96" / f"{stem}_res.json").read_text())
        assert list(saved) == ["input_path", "boxes"]
        assert Path(saved["input_path"]).name == reference["input_path"]
        assert len(saved["boxes"]) == len(reference["boxes"])
        assert all(list(box) == ["coordinate", "det_score", "keypoints", "kpt_score"] for box in saved["boxes"])
    assert_clean_stdout(done.stdout)
    # One printed result per image (PaddleX's print), in sorted input order, and nothing else.
    assert done.stdout.count("{'res': {'input_path'") == 2
    assert done.stdout.index("basketball1.png") < done.stdout.index("messi5.jpg")
    assert "Traceback" not in done.stderr


def test_paddlex_flat_flags_work_through_run_py(samples_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    image = samples_dir / "basketball2.png"
    done = run_cli(["--pipeline", "human_keypoint_detection", "--input", str(image), "--save_path", str(out),
                    "--det_threshold", "0.6", "--backend", "paddle", "--quiet"],
                   command=[sys.executable, str(REPO / "run.py")])
    assert done.returncode == 0, done.stderr
    saved = json.loads((out / "basketball2_res.json").read_text(encoding="utf-8"))
    assert saved["input_path"] == str(image)
    assert saved["boxes"] and all(box["det_score"] > 0.6 for box in saved["boxes"])
    assert (out / "basketball2_res.png").is_file()
    assert done.stdout.strip() == ""  # --quiet: nothing on stdout at all
    assert_clean_stdout(done.stdout)


def test_get_pipeline_config_writes_a_yaml_that_loads_back(tmp_path: Path) -> None:
    done = run_cli(["--get_pipeline_config", "human_keypoint_detection", "--save_path", str(tmp_path / "cfg")])
    assert done.returncode == 0, done.stderr
    written = tmp_path / "cfg" / "human_keypoint_detection.yaml"
    assert yaml.safe_load(written.read_text()) == load_pipeline_config("human_keypoint_detection", None)
    pipeline = create_pipeline(str(written), backend="paddle")
    assert pipeline.keypoint_model.model_name == "PP-TinyPose_128x96"
    assert pipeline.detector.model_name == "PicoDet-S_pedestrian_320"


def broken_model_yaml(model_home: Path, folder: Path, *, drop: str | None = None,
                      extra_op: str | None = None) -> Path:
    """A pipeline YAML whose detector ``model_dir`` is a damaged copy of the real model."""
    model = folder / "PicoDet-S_pedestrian_320"
    model.mkdir(parents=True)
    for name in ("inference.json", "inference.pdiparams", "inference.yml"):
        if name != drop:
            shutil.copyfile(model_home / "PicoDet-S_pedestrian_320" / name, model / name)
    if extra_op:
        config = yaml.safe_load((model / "inference.yml").read_text())
        config["Preprocess"].insert(0, {"type": extra_op})
        (model / "inference.yml").write_text(yaml.safe_dump(config))
    pipeline = load_pipeline_config("human_keypoint_detection", None)
    pipeline["SubModules"]["ObjectDetection"]["model_dir"] = str(model)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return path


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/person.jpg"


BAD_CASES = ["missing-file", "not-an-image", "empty-dir", "file-url", "unreachable-url",
             "model-without-params", "unknown-preprocess-op", "threshold-out-of-range"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_fails_with_one_line_and_leaves_nothing(case: str, tmp_path: Path, samples_dir: Path,
                                                          model_home: Path) -> None:
    image = str(samples_dir / "messi5.jpg")
    pipeline = "human_keypoint_detection"
    threshold = []
    if case == "missing-file":
        target, named, cause = str(tmp_path / "nowhere.jpg"), str(tmp_path / "nowhere.jpg"), "no such file"
    elif case == "not-an-image":
        fake = tmp_path / "photo.jpg"
        fake.write_text("plain text, not a JPEG")
        target, named, cause = str(fake), str(fake), "not a readable image"
    elif case == "empty-dir":
        (tmp_path / "empty").mkdir()
        target, named, cause = str(tmp_path / "empty"), str(tmp_path / "empty"), "no image files"
    elif case == "file-url":
        target = named = f"file://{image}"
        cause = "file://"
    elif case == "unreachable-url":
        target = named = closed_port_url()
        cause = "cannot be fetched"
    elif case == "model-without-params":
        pipeline = str(broken_model_yaml(model_home, tmp_path / "model", drop="inference.pdiparams"))
        target, named, cause = image, "PicoDet-S_pedestrian_320", "inference.pdiparams"
    elif case == "unknown-preprocess-op":
        pipeline = str(broken_model_yaml(model_home, tmp_path / "model", extra_op="GridMask"))
        target, named, cause = image, "inference.yml", "GridMask"
    else:
        target, named, cause = image, "det_threshold", "2.0"
        threshold = ["--det_threshold", "2.0"]
    out = tmp_path / "out"
    done = run_cli(["predict", "--input", target, "--pipeline", pipeline, "--save_path", str(out),
                    "--backend", "paddle", *threshold])
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    last_line = done.stderr.strip().splitlines()[-1]
    assert named in last_line and cause in last_line, last_line
    assert last_line.startswith("streampose") and ": error: " in last_line
    assert not out.exists() or not any(out.iterdir())
    assert_clean_stdout(done.stdout)
