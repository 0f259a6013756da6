"""The example in docs/convert.md is a valid config (users copy it)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from modelslim_core.protocol.config import parse_quant_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "convert.md"


def test_documented_example_parses():
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "docs/convert.md shows a YAML example"
    for block in blocks:
        config = parse_quant_config(yaml.safe_load(block), "docs/convert.md")
        assert config.apiversion == "modelslim_convert"
        assert [rule.target for rule in config.spec.linears] == ["W8A8_MXFP8", "FLOAT"]
        assert config.spec.output.type == "ascendv1"
