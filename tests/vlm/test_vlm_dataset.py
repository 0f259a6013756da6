"""The VLM calibration-set rules: index files, deprecated forms, name resolution and media decoding."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from modelslim_core.errors import DatasetError
from modelslim_vlm.dataset import load_vlm_dataset, resolve
from modelslim_vlm.dataset.media import decode_sample
from tests.tiny_models import REPO
from tests.vlm.media_files import calib_tool, corrupt, media_set, write_index

DEFAULT = "Describe this image in detail."


@pytest.fixture(autouse=True)
def _fresh_warnings():
    resolve._warned.clear()
    yield
    resolve._warned.clear()


def test_index_jsonl_entries_paths_and_default_text(tmp_path: Path):
    index = media_set(tmp_path / "set")
    samples = load_vlm_dataset(str(index), DEFAULT)
    assert [s.text for s in samples] == ["What is in the picture?", DEFAULT, "What moves?", "Describe everything.", "Just text."]
    assert samples[0].image == (tmp_path / "set" / "a.jpg").resolve()
    assert samples[3].modalities == ("image", "audio", "video")
    assert samples[4].modalities == ()
    assert "line 2" in samples[1].where


def test_directory_with_one_index_and_json_list_form(tmp_path: Path):
    folder = tmp_path / "set"
    calib_tool.write_image(folder.mkdir() or folder / "x.jpg")
    write_index(folder, [{"image": "x.jpg", "text": "one"}, {"text": None}], name="index.json")
    samples = load_vlm_dataset(str(folder), DEFAULT)
    assert [s.text for s in samples] == ["one", DEFAULT] and "entry 2" in samples[1].where
    (folder / "index.json").write_text(json.dumps({"image": "x.jpg"}))  # a single object is one entry
    assert len(load_vlm_dataset(str(folder), DEFAULT)) == 1


def test_absolute_media_path_accepted(tmp_path: Path):
    image = calib_tool.write_image(tmp_path / "abs.png")
    index = write_index(tmp_path / "set", [{"image": str(image)}])
    assert load_vlm_dataset(str(index), DEFAULT)[0].image == image.resolve()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"image": "missing.jpg"}, "line 1: field 'image' names"),
        ({"image": "a.gif"}, "line 1: field 'image' is 'a.gif', which is not a .jpg/.jpeg/.png file"),
        ({"audio": "a.flac"}, "field 'audio' is 'a.flac', which is not a .wav/.mp3 file"),
        ({"video": "a.avi"}, "field 'video' is 'a.avi', which is not a .mp4 file"),
        ({"image": ""}, "field 'image' must be a non-empty file path string"),
        ({"image": 3}, "field 'image' must be a non-empty file path string"),
        ({"text": "   "}, "line 1: field 'text' is empty (only whitespace)"),
        ({"text": ""}, "line 1: field 'text' is empty."),
        ({"text": 5}, "line 1: field 'text' must be a string, got int"),
        ("[1, 2]", "line 1 is a JSON list, not an object"),
        ("{not json", "line 1 is not valid JSON"),
    ],
)
def test_index_entry_errors_name_line_and_field(tmp_path: Path, entry, message: str):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "a.gif").write_bytes(b"GIF89a")
    index = write_index(tmp_path / "set", [entry])
    with pytest.raises(DatasetError) as info:
        load_vlm_dataset(str(index), DEFAULT)
    assert message in str(info.value) and str(index) in str(info.value)


def test_empty_index_is_an_error(tmp_path: Path):
    index = write_index(tmp_path / "set", [])
    with pytest.raises(DatasetError, match="has no entries"):
        load_vlm_dataset(str(index), DEFAULT)


def test_both_index_files_in_a_directory_is_an_error(tmp_path: Path):
    folder = tmp_path / "set"
    write_index(folder, [{"text": "a"}])
    write_index(folder, [{"text": "b"}], name="index.json")
    with pytest.raises(DatasetError, match="both index.json and index.jsonl"):
        load_vlm_dataset(str(folder), DEFAULT)


def test_image_directory_is_deprecated_and_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("b.png", "a.jpg", "c.jpeg"):
        calib_tool.write_image(folder / name)
    (folder / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING):
        first = load_vlm_dataset(str(folder), DEFAULT)
        load_vlm_dataset(str(folder), DEFAULT)
    assert [s.image.name for s in first] == ["a.jpg", "b.png", "c.jpeg"] and {s.text for s in first} == {DEFAULT}
    assert sum("deprecated" in r.getMessage() for r in caplog.records) == 1


def test_image_directory_with_one_prompt_file(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.jpg", "b.png", "c.jpg"):
        calib_tool.write_image(folder / name)
    write_index(folder, [{"image": "b.png", "text": "Custom."}, json.dumps("A text-only prompt."), {"image": "zzz.jpg"},
                         {"image": "c.jpg", "text": ""}], name="prompts.jsonl")
    with caplog.at_level(logging.WARNING):
        samples = load_vlm_dataset(str(folder), DEFAULT)
    assert [(s.image.name if s.image else None, s.text) for s in samples] == [
        ("b.png", "Custom."), (None, "A text-only prompt."), ("c.jpg", DEFAULT), ("a.jpg", DEFAULT)]
    assert any("zzz.jpg" in r.getMessage() for r in caplog.records)  # skipped with a warning, not fatal


def test_image_directory_with_two_json_files_is_an_error(tmp_path: Path):
    folder = tmp_path / "images"
    folder.mkdir()
    calib_tool.write_image(folder / "a.jpg")
    write_index(folder, ["x"], name="one.json")
    write_index(folder, ["y"], name="two.jsonl")
    with pytest.raises(DatasetError, match="holds 2 json/jsonl files"):
        load_vlm_dataset(str(folder), DEFAULT)


def test_directory_without_images_or_index_is_an_error(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no index.json/index.jsonl and no .jpg"):
        load_vlm_dataset(str(tmp_path / "empty"), DEFAULT)


def test_short_names_resolve_under_calib_and_unknown_names_list_candidates(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    samples = load_vlm_dataset("vlm_calib", DEFAULT)
    assert samples[0].image.parent == (REPO / "calib" / "vlm_calib").resolve()
    with pytest.raises(DatasetError, match="'nope' was not found; looked for"):
        load_vlm_dataset("nope", DEFAULT)


def test_relative_path_from_cwd_wins_over_calib(tmp_path: Path, monkeypatch):
    write_index(tmp_path / "vlm_calib", [{"text": "mine"}])
    monkeypatch.chdir(tmp_path)
    assert [s.text for s in load_vlm_dataset("vlm_calib", DEFAULT)] == ["mine"]


def test_shipped_set_matches_its_tool(tmp_path: Path):
    index = calib_tool.write_calib_set(tmp_path / "regen")
    shipped = REPO / "calib" / "vlm_calib" / "index.jsonl"
    assert index.read_text() == shipped.read_text()
    samples = load_vlm_dataset(str(shipped), DEFAULT)
    assert {m for s in samples for m in s.modalities} == {"image", "audio", "video"}


def test_decoding_resamples_audio_and_keeps_every_frame(tmp_path: Path):
    samples = load_vlm_dataset(str(media_set(tmp_path / "set")), DEFAULT)
    decoded = decode_sample(samples[3], sampling_rate=16000)
    assert decoded.image.mode == "RGB" and decoded.image.size == (96, 72)
    assert decoded.audio.dtype == np.float32 and abs(decoded.audio.shape[0] - 8000) <= 1  # 0.5 s at 44.1 -> 16 kHz
    assert decoded.video.frames.shape == (6, 64, 64, 3) and decoded.video.fps == pytest.approx(3.0)
    meta = decoded.video.metadata()
    assert meta.total_num_frames == 6 and meta.duration == pytest.approx(2.0)


@pytest.mark.parametrize(("field", "name", "what"), [("image", "bad.jpg", "an image"), ("audio", "bad.wav", "audio"),
                                                     ("video", "bad.mp4", "video")])
def test_corrupt_media_is_an_error_naming_the_file(tmp_path: Path, field: str, name: str, what: str):
    folder = tmp_path / "set"
    folder.mkdir()
    bad = corrupt(folder / name)
    sample = load_vlm_dataset(str(write_index(folder, [{field: name}])), DEFAULT)[0]
    with pytest.raises(DatasetError) as info:
        decode_sample(sample, sampling_rate=16000)
    assert f"{bad.resolve()} cannot be decoded as {what}" in str(info.value)


def test_mp3_audio_decodes_and_resamples(tmp_path: Path):
    import soundfile

    folder = tmp_path / "set"
    folder.mkdir()
    tone = (0.3 * np.sin(np.arange(22050) / 7.0)).astype(np.float32)
    soundfile.write(str(folder / "tone.mp3"), tone, 22050, format="MP3")
    sample = load_vlm_dataset(str(write_index(folder, [{"audio": "tone.mp3"}])), DEFAULT)[0]
    decoded = decode_sample(sample, sampling_rate=16000)
    assert abs(decoded.audio.shape[0] - 16000) < 1200  # ~1 s at 16 kHz (mp3 framing pads a little)
