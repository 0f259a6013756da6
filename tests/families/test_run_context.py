"""One run-context builder for every service: recorder (--debug), config digest and fingerprint alike."""

from __future__ import annotations

from pathlib import Path

import torch

from modelslim_core.models.resolve import create_adapter
from modelslim_core.runtime.context import DeviceSpec
from modelslim_core.service.base import QuantRequest
from modelslim_core.service.run_context import build_run_context


def test_builder_gives_recorder_digest_and_fingerprint(tiny_models, tmp_path: Path):
    model = tiny_models("qwen2")
    adapter = create_adapter("Qwen2-7B", model, False)
    request = QuantRequest(adapter, model, tmp_path / "out", DeviceSpec("cpu"), debug=True, config_digest="abc")
    context = build_run_context(request)
    assert context.recorder.debug_dir == tmp_path / "out" / "debug_info"
    assert context.config_digest == "abc" and context.fingerprint
    assert context.compute_dtype == torch.float32  # CPU computes in float32
    assert build_run_context(request, resumable=False).fingerprint == ""
    other = DeviceSpec("cpu", (0,))
    assert build_run_context(request, other).device is other
    quiet = QuantRequest(adapter, model, tmp_path / "out", DeviceSpec("cpu"))
    assert build_run_context(quiet).recorder.debug_dir is None


def test_every_service_uses_the_builder():
    import inspect

    from modelslim_core.service import modelslim_v1
    from modelslim_sd import service as sd_service
    from modelslim_vlm import service as vlm_service

    for module in (modelslim_v1, vlm_service, sd_service):
        source = inspect.getsource(module)
        assert "build_run_context(" in source and "RunContext(" not in source, module.__name__
