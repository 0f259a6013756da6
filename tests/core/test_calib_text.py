"""Text calibration datasets: name resolution and strict parsing."""

import json

import pytest

from modelslim_core.calib.text import load_texts, resolve_dataset
from modelslim_core.errors import DatasetError


def test_short_name_resolves_to_the_shipped_set():
    path = resolve_dataset("mix_calib.jsonl")
    assert path.name == "mix_calib.jsonl" and path.parent.name == "calib"
    texts = load_texts("mix_calib.jsonl")
    assert len(texts) >= 48
    assert any("\u4e00" <= ch <= "\u9fff" for text in texts for ch in text)  # Chinese present


def test_jsonl_fields_blank_lines_and_json_arrays(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"inputs_pretokenized": "one"}\n\n{"text": "two"}\n{"prompt": "three", "id": 3}\n')
    assert load_texts(str(jsonl)) == ["one", "two", "three"]
    array = tmp_path / "b.json"
    array.write_text(json.dumps(["x", {"text": "y"}]))
    assert load_texts(str(array)) == ["x", "y"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"inputs_pretokenized": "ok"}\n{broken\n', "line 2 is not valid JSON"),
        ('{"label": 1}\n', "line 1 has none of the fields"),
        ('{"text": "   "}\n', "empty or non-string text"),
        ("\n\n", "holds no samples"),
    ],
)
def test_bad_datasets_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_texts(str(path))


def test_unknown_dataset_lists_the_available_ones():
    with pytest.raises(DatasetError) as info:
        load_texts("no_such_set.jsonl")
    assert "mix_calib.jsonl" in info.value.hint
