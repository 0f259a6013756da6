"""The reference-style config collection (configs/): each runs unchanged, runs with the warnings it states,
or is refused with a message naming the field and the fix."""

from __future__ import annotations

import pytest

from tests.migration.reference_check import check, config_paths, expectation_of


@pytest.mark.parametrize("path", config_paths(), ids=lambda path: path.stem)
def test_reference_style_config(path):
    expected = expectation_of(path)
    outcome = check(path)
    assert outcome.status == expected.status, outcome.message
    for fragment in expected.fragments:
        assert fragment in outcome.message, (fragment, outcome.message)
    for fragment in expected.log:
        assert fragment in outcome.log, (fragment, outcome.log)
    assert expected.export <= outcome.export, outcome.export


def test_each_ignored_key_is_warned_once():
    outcome = check(next(p for p in config_paths() if p.stem == "ssz_group_size"))
    assert outcome.message.count("ext.group_size") == 1
    assert "ext.step" not in outcome.message  # read by ssz: no warning


def test_refusals_have_no_traceback_and_name_a_fix():
    for path in config_paths():
        if expectation_of(path).status == "refused":
            message = check(path).message
            assert "Traceback" not in message
            assert "Hint:" in message, (path.name, message)


def test_shipped_practices_parse_without_warnings(caplog):
    """Every practice we ship is read without a warning (an unused anchor holder or key would warn each user)."""
    import logging
    from pathlib import Path

    from modelslim_core.protocol.config import parse_quant_config
    from modelslim_core.protocol.yaml_io import load_yaml_file

    practices = sorted((Path(__file__).resolve().parents[2] / "practices").rglob("*.yaml"))
    assert practices
    with caplog.at_level(logging.WARNING, logger="modelslim_core"):
        for path in practices:
            parse_quant_config(load_yaml_file(path), str(path))
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
