"""`linear_quant`: quantize the weights (and activations) of matching linear layers.

The first `linear_quant` that matches a layer wins; a later one that also matches is skipped with a
warning (two quantization settings for one layer is always a config mistake). Layers whose scheme is
data-free (weight-only or dynamic activations with minmax/ssz weights) are quantized in `preprocess`,
before any forward. Static activation ranges and GPTQ Hessians are collected during the unit's single
calibration forward and turned into quantized layers in `postprocess`; because GPTQ's calibration forward
ran with float weights, the unit is then run once more so the next unit calibrates on quantized outputs.

Data-parallel: each data-free weight is quantized by one rank (round robin over the unit's layers, starting
at a rank that moves with the unit index) and broadcast, so every rank holds the same containers while
the work is split.
"""

from __future__ import annotations

import logging
from typing import Literal

from torch import nn

from modelslim_core.errors import ConfigError, DatasetError
from modelslim_core.models.moe import routes_tokens
from modelslim_core.protocol.qconfig import LinearQConfig
from modelslim_core.quant.act_outliers import ADVICE as OUTLIER_ADVICE
from modelslim_core.quant.act_outliers import REPORT_SECTION as OUTLIER_SECTION
from modelslim_core.quant.act_outliers import find_outliers
from modelslim_core.quant.activations import StaticIntAct
from modelslim_core.quant.gptq import GramCache
from modelslim_core.quant.layer_stats import WeightError, record_activation, record_weight
from modelslim_core.quant.minmax import MinMaxObserver
from modelslim_core.quant.quantized_linear import CalibratingLinear, LinearQuantizer, solve_shared_hessians
from modelslim_core.quant.schemes import AUTO_GROUP_SIZES
from modelslim_core.runtime.distributed import compute_once, is_distributed
from modelslim_core.runtime.matching import LayerSelection, TracksPatternUse, adapter_aliases
from modelslim_core.runtime.processor import LayerScheme, Processor, ProcessorConfig
from modelslim_core.runtime.unit import LinearSite, Unit

logger = logging.getLogger(__name__)

#: Weight methods that need no calibration data: one data-parallel rank computes each weight and broadcasts it.
DATA_FREE_WEIGHT_METHODS = ("minmax", "ssz")


class LinearQuantConfig(ProcessorConfig, LayerSelection):
    type: Literal["linear_quant"] = "linear_quant"
    qconfig: LinearQConfig

    def export_types(self) -> frozenset[str]:
        return frozenset({self.qconfig.export_type})

    def per_group_export_types(self) -> frozenset[str]:
        return self.export_types() if self.qconfig.weight.scope == "per_group" else frozenset()

    def layer_schemes(self) -> list[LayerScheme]:
        weight = self.qconfig.weight
        return [LayerScheme(self.qconfig.export_type, self.yaml_path, tuple(self.include), tuple(self.exclude or ()),
                            per_group=weight.scope == "per_group", symmetric_weights=weight.symmetric)]

    def linear_selections(self) -> list[tuple[str, LayerSelection]]:
        return [(self.yaml_path, self)]


