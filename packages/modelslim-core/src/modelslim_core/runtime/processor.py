"""The processor protocol.

A runner drives every processor through the same lifecycle: `pre_run` once, then for each unit
`preprocess` → (one calibration forward of the unit if `needs_forward`) → `postprocess`, then `post_run`.
If a processor reports `outputs_stale` after its postprocess, the unit is run once more to produce the
next unit's inputs.
Data-free work happens in `preprocess`/`postprocess`; a processor that needs activations installs hooks or
calibrating modules in `preprocess` and turns what they saw into its result in `postprocess`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from modelslim_core.protocol.validation import PluginConfig
from modelslim_core.runtime.context import RunContext
from modelslim_core.runtime.unit import Unit


@dataclass(frozen=True)
class LayerScheme:
    """One checkpoint tag a config gives the layers its patterns select, with what serving engines care about:
    per-group weight parameters and asymmetric weights (offsets). Read by the load-time engine check."""

    tag: str
    path: str
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    per_group: bool = False
    symmetric_weights: bool = True


class ProcessorConfig(PluginConfig):
    """Base of processor configs; each subclass declares `type: Literal['<its name>']`."""

    def layer_schemes(self) -> list[LayerScheme]:
        """What the export types of this config mean for serving engines (subclasses with weight qconfigs refine it)."""
        grouped = self.per_group_export_types()
        include = tuple(getattr(self, "include", None) or ("*",))
        exclude = tuple(getattr(self, "exclude", None) or ())
        return [LayerScheme(tag, self.yaml_path, include, exclude, per_group=tag in grouped)
                for tag in sorted(self.export_types())]

    def export_types(self) -> frozenset[str]:
        """Checkpoint tags this processor can give layers, so a saver that cannot write one fails at load time."""
        return frozenset()

    def per_group_export_types(self) -> frozenset[str]:
        """The tags among export_types() that come with per-group weight parameters."""
        return frozenset()

    def linear_selections(self) -> list[tuple[str, Any]]:
        """(YAML path, selection with include/exclude and name_filter()) of each set of linear layers this
        processor quantizes or prunes: one that selects no layer of the model fails the run at load time."""
        return []


class Processor:
    """Base class: every hook is a no-op so a processor implements only what it needs."""

    config_class: ClassVar[type[ProcessorConfig]]
    #: False for processors that run the unit themselves (e.g. to train): inside a `group` they would feed
    #: their siblings' calibration again, so a group refuses them when the YAML is loaded.
    groupable: ClassVar[bool] = True

    def __init__(self, config: ProcessorConfig, context: RunContext):
        self.config = config
        self.context = context

    def pre_run(self, model: nn.Module) -> None:
        """Once, before the first unit."""

    def preprocess(self, unit: Unit) -> None:
        """Before the unit's calibration forward."""

    def needs_forward(self, unit: Unit) -> bool:
        """Whether this unit must be run on the calibration data between preprocess and postprocess."""
        return False

    def postprocess(self, unit: Unit) -> None:
        """After the unit's calibration forward (or right after preprocess for data-free work)."""

    def forward_needs_only(self, unit: Unit) -> list[nn.Module]:
        """Modules whose inputs are all this processor's forward records. When nobody uses the forward's
        outputs (a later processor runs its own forward, or this is the last unit), the runner stops each
        sample's forward once every one of them has been called (a module with `records_in_forward = True`,
        which records inside its own forward, once that forward has returned). [] (the default): run the
        whole unit."""
        return []

    def outputs_stale(self, unit: Unit) -> bool:
        """After postprocess: whether the calibration forward's outputs no longer reflect the unit (e.g. its
        weights were quantized only now), so the runner must run the unit again for the next unit's inputs."""
        return False

    def post_run(self) -> None:
        """Once, after the last unit."""

    def state_dict(self) -> dict:
        """JSON-able state carried across units, saved at each unit boundary so a killed run can resume."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""

    @classmethod
    def supports_distributed(cls, config: ProcessorConfig) -> bool:
        """Whether data-parallel ranks can run it (their statistics are reduced correctly); refused otherwise."""
        return False

    @classmethod
    def handles_pieces(cls, config: ProcessorConfig) -> bool:
        """Whether preprocess/postprocess may be given a piece of a unit (`Unit.parts`: e.g. one linear) instead
        of the whole unit, so a runner can load, process and save a layer piece by piece. Only processors that
        treat each linear on its own say yes; anything that relates modules of a unit (smoothing, rotation)
        must see the whole unit."""
        return False

    @classmethod
    def handles_stored_weights(cls, config: ProcessorConfig) -> bool:
        """Whether the processor may be given units whose weights are held in the checkpoint's dtype (bf16)
        while the runner computes in float32 (runtime/storage.py): it reads weights only through float32
        upcasts and rewrites them only through `storage.store`. Otherwise (the default, e.g. a plugin that
        edits `weight.data` in place) the runner holds the units in the compute dtype."""
        return False

    @classmethod
    def handles_calibrated_pieces(cls, config: ProcessorConfig) -> bool:
        """Whether a calibrated stage may hand this processor a MoE layer piece by piece: the layer without its
        routed experts, then groups of routed experts, each with its own calibration forward over the inputs
        the runner captured at the experts (modelslim_runners/moe_pieces.py). Say yes only if everything the
        processor relates lies within one piece (each linear on its own; smoothing pairs inside attention or
        inside one expert) and its outputs_stale() is the same for every piece of a unit."""
        return False

    @classmethod
    def selection_is_local(cls, config: ProcessorConfig) -> bool:
        """Whether an include/exclude pattern changes only the units whose modules it matches: then a run that
        differs from an earlier one only in patterns of later units may reuse the earlier run's first units
        (modelslim_runners/unit_cache.py). False (the default) for anything that looks across units."""
        return False

    @classmethod
    def needs_data(cls, config: ProcessorConfig) -> bool:
        """Whether any unit could need calibration data; False lets a run skip tokenization and forwards."""
        return False
