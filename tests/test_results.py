"""Result objects: PaddleX's JSON schema, file names and picture, so PaddleX code keeps working."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streampose.inputs import read_image

BOX_KEYS = ["coordinate", "det_score", "keypoints", "kpt_score"]


@pytest.fixture(scope="module")
def png_result(paddle_pipeline, samples_dir: Path):
    return next(paddle_pipeline.predict(str(samples_dir / "basketball1.png")))


@pytest.fixture(scope="module")
def jpg_result(paddle_pipeline, samples_dir: Path):
    return next(paddle_pipeline.predict(str(samples_dir / "messi5.jpg")))


@pytest.fixture(scope="module")
def array_result(paddle_pipeline, samples_dir: Path):
    return next(paddle_pipeline.predict(read_image(samples_dir / "basketball2.png")))


def test_saved_json_has_paddlexs_keys_in_order_and_types(png_result, tmp_path: Path, reference_dir: Path) -> None:
    saved = json.loads(png_result.save_to_json(tmp_path).read_text(encoding="utf-8"))
    reference = json.loads((reference_dir / "samples" / "base_128x96" / "basketball1_res.json").read_text())
    assert list(saved) == list(reference) == ["input_path", "boxes"]
    assert len(saved["boxes"]) == 2
    for box, reference_box in zip(saved["boxes"], reference["boxes"]):
        assert list(box) == list(reference_box) == BOX_KEYS
        assert len(box["coordinate"]) == 4 and all(isinstance(value, (int, float)) for value in box["coordinate"])
        assert isinstance(box["det_score"], float) and isinstance(box["kpt_score"], float)
        assert len(box["keypoints"]) == 17
        assert all(len(joint) == 3 and all(isinstance(value, float) for value in joint) for joint in box["keypoints"])
        assert box["kpt_score"] == pytest.approx(np.mean([joint[2] for joint in box["keypoints"]]), abs=1e-6)
    assert saved["input_path"] == png_result["input_path"]
    assert "input_img" not in saved


def test_in_memory_types_are_paddlexs(png_result) -> None:
    """Users call ``.tolist()`` on keypoints (PaddleX's serving app does): keep arrays in memory."""
    assert isinstance(png_result["input_img"], np.ndarray) and png_result["input_img"].shape == (480, 640, 3)
    box = png_result["boxes"][0]
    assert isinstance(box["keypoints"], np.ndarray) and box["keypoints"].shape == (17, 3)
    assert box["keypoints"].dtype == np.float32
    assert isinstance(box["kpt_score"], np.floating)
    assert isinstance(box["det_score"], float)
    assert len(box["coordinate"]) == 4


def test_json_to_a_directory_is_stem_res_json_indented_by_four(png_result, tmp_path: Path) -> None:
    target = png_result.save_to_json(tmp_path / "new" / "dir")  # missing parents are created
    assert target == tmp_path / "new" / "dir" / "basketball1_res.json"
    text = target.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=4, ensure_ascii=False)
    assert text.startswith('{\n    "input_path": ')
    assert [path.name for path in target.parent.iterdir()] == ["basketball1_res.json"]  # no temp file left


def test_json_to_a_json_path_is_written_exactly_there(png_result, tmp_path: Path) -> None:
    target = png_result.save_to_json(tmp_path / "chosen.json")
    assert target == tmp_path / "chosen.json"
    assert json.loads(target.read_text(encoding="utf-8")) == png_result.json["res"]


def test_json_property_wraps_the_saved_content_in_res(png_result, tmp_path: Path) -> None:
    saved = json.loads(png_result.save_to_json(tmp_path).read_text(encoding="utf-8"))
    assert list(png_result.json) == ["res"]
    assert png_result.json["res"] == saved
    json.dumps(png_result.json)  # plain types only


def test_image_keeps_the_input_suffix(png_result, jpg_result, tmp_path: Path) -> None:
    png = png_result.save_to_img(tmp_path)
    jpg = jpg_result.save_to_img(tmp_path)
    assert png == tmp_path / "basketball1_res.png"
    assert jpg == tmp_path / "messi5_res.jpg"
    with Image.open(png) as picture:
        assert picture.format == "PNG" and picture.size == (640, 480)
    with Image.open(jpg) as picture:
        assert picture.format == "JPEG"


def test_array_input_shares_a_generated_stem_and_gets_png(array_result, tmp_path: Path) -> None:
    assert array_result["input_path"] is None
    json_path = array_result.save_to_json(tmp_path)
    image_path = array_result.save_to_img(tmp_path)
    stem = json_path.name[: -len("_res.json")]
    assert re.fullmatch(r"\d{10}_\d{4}", stem)
    assert image_path.name == f"{stem}_res.png"
    assert json.loads(json_path.read_text())["input_path"] is None


def test_img_property_is_an_rgb_picture_with_the_skeleton(png_result) -> None:
    picture = png_result.img["res"]
    assert isinstance(picture, Image.Image) and picture.mode == "RGB" and picture.size == (640, 480)
    drawn = np.asarray(picture)
    original_rgb = png_result["input_img"][..., ::-1]
    changed = np.any(drawn != original_rgb, axis=2)
    assert 0.001 < changed.mean() < 0.2  # a skeleton, not an unchanged or a repainted picture
    # Pixels far from everybody are the photo's, in RGB order (a BGR mix-up would change them all).
    assert np.array_equal(drawn[:20, 200:400], original_rgb[:20, 200:400])


def test_print_json_format_is_valid_json_without_the_image(png_result, capsys) -> None:
    png_result.print(json_format=True)
    printed = capsys.readouterr().out
    data = json.loads(printed)
    assert list(data) == ["res"] and list(data["res"]) == ["input_path", "boxes"]
    assert "input_img" not in printed
    png_result.print()
    plain = capsys.readouterr().out
    assert plain.startswith("{'res'") and "input_img" not in plain and "keypoints" in plain


def test_save_all_writes_json_and_image(jpg_result, tmp_path: Path) -> None:
    written = jpg_result.save_all(tmp_path)
    assert sorted(path.name for path in written) == ["messi5_res.jpg", "messi5_res.json"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["messi5_res.jpg", "messi5_res.json"]
