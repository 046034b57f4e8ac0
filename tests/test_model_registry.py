"""Where a model name leads: explicit folder, model home, our cache, PaddleX's cache, then download."""

from __future__ import annotations

import functools
import os
import shutil
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from streampose.errors import ModelError
from streampose.models.registry import (
    OFFICIAL_MODELS,
    cache_dir,
    load_model_files,
    model_home,
    paddlex_models_dir,
    resolve_model_dir,
)

MODEL = "PP-TinyPose_128x96"
MODEL_FILES = ("inference.json", "inference.pdiparams", "inference.yml")
SHARED_MODELS = Path(
    os.environ.get("STREAMPOSE_MODEL_HOME") or Path(__file__).resolve().parents[1].parent / "shared" / "models"
)


@pytest.fixture(scope="module")
def real_model() -> Path:
    source = SHARED_MODELS / MODEL
    if not (source / "inference.pdiparams").is_file():
        pytest.skip(f"real model {source} not available (set STREAMPOSE_MODEL_HOME)")
    return source


def _place_model(real_model: Path, base: Path) -> Path:
    """A real, loadable copy of the model under ``base/<MODEL>``."""
    folder = base / MODEL
    folder.mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copyfile(real_model / name, folder / name)
    return folder


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Separate, empty bases for every place the registry looks; nothing from the real machine leaks in."""
    bases = {name: tmp_path / name for name in ("home", "paddlex", "explicit")}
    bases["cache"] = tmp_path / "cache_root" / "models"
    for base in bases.values():
        base.mkdir(parents=True)
    monkeypatch.setenv("STREAMPOSE_MODEL_HOME", str(bases["home"]))
    monkeypatch.setenv("STREAMPOSE_CACHE_HOME", str(bases["cache"].parent))
    monkeypatch.setenv("PADDLE_PDX_CACHE_HOME", str(bases["paddlex"]))
    monkeypatch.setenv("STREAMPOSE_MODEL_URL_BASE", "http://127.0.0.1:9")  # discard port: never a real download
    return bases


def test_settings_come_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("STREAMPOSE_MODEL_HOME", "STREAMPOSE_CACHE_HOME", "PADDLE_PDX_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    assert model_home() is None
    assert cache_dir() == tmp_path / ".cache" / "streampose" / "models"
    assert paddlex_models_dir() == tmp_path / ".paddlex" / "official_models"

    monkeypatch.setenv("STREAMPOSE_MODEL_HOME", "~/models")
    monkeypatch.setenv("STREAMPOSE_CACHE_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("PADDLE_PDX_CACHE_HOME", str(tmp_path / "pdx"))
    assert model_home() == tmp_path / "models"
    assert cache_dir() == tmp_path / "c" / "models"
    assert paddlex_models_dir() == tmp_path / "pdx" / "official_models"


def test_explicit_folder_wins_over_everything(real_model, places) -> None:
    for base in ("home", "cache", "paddlex"):
        _place_model(real_model, places[base])
    explicit = _place_model(real_model, places["explicit"])
    assert resolve_model_dir(MODEL, explicit) == explicit
    assert resolve_model_dir(None, str(explicit)) == explicit


def test_model_home_beats_cache_and_paddlex(real_model, places) -> None:
    for base in ("home", "cache", "paddlex"):
        _place_model(real_model, places[base])
    assert resolve_model_dir(MODEL, None) == places["home"] / MODEL


def test_cache_beats_paddlex_when_home_lacks_the_model(real_model, places) -> None:
    _place_model(real_model, places["cache"])
    _place_model(real_model, places["paddlex"])
    assert resolve_model_dir(MODEL, None) == places["cache"] / MODEL


def test_paddlex_cache_is_reused(real_model, places) -> None:
    folder = _place_model(real_model, places["paddlex"] / "official_models")
    assert resolve_model_dir(MODEL, None) == folder
    files = load_model_files(MODEL, None)
    assert files.graph == folder / "inference.json"
    assert files.params == folder / "inference.pdiparams"
    assert files.config == folder / "inference.yml"


def test_missing_explicit_folder_names_it(places) -> None:
    missing = places["explicit"] / "not_there"
    with pytest.raises(ModelError, match=f"^model folder {missing}: does not exist$"):
        resolve_model_dir(MODEL, missing)


def test_explicit_file_is_not_a_folder(places) -> None:
    stray = places["explicit"] / "model.tar"
    stray.write_bytes(b"x")
    with pytest.raises(ModelError, match="is not a directory"):
        resolve_model_dir(None, stray)


def test_broken_folder_in_model_home_is_reported_not_skipped(real_model, places) -> None:
    broken = places["home"] / MODEL
    broken.mkdir()
    shutil.copyfile(real_model / "inference.json", broken / "inference.json")
    _place_model(real_model, places["cache"])
    with pytest.raises(ModelError, match=f"model folder {broken}: inference.json has no inference.pdiparams"):
        load_model_files(MODEL, None)


def test_unknown_name_lists_where_it_looked(places) -> None:
    with pytest.raises(ModelError) as failure:
        resolve_model_dir("MyPose", None)
    message = str(failure.value)
    for base in ("home", "cache"):
        assert str(places[base] / "MyPose") in message
    assert str(places["paddlex"] / "official_models" / "MyPose") in message
    assert "not an official download" in message
    assert "--model_dir or STREAMPOSE_MODEL_HOME=<folder holding MyPose/>" in message
    assert "\n" not in message


def test_official_name_without_download_permission(places) -> None:
    with pytest.raises(ModelError, match="downloads are off"):
        resolve_model_dir("PP-YOLOE-S_human", None, allow_download=False)
    assert list(places["cache"].iterdir()) == []


def test_no_name_and_no_folder(places) -> None:
    with pytest.raises(ModelError, match="no model given"):
        resolve_model_dir(None, None)


def test_path_as_name_is_refused(places) -> None:
    with pytest.raises(ModelError, match="not a plain name"):
        resolve_model_dir("../PP-TinyPose_128x96", None)


def test_official_names_are_the_pipeline_models() -> None:
    assert set(OFFICIAL_MODELS) == {"PP-TinyPose_128x96", "PP-TinyPose_256x192", "PP-YOLOE-S_human", "PP-YOLOE-L_human"}


@pytest.fixture
def mirror(real_model: Path, tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A plain static HTTP mirror holding the real model's archive; yields (base URL, requested paths)."""
    root = tmp_path / "mirror"
    root.mkdir()
    with tarfile.open(root / f"{MODEL}_infer.tar", "w") as tar:
        for name in MODEL_FILES:
            tar.add(real_model / name, arcname=f"{MODEL}_infer/{name}")
    requested: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            super().do_GET()

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requested
    httpd.shutdown()
    httpd.server_close()


def test_official_model_missing_everywhere_is_downloaded_once(real_model, places, mirror, monkeypatch) -> None:
    base_url, requested = mirror
    monkeypatch.setenv("STREAMPOSE_MODEL_URL_BASE", base_url)

    files = load_model_files(MODEL, None)

    assert files.model_dir == places["cache"] / MODEL
    assert (files.params.read_bytes()) == (real_model / "inference.pdiparams").read_bytes()
    assert load_model_files(MODEL, None).model_dir == places["cache"] / MODEL
    assert requested == [f"/{MODEL}_infer.tar"]
