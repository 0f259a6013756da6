"""docs/model-families.md's family x quant type table matches the shipped practices: every practice of a listed
family has a row, every row names a practice that exists, is for that quant type, and verifies the listed names."""

from __future__ import annotations

import yaml

from tests.tiny_models import REPO

DOC = REPO / "docs" / "model-families.md"


def _rows() -> list[list[str]]:
    text = DOC.read_text(encoding="utf-8")
    table = text.split("<!-- family-table -->")[1].split("<!-- /family-table -->")[0]
    lines = [line for line in table.strip().splitlines()[2:] if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_table_rows_are_the_shipped_practices():
    rows = _rows()
    families = {row[0] for row in rows}
    listed = {row[3] for row in rows}
    shipped = {f"{family}/{path.name}" for family in families for path in (REPO / "practices" / family).glob("*.yaml")}
    assert listed == shipped


def test_each_row_states_its_quant_type_names_and_figures():
    for family, names, quant_type, practice, error, engine in _rows():
        assert practice.startswith(f"{family}/") and practice.endswith(f"-{quant_type}.yaml"), practice
        data = yaml.safe_load((REPO / "practices" / practice).read_text(encoding="utf-8"))
        verified = set(data["metadata"]["verified_model_types"])
        assert {name.strip() for name in names.split(",")} <= verified, practice
        assert 0 < float(error) < 0.1, (practice, error)
        # every row is loaded by vLLM-Ascend, or says which engine it targets instead (a numbered note)
        assert engine.startswith(("loads", "38B loads", "MindIE LLM only (")), (practice, engine)
