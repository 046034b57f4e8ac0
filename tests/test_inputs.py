"""What ``predict`` accepts: arrays, files, folders, URLs and lists, and how bad inputs fail."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from streampose.errors import InputError
from streampose.inputs import collect_inputs, read_image


@pytest.fixture(scope="module")
def messi(samples_dir: Path) -> np.ndarray:
    return read_image(samples_dir / "messi5.jpg")


@pytest.fixture(scope="module")
def messi_from_path(paddle_pipeline, samples_dir: Path):
    return next(paddle_pipeline.predict(str(samples_dir / "messi5.jpg")))


def keypoints_of(result) -> np.ndarray:
    return np.stack([box["keypoints"] for box in result["boxes"]])


def test_array_input_is_bgr_and_has_no_path(paddle_pipeline, messi, messi_from_path) -> None:
    result = next(paddle_pipeline.predict(messi))
    assert result["input_path"] is None
    np.testing.assert_array_equal(keypoints_of(result), keypoints_of(messi_from_path))
    swapped = next(paddle_pipeline.predict(np.ascontiguousarray(messi[..., ::-1])))
    assert not np.array_equal(keypoints_of(swapped), keypoints_of(messi_from_path))


def test_grayscale_array_becomes_three_channels(paddle_pipeline, samples_dir: Path) -> None:
    gray = cv2.cvtColor(read_image(samples_dir / "basketball1.png"), cv2.COLOR_BGR2GRAY)
    assert gray.ndim == 2
    result = next(paddle_pipeline.predict(gray))
    assert result["input_img"].shape == (480, 640, 3)
    assert len(result["boxes"]) >= 1


def test_list_mixing_paths_and_arrays_keeps_its_order(paddle_pipeline, samples_dir: Path, messi) -> None:
    first, last = str(samples_dir / "basketball1.png"), str(samples_dir / "basketball2.png")
    results = list(paddle_pipeline.predict([first, messi, last]))
    assert [result["input_path"] for result in results] == [first, None, last]
    assert [len(result["boxes"]) for result in results] == [2, 1, 2]


def test_directory_is_walked_recursively_and_sorted(samples_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "b" / "deeper").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    shutil.copyfile(samples_dir / "messi5.jpg", tmp_path / "b" / "deeper" / "z.jpg")
    shutil.copyfile(samples_dir / "basketball1.png", tmp_path / "a" / "y.png")
    shutil.copyfile(samples_dir / "basketball2.png", tmp_path / "c.PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    items = collect_inputs(str(tmp_path), tmp_path / "cache")
    assert [Path(item.input_path).relative_to(tmp_path).as_posix() for item in items] == [
        "a/y.png", "b/deeper/z.jpg", "c.PNG"]


def test_empty_directory_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "only-text").mkdir()
    (tmp_path / "only-text" / "readme.txt").write_text("no images here")
    for folder in (tmp_path / "only-text", tmp_path / "empty"):
        folder.mkdir(exist_ok=True)
        with pytest.raises(InputError, match="no image files") as caught:
            collect_inputs(str(folder), tmp_path / "cache")
        assert str(folder) in str(caught.value)


def test_text_file_named_jpg_is_an_input_error_naming_it(paddle_pipeline, tmp_path: Path) -> None:
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is not a JPEG")
    with pytest.raises(InputError) as caught:
        list(paddle_pipeline.predict(str(fake)))
    message = str(caught.value)
    assert str(fake) in message and "not a readable image" in message and "\n" not in message


def test_missing_file_is_an_input_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.png"
    with pytest.raises(InputError, match="no such file") as caught:
        collect_inputs([str(missing)], tmp_path / "cache")
    assert str(missing) in str(caught.value)


@pytest.mark.parametrize("url", ["file:///etc/hostname", "ftp://127.0.0.1/image.jpg"])
def test_non_http_urls_are_input_errors(url: str, tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        collect_inputs(url, tmp_path / "cache")
    assert url in str(caught.value)


def test_http_url_is_downloaded_and_its_path_reported(paddle_pipeline, samples_http, samples_dir: Path,
                                                      tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STREAMPOSE_CACHE_HOME", str(tmp_path / "cache"))
    result = next(paddle_pipeline.predict(f"{samples_http}/basketball1.png"))
    downloaded = Path(result["input_path"])
    assert downloaded == tmp_path / "cache" / "predict_input" / "basketball1.png"
    assert downloaded.read_bytes() == (samples_dir / "basketball1.png").read_bytes()
    local = next(paddle_pipeline.predict(str(samples_dir / "basketball1.png")))
    np.testing.assert_array_equal(keypoints_of(result), keypoints_of(local))


def test_http_404_is_an_input_error(samples_http, tmp_path: Path) -> None:
    url = f"{samples_http}/missing.png"
    with pytest.raises(InputError, match="404") as caught:
        collect_inputs(url, tmp_path / "cache")
    assert url in str(caught.value)
    assert not (tmp_path / "cache" / "predict_input" / "missing.png").exists()


def test_unreachable_url_fails_quickly(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/image.jpg"
    started = time.monotonic()
    with pytest.raises(InputError, match="cannot be fetched") as caught:
        collect_inputs(url, tmp_path / "cache")
    assert time.monotonic() - started < 5
    assert url in str(caught.value) and "\n" not in str(caught.value)
