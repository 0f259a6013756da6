"""`autoround_quant`: weights quantized with rounding and clipping learned per block (quant/autoround.py).

Per unit: the first strategy whose include/exclude matches a linear owns it (a later matching strategy
is ignored with a warning). During the unit's single calibration forward the processor records the
unit's inputs (the outputs of the already quantized units before it). The tuning target is the FLOAT
model's output of this unit: the processor carries its own float stream of hidden states from unit to
unit (one extra forward of the float unit on the float stream), so a unit's rounding also corrects the
error its quantized predecessors left in its inputs, as AutoRound does (the stream restarts from the
quantized inputs after a unit it does not tune, and after a resume). Afterwards every owned linear becomes a
`SignRoundLinear`, the unit is tuned for `iters` SignSGD iterations from the quantized inputs towards the
float outputs (the pipeline runs without gradients; tuning enables them locally), and each linear is
replaced by a `QuantizedLinear` of its
strategy's export type (W4A8_DYNAMIC, W4A4_DYNAMIC, W8A8_DYNAMIC, W8A16), saved by the usual exporters.
The unit is then run again so the next unit calibrates on quantized outputs. Not data-parallel (the
tuning would need every rank's samples), and it must not sit in a `group`: it runs the unit itself,
which would feed a sibling's calibration a second time.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from pydantic import Field, ValidationError, model_validator
from torch import nn
from torch.utils.hooks import RemovableHandle

from modelslim_core.errors import DatasetError
from modelslim_core.protocol.qconfig import FLOAT_ACT, LinearQConfig, QConfig
from modelslim_core.protocol.validation import StrictModel
from modelslim_core.quant.autoround import SCALE_DTYPES, SignRoundGrid, SignRoundLinear, tune_signround
from modelslim_core.quant.methods import build_dynamic_act, is_static
from modelslim_core.quant.layer_stats import record_weight
from modelslim_core.quant.quantized_linear import LinearQuantizer, QuantizedLinear
from modelslim_core.quant.schemes import AUTO_GROUP_SIZE, BITS
from modelslim_core.runtime.matching import LayerSelection, adapter_aliases
from modelslim_core.runtime.processor import LayerScheme, Processor, ProcessorConfig
from modelslim_core.runtime.unit import LinearSite, Unit, UnitInput

logger = logging.getLogger(__name__)

#: Weight `method` names an autoround strategy accepts (both mean: start from the minmax grid, then tune).
METHODS = ("autoround", "minmax")


class AutoRoundQConfig(StrictModel):
    """act (float or dynamic per_token) + an int8/int4 per_channel or per_group weight tuned by AutoRound.

    weight.ext: `group_size` (required for per_group, refused otherwise), `scale_dtype` (float32 default,
    float16, bfloat16: the precision the learned scales are rounded to)."""

    act: QConfig = FLOAT_ACT
    weight: QConfig

    @model_validator(mode="after")
    def _tunable(self) -> "AutoRoundQConfig":
        weight = self.weight
        if weight.dtype not in BITS or weight.scope not in ("per_channel", "per_group"):
            raise ValueError(f"weight must be int8 or int4, per_channel or per_group; got {weight.scheme}")
        if weight.method not in METHODS:
            raise ValueError(f"weight.method must be one of {', '.join(METHODS)}; got {weight.method!r}")
        unknown = set(weight.ext) - {"group_size", "scale_dtype"}
        if unknown:
            raise ValueError(f"weight ext keys {sorted(unknown)} are not used by autoround; allowed: group_size, scale_dtype")
        if weight.scope != "per_group" and "group_size" in weight.ext:
            raise ValueError("weight.ext.group_size is only allowed with scope per_group")
        if weight.ext.get("group_size") == AUTO_GROUP_SIZE:
            raise ValueError("weight.ext.group_size must be an integer here ('auto' is a linear_quant option)")
        if weight.ext.get("scale_dtype", "float32") not in SCALE_DTYPES:
            raise ValueError(f"weight.ext.scale_dtype must be one of {', '.join(SCALE_DTYPES)}")
        if is_static(self.act):
            raise ValueError(
                "act must be float (weight-only) or dynamic per_token: autoround_quant tunes weights and "
                "calibrates no static activation range"
            )
        try:
            self.linear_qconfig  # the act method and the (act, weight) pair must be exportable
        except ValidationError as exc:
            raise ValueError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
        return self

    @property
    def linear_qconfig(self) -> LinearQConfig:
        """The same scheme as a linear_quant qconfig with a minmax weight: its export type and shape checks."""
        ext = {"group_size": self.weight.ext["group_size"]} if "group_size" in self.weight.ext else {}
        weight = self.weight.model_copy(update={"method": "minmax", "ext": ext})
        return LinearQConfig(act=self.act, weight=weight)

    def grid(self) -> SignRoundGrid:
        return SignRoundGrid(
            bits=BITS[self.weight.dtype],
            symmetric=self.weight.symmetric,
            group_size=self.weight.ext.get("group_size", 0),
            scale_dtype=SCALE_DTYPES[self.weight.ext.get("scale_dtype", "float32")],
        )


class AutoRoundStrategy(LayerSelection):
    qconfig: AutoRoundQConfig


class AutoRoundConfig(ProcessorConfig):
    type: Literal["autoround_quant"] = "autoround_quant"
    iters: int = Field(default=10, gt=0, description="SignSGD iterations per unit, > 0 (step size 1/iters)")
    enable_minmax_tuning: bool = True
    enable_round_tuning: bool = True
    strategies: list[AutoRoundStrategy] = Field(min_length=1)

    def export_types(self) -> frozenset[str]:
        return frozenset(s.qconfig.linear_qconfig.export_type for s in self.strategies)

    def layer_schemes(self) -> list[LayerScheme]:
        schemes = []
        for index, strategy in enumerate(self.strategies):
            linear = strategy.qconfig.linear_qconfig
            schemes.append(LayerScheme(linear.export_type, f"{self.yaml_path}.strategies[{index}]", tuple(strategy.include),
                                       per_group=linear.weight.scope == "per_group",
                                       symmetric_weights=linear.weight.symmetric))
        return schemes

    def linear_selections(self) -> list[tuple[str, LayerSelection]]:
        return [(f"{self.yaml_path}.strategies[{index}]", strategy) for index, strategy in enumerate(self.strategies)]


class _Owned:
    """One linear this processor tunes: its site, strategy and (during tuning) its SignRoundLinear."""

    def __init__(self, site: LinearSite, strategy: AutoRoundStrategy, quantizer: LinearQuantizer):
        self.site, self.strategy, self.quantizer = site, strategy, quantizer
        self.tuned: SignRoundLinear | None = None


class AutoRoundProcessor(Processor):
    config_class = AutoRoundConfig
    config: AutoRoundConfig
    groupable = False

    def __init__(self, config: AutoRoundConfig, context):
        super().__init__(config, context)
        self.filters = [strategy.name_filter(adapter_aliases(context)) for strategy in config.strategies]
        self.quantizers = [
            LinearQuantizer(s.qconfig.linear_qconfig, f"{config.yaml_path}.strategies[{i}].qconfig")
            for i, s in enumerate(config.strategies)
        ]
        self._owned: list[_Owned] = []
        self._inputs: list[UnitInput] = []
        self._targets: list[torch.Tensor] = []
        self._float_stream: list[UnitInput] | None = None  # the float model's inputs of the next unit
        self._hooks: list[RemovableHandle] = []
        self._stale = False

    @classmethod
    def needs_data(cls, config: AutoRoundConfig) -> bool:
        return True

    @classmethod
    def supports_distributed(cls, config: AutoRoundConfig) -> bool:
        """No: tuning a block needs all calibration samples in one process."""
        return False

    def _owner(self, name: str) -> int | None:
        matches = [i for i, name_filter in enumerate(self.filters) if name_filter(name)]
        if len(matches) > 1:
            logger.warning("%s matches autoround strategies %s; the first one (%d) is used.", name, matches, matches[0])
        return matches[0] if matches else None

    def preprocess(self, unit: Unit) -> None:
        self._owned, self._inputs, self._targets, self._stale = [], [], [], False
        for site in self.context.adapter.linear_sites(unit):
            index = self._owner(site.name)
            if index is None:
                continue
            if not isinstance(site.module, nn.Linear):
                logger.warning("%s is matched by autoround_quant but was already replaced by an earlier processor; it is kept.", site.name)
                continue
            self.quantizers[index].check(site.name, site.module)
            self._owned.append(_Owned(site, self.config.strategies[index], self.quantizers[index]))
        if self._owned:
            self._hooks = [
                unit.module.register_forward_pre_hook(self._record_input, with_kwargs=True),
                unit.module.register_forward_hook(self._record_output),
            ]

    def _record_input(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self._inputs.append(UnitInput(args=args, kwargs=kwargs))

    def _record_output(self, module: nn.Module, args: tuple, output: Any) -> None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        self._targets.append(hidden.detach())

    def needs_forward(self, unit: Unit) -> bool:
        return bool(self._owned)

    def postprocess(self, unit: Unit) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if not self._owned:
            self._float_stream = None
            return
        if not self._targets:
            raise DatasetError(
                f"{unit.name} received no calibration data, so autoround_quant cannot tune its linears.",
                "use a calibration dataset with at least one sample.",
            )
        targets = self._float_targets(unit)
        for owned in self._owned:
            owned.tuned = SignRoundLinear(owned.site.module, owned.strategy.qconfig.grid(),
                                          tune_rounding=self.config.enable_round_tuning,
                                          tune_range=self.config.enable_minmax_tuning)
            owned.site.replace(owned.tuned)
        result = tune_signround(self._forward(unit), targets, [o.tuned for o in self._owned],
                                self.config.iters, seed=unit.index)
        logger.info("%s: autoround output MSE %.4g -> %.4g (best at iteration %d of %d).",
                    unit.name, result.initial_loss, result.best_loss, result.best_iteration, self.config.iters)
        for owned in self._owned:
            act = build_dynamic_act(owned.strategy.qconfig.act)
            qweight = owned.tuned.export()
            record_weight(self.context.recorder, owned.site.name, owned.quantizer.export_type, owned.tuned.weight, qweight)
            owned.site.replace(QuantizedLinear(owned.quantizer.export_type, qweight, act, owned.tuned.bias))
        self._owned, self._inputs, self._targets = [], [], []
        self._stale = True

    def _float_targets(self, unit: Unit) -> list[torch.Tensor]:
        """The float unit's outputs on the float stream (the recorded outputs when the stream starts here),
        and the float stream advanced to the next unit."""
        if self._float_stream is None:
            float_inputs, targets = self._inputs, self._targets
        else:
            float_inputs = self._float_stream
            targets = [self._output(unit, item).detach() for item in float_inputs]
        self._float_stream = [self.context.adapter.next_unit_input(out, item) for out, item in zip(targets, float_inputs)]
        return targets

    @staticmethod
    def _output(unit: Unit, item: UnitInput) -> torch.Tensor:
        output = unit.module(*item.args, **item.kwargs)
        return output[0] if isinstance(output, (tuple, list)) else output

    def _forward(self, unit: Unit):
        return lambda index: self._output(unit, self._inputs[index])

    def outputs_stale(self, unit: Unit) -> bool:
        return self._stale

    def state_dict(self) -> dict:
        return {"used_patterns": [f.used_patterns for f in self.filters]}

    def load_state_dict(self, state: dict) -> None:
        for name_filter, used in zip(self.filters, state.get("used_patterns", [])):
            name_filter.mark_used(used)

    def post_run(self) -> None:
        for index, name_filter in enumerate(self.filters):
            name_filter.warn_unmatched(f"autoround_quant strategies[{index}]")