class LinearQuantProcessor(TracksPatternUse, Processor):
    config_class = LinearQuantConfig
    config: LinearQuantConfig

    def __init__(self, config: LinearQuantConfig, context):
        super().__init__(config, context)
        self.filter = config.name_filter(adapter_aliases(context))
        self.quantizer = LinearQuantizer(config.qconfig, f"{config.yaml_path}.qconfig")
        self._calibrating: list[tuple[LinearSite, CalibratingLinear]] = []
        self._stale = False
        self._grams = GramCache()
        #: Calibrated static activation step of every layer so far (for the outlier check at the end of the run).
        self._static_steps: dict[str, float] = {}

    @classmethod
    def needs_data(cls, config: LinearQuantConfig) -> bool:
        return LinearQuantizer(config.qconfig).needs_data

    @classmethod
    def supports_distributed(cls, config: LinearQuantConfig) -> bool:
        """Data-free weight methods and minmax activation ranges (all-reduced); not GPTQ or histogram."""
        return config.qconfig.weight.method in DATA_FREE_WEIGHT_METHODS and config.qconfig.act.method in ("none", "minmax")

    @classmethod
    def selection_is_local(cls, config: LinearQuantConfig) -> bool:
        """Each selected linear is quantized on its own, except that `group_size: auto` is chosen over every
        selected linear of the model (pre_run), so any pattern may change every unit."""
        return not LinearQuantizer(config.qconfig).weight.adaptive_group_size

    @classmethod
    def handles_pieces(cls, config: LinearQuantConfig) -> bool:
        """Data-free quantization treats every linear on its own, so it can stream a layer linear by linear."""
        return not cls.needs_data(config)

    @classmethod
    def handles_stored_weights(cls, config: LinearQuantConfig) -> bool:
        """Weight quantizers and statistics upcast what they read; nothing is written back into a weight."""
        return True

    @classmethod
    def handles_calibrated_pieces(cls, config: LinearQuantConfig) -> bool:
        """Every linear is calibrated on its own inputs (GPTQ's shared Hessians join linears of one expert or one
        attention block, which stay in one piece)."""
        return True

    def pre_run(self, model: nn.Module) -> None:
        if self.quantizer.weight.adaptive_group_size:
            self._resolve_group_size(model)

    def _resolve_group_size(self, model: nn.Module) -> None:
        """`ext.group_size: auto`: one group size for the whole run, chosen from every matched linear's input
        dim before any work, and said in the log (the checkpoint records one group size per scheme)."""
        adapter = self.context.adapter
        dims = {site.module.in_features for unit in adapter.units(model) for site in adapter.linear_sites(unit)
                if isinstance(site.module, nn.Linear) and self.filter(site.name)}
        chosen = self.quantizer.weight.resolve_group_size(dims)
        where = f"{self.config.yaml_path}.qconfig.weight.ext.group_size"
        if chosen is None:
            raise ConfigError(
                f"{where} is auto, but none of {', '.join(map(str, AUTO_GROUP_SIZES))} divides every input dimension "
                f"of the layers it quantizes ({', '.join(map(str, sorted(dims)))}).",
                "set an integer group_size and exclude the layers it does not divide, or use scope per_channel.",
            )
        logger.info("%s: auto -> %d, the largest of %s dividing every quantized layer's input dimension (%s).",
                    where, chosen, "/".join(map(str, AUTO_GROUP_SIZES)), ", ".join(map(str, sorted(dims))))

    def _selected_sites(self, unit: Unit) -> list[LinearSite]:
        selected = []
        for site in self.context.adapter.linear_sites(unit):
            if not self.filter(site.name):
                continue
            if not isinstance(site.module, nn.Linear):
                logger.warning(
                    "%s is matched by linear_quant (%s) but was already quantized by an earlier processor; "
                    "the earlier setting is kept.",
                    site.name,
                    self.quantizer.export_type,
                )
                continue
            self.quantizer.check(site.name, site.module)
            selected.append(site)
        return selected

    def _data_free_weights(self, unit: Unit, sites: list[LinearSite]) -> list[tuple[nn.Module, WeightError] | None]:
        """Each site's weight container and its weight error when the weight method is data-free (one rank
        computes each), else None."""
        if self.quantizer.weight.needs_data:
            return [None] * len(sites)
        to_cpu = is_distributed()  # results travel pickled; each rank moves them back to its own device
        debug = self.context.recorder.debug_enabled

        def compute(index: int) -> tuple[nn.Module, WeightError]:
            qweight, measured = self.quantizer.quantize_weight_measured(sites[index].name, sites[index].module, debug)
            return (qweight.cpu() if to_cpu else qweight), measured

        weights = compute_once(len(sites), compute, first_owner=unit.index)
        return [(qweight.to(site.module.weight.device), measured)
                for (qweight, measured), site in zip(weights, sites, strict=True)]

    def preprocess(self, unit: Unit) -> None:
        self._calibrating = []
        self._stale = False
        recorder = self.context.recorder
        export_type = self.quantizer.export_type
        sites = self._selected_sites(unit)
        for site, data_free in zip(sites, self._data_free_weights(unit, sites), strict=True):
            qweight, measured = data_free or (None, None)
            if measured is not None:  # data-free weight: its error is known now
                measured.record(recorder, site.name, export_type, tuple(site.module.weight.shape))
            if self.quantizer.needs_data:
                calibrating = self.quantizer.calibrating(site.name, site.module, self._grams, qweight)
                site.replace(calibrating)
                self._calibrating.append((site, calibrating))
            else:
                site.replace(self.quantizer.quantize(site.name, site.module, qweight))

    def needs_forward(self, unit: Unit) -> bool:
        return bool(self._calibrating)

    def forward_needs_only(self, unit: Unit) -> list[nn.Module]:
        """The calibrating linears: on the last unit, a forward whose outputs nobody uses stops once the last
        of them has recorded (e.g. after o_proj when only attention is static: the dynamic MLP is skipped).
        Not where tokens are routed to experts: an expert without tokens in a sample is never called."""
        if routes_tokens(unit.module):
            return []
        return [calibrating for _, calibrating in self._calibrating]

    def postprocess(self, unit: Unit) -> None:
        for _, calibrating in self._calibrating:
            if isinstance(calibrating.observer, MinMaxObserver):
                calibrating.observer.synchronize()  # a collective: every rank, same order
        self._check_calibrated()
        together = [calibrating for _, calibrating in self._calibrating]
        solved = {id(c): q for c, q in zip(together, solve_shared_hessians(together), strict=True) if q is not None}
        for site, calibrating in self._calibrating:
            quantized = calibrating.finish(solved.get(id(calibrating)))
            if calibrating.qweight is None:  # GPTQ: quantized only now, from the float weight it kept
                record_weight(self.context.recorder, site.name, self.quantizer.export_type, calibrating.weight,
                              quantized.qweight)
            record_activation(self.context.recorder, site.name, calibrating.tokens, quantized.act)
            if isinstance(quantized.act, StaticIntAct):
                self._static_steps[site.name] = float(quantized.act.scale.max())
            site.replace(quantized)
        self._grams.clear()
        self._stale = bool(self._calibrating) and self.quantizer.weight.needs_data
        self._calibrating = []

    def _check_calibrated(self) -> None:
        for site, calibrating in self._calibrating:
            if not calibrating.calibrated:
                raise DatasetError(
                    f"{site.name} received no calibration data, so its {self.quantizer.export_type} parameters "
                    "(static activation range or GPTQ Hessian) cannot be computed.",
                    "use calibration data that reaches it, or a data-free scheme for it (dynamic per_token "
                    "activations with minmax or ssz weights).",
                )

    def outputs_stale(self, unit: Unit) -> bool:
        return self._stale

    def post_run(self) -> None:
        super().post_run()  # include/exclude patterns that matched no layer are still reported
        outliers = find_outliers(self._static_steps)
        for outlier in outliers:
            self.context.recorder.stat(OUTLIER_SECTION, outlier.name, outlier.report_entry())
        if outliers:
            logger.warning("%s: %d static activation range(s) far above their peers':\n  %s\nFix: %s.",
                           self.config.yaml_path, len(outliers), "\n  ".join(o.message() for o in outliers),
                           OUTLIER_ADVICE)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "static_steps": dict(self._static_steps)}  # with the patterns used so far

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._static_steps = dict(state.get("static_steps", {}))
