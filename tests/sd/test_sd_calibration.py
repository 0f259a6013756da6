"""Calibration capture: the transformer's calls recorded into calib_data_<task>_transformer.pth, reused only when
model and settings match, captured again when the prompt changes, and corrupt or foreign files refused
without unpickling them."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from modelslim_core.errors import DatasetError
from modelslim_core.runtime.unit import UnitInput
from modelslim_sd.calib_file import read_calib_file, write_calib_file
from modelslim_sd.fingerprint import Fingerprint
from modelslim_sd.wan2_1.adapter import Wan21Adapter
from modelslim_sd.wan2_1.generation import record_transformer_calls
from modelslim_sd.wan2_1.inference_config import WanInferenceConfig
from tests.sd._helpers import STATIC_PRACTICE, practice_config, quantize
from tests.sd.tiny_wan import TINY_MODEL_CONFIG

pytestmark = pytest.mark.usefixtures("cli_env")

CALIB_NAME = "calib_data_t2v-1.3B_transformer.pth"
RECORDED_KWARGS = {"hidden_states", "timestep", "encoder_hidden_states", "attention_kwargs", "return_dict"}


def static_config(dump_dir: Path, **model_config) -> dict:
    config = practice_config(STATIC_PRACTICE, dump_config={"dump_data_dir": str(dump_dir)})
    config["spec"]["multimodal_sd_config"]["model_config"].update(model_config)
    return config


def forbid_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_args, **_kwargs):
        raise AssertionError("the float pipeline ran although the cached calibration data matches")

    monkeypatch.setattr(Wan21Adapter, "capture_calibration", fail)


def test_capture_reuse_and_recapture(tiny_wan: Path, tmp_path: Path, monkeypatch, caplog):
    dump = tmp_path / "dump"
    quantize(tiny_wan, tmp_path / "first", static_config(dump))
    calib = dump / CALIB_NAME
    first = read_calib_file(calib)
    assert len(first.records) == TINY_MODEL_CONFIG["sample_steps"] * 2  # every step x (cond, uncond)
    record = first.records[0]
    assert record.args == () and set(record.kwargs) == RECORDED_KWARGS
    assert record.kwargs["hidden_states"].shape == (1, 16, 2, 4, 4) and record.kwargs["hidden_states"].device.type == "cpu"
    # the two branches of a step share the latents and differ in the text embeddings
    assert torch.equal(first.records[0].kwargs["hidden_states"], first.records[1].kwargs["hidden_states"])
    assert not torch.equal(first.records[0].kwargs["encoder_hidden_states"], first.records[1].kwargs["encoder_hidden_states"])
    assert not (tmp_path / "first" / CALIB_NAME).exists()  # dump_data_dir, not save_path

    with monkeypatch.context() as patch:
        forbid_capture(patch)
        before = calib.read_bytes()
        quantize(tiny_wan, tmp_path / "second", static_config(dump))
        assert calib.read_bytes() == before
    assert (tmp_path / "second" / "quant_model_description_w8a8.json").is_file()

    caplog.clear()
    quantize(tiny_wan, tmp_path / "third", static_config(dump, prompt="a lighthouse in a storm"))
    assert "prompt ('a small robot waters a plant' -> 'a lighthouse in a storm')" in caplog.text
    third = read_calib_file(calib)
    assert third.fingerprint.settings["prompt"] == "a lighthouse in a storm"
    assert not torch.equal(third.records[0].kwargs["encoder_hidden_states"], first.records[0].kwargs["encoder_hidden_states"])


def test_offloaded_and_single_pipeline_capture_record_the_same_calls(tiny_wan: Path):
    settings = {**TINY_MODEL_CONFIG, "prompt": ["a red kite", "a blue boat"], "guidance": 1.0, "sample_steps": 2}
    offloaded = record_transformer_calls(tiny_wan, WanInferenceConfig(**settings, offload_model=True),
                                         torch.device("cpu"), torch.float32)
    whole = record_transformer_calls(tiny_wan, WanInferenceConfig(**settings, offload_model=False),
                                     torch.device("cpu"), torch.float32)
    assert len(offloaded) == len(whole) == 2 * 2  # two prompts x two steps, guidance 1: one branch
    for a, b in zip(offloaded, whole):
        assert a.kwargs.keys() == b.kwargs.keys()
        for key in ("hidden_states", "timestep", "encoder_hidden_states"):
            torch.testing.assert_close(a.kwargs[key], b.kwargs[key])


class _Detonator:
    """Unpickling this would create a marker file: proof that a file was (not) unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("content", ["corrupt", "foreign_pickle", "foreign_tensors", "edited"])
def test_unusable_calibration_files_are_refused(tiny_wan: Path, tmp_path: Path, monkeypatch, content):
    dump = tmp_path / "dump"
    dump.mkdir()
    calib = dump / CALIB_NAME
    marker = tmp_path / "unpickled"
    if content == "corrupt":
        calib.write_bytes(b"\x80\x04not a torch file")
    elif content == "foreign_pickle":
        torch.save({"records": _Detonator(marker)}, calib)
    elif content == "foreign_tensors":  # the reference's layout: a bare list of argument lists
        torch.save([[torch.zeros(1, 16, 2, 4, 4), torch.tensor([999])]], calib)
    else:  # our format, but the stored settings no longer match the stored fingerprint
        record = UnitInput(args=(), kwargs={"hidden_states": torch.zeros(1, 16, 2, 4, 4)})
        write_calib_file(calib, Fingerprint(model="0" * 64, settings={"prompt": "a"}), [record])
        data = torch.load(calib, weights_only=True)
        data["settings"]["prompt"] = "something else"
        torch.save(data, calib)
    before = calib.read_bytes()
    forbid_capture(monkeypatch)
    with pytest.raises(DatasetError, match="it was not used") as error:
        quantize(tiny_wan, tmp_path / "out", static_config(dump))
    assert str(calib) in str(error.value) and "dump_data_dir" in str(error.value)
    assert not marker.exists()
    assert calib.read_bytes() == before
    assert not (tmp_path / "out" / "quant_model_description_w8a8.json").exists()


def test_pickle_payloads_are_never_built(tmp_path: Path):
    calib = tmp_path / CALIB_NAME
    marker = tmp_path / "unpickled"
    calib.write_bytes(pickle.dumps(_Detonator(marker)))
    with pytest.raises(DatasetError, match="cannot be read safely"):
        read_calib_file(calib)
    assert not marker.exists()
