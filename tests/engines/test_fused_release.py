"""The load-time refusal of quantizing a linear the release stores fused (formats/fused_release.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from modelslim_core import registry
from modelslim_core.errors import ConfigError
from modelslim_core.formats.fused_release import check_fused_release_linears
from modelslim_core.runtime.processor import LayerScheme

FUSED = ["model.language_model.layers.1.mlp.experts.0.gate_proj", "model.language_model.layers.1.mlp.experts.0.down_proj"]


class Adapter:
    family = "stacked"

    def release_fused_linears(self) -> list[str]:
        return FUSED


def spec(*schemes: LayerScheme, saver: str = "ascendv1_saver") -> SimpleNamespace:
    item = SimpleNamespace(layer_schemes=lambda: list(schemes))
    return SimpleNamespace(process=[item], save=[SimpleNamespace(type=saver)])


def test_a_quantizing_item_reaching_a_fused_linear_is_refused_with_its_path():
    scheme = LayerScheme("W8A8_DYNAMIC", "spec.process[0]", include=("*mlp*",))
    with pytest.raises(ConfigError, match=r"cfg.yaml: spec.process\[0\] quantizes model.language_model.layers.1.mlp"
                                          r".experts.0.gate_proj as W8A8_DYNAMIC .*stacked release") as refused:
        check_fused_release_linears(spec(scheme), Adapter(), "cfg.yaml")
    assert "exclude" in refused.value.hint


@pytest.mark.parametrize("scheme", [
    LayerScheme("W8A8_DYNAMIC", "p", include=("*",), exclude=("*mlp.experts.*",)),  # excluded
    LayerScheme("W8A8", "p", include=("*self_attn*",)),  # does not reach the experts
    LayerScheme("FLOAT", "p", include=("*",)),  # written float anyway
])
def test_items_that_leave_the_fused_linears_float_pass(scheme):
    check_fused_release_linears(spec(scheme), Adapter(), "cfg.yaml")


def test_families_without_fused_linears_and_plugin_savers_pass(monkeypatch):
    scheme = LayerScheme("W8A8_DYNAMIC", "p", include=("*",))
    check_fused_release_linears(spec(scheme), SimpleNamespace(family="plain"), "cfg.yaml")
    real_load = registry.load
    monkeypatch.setattr(registry, "load", lambda group, name: SimpleNamespace(writes_release_layout=False)
                        if name == "plugin_saver" else real_load(group, name))
    check_fused_release_linears(spec(scheme, saver="plugin_saver"), Adapter(), "cfg.yaml")
