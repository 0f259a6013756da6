"""Shipped calibration sets of the kinds the reference's configs ask for, and the message for a reference set
we do not ship."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from modelslim_core.calib.reference_sets import REFERENCE_PREFIXES, REFERENCE_SETS, reference_set
from modelslim_core.calib.text import load_texts, resolve_dataset
from modelslim_core.errors import DatasetError
from tests.tiny_models import REPO
from tools import make_text_calib, make_video_calib

CALIB = REPO / "calib"


def shipped(name: str) -> list[str]:
    return [json.loads(line)["inputs_pretokenized"] for line in (CALIB / name).read_text(encoding="utf-8").splitlines()]


def test_cot_set_is_step_by_step_reasoning_and_matches_its_tool():
    texts = load_texts("cot_calib.jsonl")
    assert texts == make_text_calib.cot_samples()  # seeded: identical on every machine
    assert len(texts) == 24 and all("Answer:" in t or "答案：" in t for t in texts)
    assert any("一步一步" in t for t in texts) and all(t.count("\n") >= 10 for t in texts)


def test_long_context_set_holds_long_documents():
    texts = load_texts("long_context_calib.jsonl")
    assert len(texts) == 16 and min(len(t) for t in texts) > 2000 and sum(len(t) > 10000 for t in texts) >= 12
    retrieval = [t for t in texts if t.startswith("Warehouse movement log")]
    assert len(retrieval) == 8
    for text in retrieval:  # the answer is in the log, stated once in the question's record
        question = text.rsplit("Question: ", 1)[1]
        day = question.split("on day ", 1)[1].split(",", 1)[0]
        qty = question.rsplit("Answer: ", 1)[1].split(" ", 1)[0]
        assert f"Day {day}, " in text and f"moved {qty} units" in text


def test_code_set_is_python_that_parses():
    texts = load_texts("code_calib.jsonl")
    assert len(texts) >= 30
    for text in texts:
        task, _, code = text.partition("\n")
        assert task.startswith("# Task: implement the ")
        ast.parse(code)


def test_video_set_decodes_and_matches_its_tool(tmp_path: Path):
    from modelslim_vlm.dataset import load_vlm_dataset
    from modelslim_vlm.dataset.media import decode_sample

    samples = load_vlm_dataset("video_calib", "Describe this video.")
    assert sum(sample.video is not None for sample in samples) == 5
    decoded = [decode_sample(sample, 16000) for sample in samples]
    assert all(item.video.frames.shape == (make_video_calib.FRAMES, 64, 96, 3) for item in decoded)
    regenerated = make_video_calib.write_video_set(tmp_path / "regen")
    assert regenerated.read_text() == (CALIB / "video_calib" / "index.jsonl").read_text()


def test_readme_documents_every_shipped_set_and_its_licence():
    readme = (CALIB / "README.md").read_text(encoding="utf-8")
    for name in ("cot_calib.jsonl", "long_context_calib.jsonl", "code_calib.jsonl", "video_calib/"):
        assert f"`{name}`" in readme
    assert "PSF" in readme and "any use" in readme


@pytest.mark.parametrize("name", [*REFERENCE_SETS, *(f"{prefix}t2v" for prefix in REFERENCE_PREFIXES)])
def test_reference_set_names_explain_the_kind_and_the_way_forward(name):
    with pytest.raises(DatasetError) as error:
        resolve_dataset(name)
    message = str(error.value)
    described = reference_set(name)[1]
    assert f"spec.dataset {name!r} is a calibration set of the reference tool ({described.kind})" in message
    assert f"`dataset: /data/calib/{name}`" in message
    if described.ours:
        assert f"`dataset: {described.ours}`" in message
        assert (CALIB / described.ours).exists()  # the suggested set really ships


def test_a_users_own_copy_of_a_reference_set_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "boolq.jsonl").write_text('{"inputs_pretokenized": "Is the sky blue? Passage: ..."}\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_texts("boolq.jsonl") == ["Is the sky blue? Passage: ..."]


def test_vlm_reference_set_gets_the_same_message():
    from modelslim_vlm.dataset import load_vlm_dataset

    with pytest.raises(DatasetError, match=r"calibImages.*images for VLM calibration.*`dataset: vlm_calib`"):
        load_vlm_dataset("calibImages", "Describe.")
