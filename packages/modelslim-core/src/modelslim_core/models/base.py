"""The model adapter base class: everything a run needs to know about one model family.

An adapter loads the configuration, tokenizer and weights from a local directory (never from a hub),
splits the model into units for the runner, lists the linear sites a quantizer may replace, and captures
the inputs of the first unit so units can be calibrated one at a time. Families override only what differs.
"""

from __future__ import annotations

import functools
import json
import logging
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from modelslim_core.errors import ModelError
from modelslim_core.models.checkpoint_names import CheckpointNames
from modelslim_core.models.subgraphs import DENSE_DECODER_SUBGRAPHS, Subgraph, SubgraphPattern, attention_heads, resolve_subgraphs
from modelslim_core.models.tokenizer_files import check_tokenizer_files
from modelslim_core.runtime.unit import LinearSite, Unit, UnitInput, module_linear_sites

if TYPE_CHECKING:
    from modelslim_core.attention.sites import AttentionSite

logger = logging.getLogger(__name__)

#: config.json keys that bound the input length, most common first.
POSITION_LIMIT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class _FirstUnitReached(Exception):
    """Raised by a pre-forward hook to stop the model once the first unit's inputs are known."""


def peek_model_type(model_path: Path) -> str | None:
    """config.json's `model_type` when the directory has a readable one (adapters validate their own files)."""
    try:
        data = json.loads((model_path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("model_type") if isinstance(data, dict) else None


def read_config_json(model_path: Path) -> dict[str, Any]:
    config_file = model_path / "config.json"
    if not config_file.is_file():
        raise ModelError(
            f"model_path {str(model_path)!r} has no config.json, so it is not a Hugging Face model directory.",
            "point --model_path at the directory that holds config.json and the *.safetensors weights.",
        )
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{config_file} cannot be read as JSON: {exc}.", "restore the model's config.json.") from None
    if not isinstance(data, dict):
        raise ModelError(f"{config_file} must hold a JSON object.", "restore the model's config.json.")
    return data


def source_dtype_of(config_json: dict[str, Any]) -> torch.dtype | None:
    """The checkpoint's dtype from config.json (`dtype`/`torch_dtype`, also inside text_config, and inside an
    Omni release's thinker_config)."""
    thinker = config_json.get("thinker_config") or {}
    for holder in (config_json, config_json.get("text_config") or {}, thinker, thinker.get("text_config") or {}):
        for key in ("dtype", "torch_dtype"):
            if holder.get(key) in _DTYPES:
                return _DTYPES[holder[key]]
    return None


def instantiate_from_config(factory: Any, config: Any, dtype: torch.dtype, trust_remote_code: bool = False) -> nn.Module:
    """A randomly initialised model from an auto class (`from_config`) or a concrete model class (`_from_config`)."""
    if hasattr(factory, "from_config"):
        return factory.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    return factory._from_config(config, dtype=dtype)


class ModelAdapter:
    """Adapter for transformers causal LMs whose decoder layers are the units."""

    #: Practice directory name (pedigree) and entry-point name of the family.
    family: ClassVar[str] = "default"
    #: User-facing model_type names this adapter is verified for (exact match).
    model_types: ClassVar[tuple[str, ...]] = ()
    #: Prefixes of user-facing names that belong to this family (e.g. "Qwen2.5-").
    model_type_prefixes: ClassVar[tuple[str, ...]] = ()
    #: `model_type` values of config.json this adapter understands (empty: any).
    hf_model_types: ClassVar[tuple[str, ...]] = ()
    #: The config `apiversion`s (services) that can quantize this family.
    apiversions: ClassVar[tuple[str, ...]] = ("modelslim_v1",)

    def __init__(self, model_type: str, model_path: Path, trust_remote_code: bool = False):
        self.model_type = model_type
        self.model_path = Path(model_path)
        self.trust_remote_code = trust_remote_code
        self.config_json = self.read_model_config()
        self._tokenizer = None

    def read_model_config(self) -> dict[str, Any]:
        """The configuration of the network being quantized; raises ModelError when the directory lacks it
        (naming the pipeline and the supported model types when it is a diffusers pipeline instead)."""
        if not (self.model_path / "config.json").is_file() and (self.model_path / "model_index.json").is_file():
            from modelslim_core.models.unsupported_pipeline import unsupported_pipeline_error

            raise unsupported_pipeline_error(self.model_type, self.model_path)
        return read_config_json(self.model_path)

    # --- identity -----------------------------------------------------------------------------------------
    @property
    def pedigree(self) -> str:
        return self.family

    @property
    def hf_model_type(self) -> str | None:
        return self.config_json.get("model_type")

    @property
    def checkpoint_dir(self) -> Path:
        """The directory holding the quantized network's config and weights (a pipeline's component folder)."""
        return self.model_path

    @property
    def source_dtype(self) -> torch.dtype | None:
        return source_dtype_of(self.config_json)

    # --- loading ------------------------------------------------------------------------------------------
    def load_tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            check_tokenizer_files(self.model_path)

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(
                    self.model_path, local_files_only=True, trust_remote_code=self.trust_remote_code
                )
            except Exception as exc:
                raise ModelError(
                    f"cannot load the tokenizer from {str(self.model_path)!r}: {exc}",
                    "calibration needs the model's tokenizer files (tokenizer.json / tokenizer_config.json) "
                    "in model_path.",
                ) from None
        return self._tokenizer

    def model_class(self) -> Any:
        """The transformers class (or auto class) that builds this model; families of causal LMs keep the default."""
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def load_model(self, dtype: torch.dtype) -> nn.Module:
        from transformers.utils import logging as hf_logging

        from modelslim_core.models.weights import SourceWeights

        hf_logging.disable_progress_bar()  # our own per-layer progress is the one users watch
        source = SourceWeights(self.model_path)
        if source.quantized:
            return self.load_dequantized(source, dtype)
        try:
            model = self.model_class().from_pretrained(
                self.model_path,
                dtype=dtype,
                local_files_only=True,
                trust_remote_code=self.trust_remote_code,
                low_cpu_mem_usage=True,
            )
        except Exception as exc:
            hint = "check that model_path holds the model's *.safetensors weights and a matching config.json"
            if not self.trust_remote_code and "trust_remote_code" in str(exc):
                hint = "this model ships its own code; rerun with --trust_remote_code true if you trust it"
            raise ModelError(f"cannot load the model from {str(self.model_path)!r}: {exc}", hint + ".") from None
        model.eval()
        model.requires_grad_(False)
        if getattr(model.config, "use_cache", None):
            model.config.use_cache = False
        return model

    def load_dequantized(self, source: Any, dtype: torch.dtype) -> nn.Module:
        """The whole model from a checkpoint published quantized (FP8 blocks, packed INT4), read tensor by tensor.

        transformers' own readers for these formats want a GPU or an extra package and may keep the weights
        quantized; we build the skeleton and fill it through `SourceWeights`, which dequantizes each tensor as it
        is read, so peak memory is the float model plus one tensor's working copy.
        """
        logger.info("The source checkpoint in %s stores linears quantized; they are dequantized to %s as they are "
                    "read.", self.model_path, dtype)
        return self.materialized(self.build_skeleton(dtype), source, dtype)

    def materialized(self, model: nn.Module, source: Any, dtype: torch.dtype) -> nn.Module:
        """The skeleton `model` with every parameter read from `source` (SourceWeights) as `dtype`, tied again."""
        from modelslim_core.models.weights import LazyWeights, tied_aliases

        lazy = LazyWeights(source, tied_aliases(model), dtype, self.saved_tensor_name)
        missing = lazy.missing([name for name, _ in model.named_parameters(remove_duplicate=False)])
        if missing:
            raise ModelError(f"parameter {missing[0]} (and {len(missing) - 1} more) is not in the checkpoint files of "
                             f"{str(self.model_path)!r}.", "the checkpoint does not match config.json; check the model directory.")
        lazy.materialize(model)
        if hasattr(model, "tie_weights"):
            model.tie_weights()
        return model

    def build_skeleton(self, dtype: torch.dtype) -> nn.Module:
        """The architecture with every parameter on `meta` (no memory), for lazy layer-wise loading."""
        from transformers import AutoConfig

        from modelslim_core.models.weights import parameters_on_meta

        config = AutoConfig.from_pretrained(self.model_path, local_files_only=True, trust_remote_code=self.trust_remote_code)
        with parameters_on_meta():
            model = instantiate_from_config(self.model_class(), config, dtype, self.trust_remote_code)
        model.eval()
        model.requires_grad_(False)
        if getattr(model.config, "use_cache", None):
            model.config.use_cache = False
        return model

    def output_module_names(self, model: nn.Module) -> set[str]:
        """Modules used only after the last unit (the LM head), which the prefix forward does not need."""
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        return {name for name, module in model.named_modules() if head is not None and module is head}

    @functools.cached_property
    def checkpoint_names(self) -> CheckpointNames:
        """transformers' load-time renames of this family, inverted (models/checkpoint_names.py)."""
        return CheckpointNames.for_config(self.config_json)

    def saved_tensor_name(self, name: str) -> str:
        """The name a tensor of module path `name` has in the checkpoint format serving engines load.

        The checkpoint's own name: the module path unless transformers renames the family on load (MiniMax-M2's
        `block_sparse_moe`), in which case the rename is inverted; multimodal families whose transformers modules
        are nested differently from their checkpoints on disk (and the Omni thinker's `thinker.` prefix) map it
        back themselves.
        """
        return self.checkpoint_names.tensor_name(name)

    def name_aliases(self, module_name: str) -> list[str]:
        """Other names include/exclude patterns may use for a module: its name in the checkpoint on disk."""
        saved = self.saved_tensor_name(f"{module_name}.weight").removesuffix(".weight")
        return [saved] if saved != module_name else []

    # --- structure ----------------------------------------------------------------------------------------
    def units(self, model: nn.Module) -> list[Unit]:
        """Decoder layers, found by class name, outermost only, in `named_modules` order."""
        units: list[Unit] = []
        for name, module in model.named_modules():
            if "decoderlayer" not in type(module).__name__.lower():
                continue
            if any(name.startswith(unit.name + ".") for unit in units):
                continue
            units.append(Unit(name=name, module=module, index=len(units)))
        if not units:
            raise ModelError(
                f"found no decoder layers in {type(model).__name__} (model_type {self.model_type!r}).",
                "this architecture needs its own model adapter; see README.md 'Plugins'.",
            )
        return units

    #: Linears that stay float whatever a practice includes (fnmatch patterns relative to a unit), e.g. MoE
    #: routers written as nn.Linear: quantizing them changes which experts tokens reach. Saved as FLOAT.
    float_linears: ClassVar[tuple[str, ...]] = ()

    def linear_sites(self, unit: Unit) -> list[LinearSite]:
        if unit.parts is None and len(unit.subtrees) == 1:  # one subtree (a streamed linear): walk it alone
            sites = module_linear_sites(unit.module, unit.name, unit.subtrees[0])
        else:
            sites = module_linear_sites(unit.module, unit.name)
        if not unit.whole:
            sites = [site for site in sites if unit.covers_site(site.name)]
        if not self.float_linears:
            return sites
        start = len(unit.name) + 1
        return [site for site in sites if not any(fnmatchcase(site.name[start:], p) for p in self.float_linears)]

    def release_fused_linears(self) -> list[str]:
        """Module paths of linears the release stores fused with others in one tensor (one name per fused
        tensor and layer suffices): savers writing the release layout can put them back only float, so a config
        quantizing one is refused at load (formats/fused_release.py). Empty for most families."""
        return []

    #: Why this family has no attention site the KV-cache / FA3 processors can act on, and what the serving
    #: engine does instead (added to their refusal, attention/processor.py); None: nothing to add.
    attention_note: ClassVar[str | None] = None

    def attention_sites(self, unit: Unit) -> list["AttentionSite"]:
        """Attention modules of the unit with their head layout (KV-cache, FA3 and KV-smooth processors)."""
        from modelslim_core.attention.sites import find_attention_sites

        return find_attention_sites(unit.module, unit.name)

    #: Producer → consumer pairs that smoothing may rescale, relative to a unit (models/subgraphs.py).
    smoothing_patterns: ClassVar[tuple[SubgraphPattern, ...]] = DENSE_DECODER_SUBGRAPHS

    def smoothing_subgraphs(self, unit: Unit) -> list[Subgraph]:
        """The smoothing subgraphs present in `unit`; families differ only in `smoothing_patterns`."""
        return resolve_subgraphs(unit, self.smoothing_patterns, attention_heads(self.config_json))

    # --- calibration data ---------------------------------------------------------------------------------
    def position_limit(self) -> tuple[str, int] | None:
        """(config.json key, value) of the longest input the model's positions cover; None if it does not say."""
        for holder in (self.config_json, self.config_json.get("text_config") or {}):
            for key in POSITION_LIMIT_KEYS:
                value = holder.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return key, value
        return None

    def tokenize(self, texts: list[str]) -> list[dict[str, torch.Tensor]]:
        """One model input per text, batch size 1, special tokens as the tokenizer adds them by default.

        A text longer than the model's positions is cut to fit (a model with learned absolute positions cannot
        run it at all, and a rotary one was never trained past it), with one warning for the whole set."""
        tokenizer = self.load_tokenizer()
        limit = self.position_limit()
        options = {"truncation": True, "max_length": limit[1]} if limit else {}
        samples = [dict(tokenizer(text, return_tensors="pt", **options)) for text in texts]
        at_limit = sum(1 for sample in samples if limit and sample["input_ids"].shape[-1] >= limit[1])
        if at_limit:
            logger.warning("%d of %d calibration samples reach the model's maximum input length of %d tokens (%s in "
                           "config.json); longer ones were cut there. Shorten them to calibrate on whole texts.",
                           at_limit, len(samples), limit[1], limit[0])
        return samples

    @torch.no_grad()
    def capture_unit_inputs(self, model: nn.Module, samples: list[Any]) -> list[UnitInput]:
        """Run each sample up to the first unit and record that unit's (args, kwargs)."""
        first = self.units(model)[0].module
        captured: list[UnitInput] = []

        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            captured.append(UnitInput(args=args, kwargs=kwargs))
            raise _FirstUnitReached

        handle = first.register_forward_pre_hook(hook, with_kwargs=True)
        device = next(model.parameters()).device
        try:
            for sample in samples:
                try:
                    self.forward_sample(model, sample, device)
                except _FirstUnitReached:
                    continue
        finally:
            handle.remove()
        if len(captured) != len(samples):
            raise ModelError(
                f"the forward pass of {type(model).__name__} never reached its first decoder layer.",
                "this architecture needs its own model adapter; see README.md 'Plugins'.",
            )
        return captured

    def forward_sample(self, model: nn.Module, sample: Any, device: torch.device) -> Any:
        """Run the whole model on one calibration sample (here: a tokenized text) placed on `device`."""
        return model(**{k: v.to(device) for k, v in sample.items()}, use_cache=False)

    def unit_output(self, output: Any) -> Any:
        """What of a unit's forward output the runner keeps for next_unit_input: the hidden states (a decoder
        layer's other outputs, attention weights or caches, are not needed and would only hold memory)."""
        return output[0] if isinstance(output, (tuple, list)) else output

    def next_unit_input(self, output: Any, previous: UnitInput) -> UnitInput:
        """The next unit gets this unit's hidden states and the same keyword arguments (mask, positions)."""
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        if previous.args:
            return UnitInput(args=(hidden, *previous.args[1:]), kwargs=previous.kwargs)
        return UnitInput(args=(), kwargs={**previous.kwargs, "hidden_states": hidden})

    def unit_notes(self, unit: Unit) -> list[str]:
        """Lines for the run summary about a processed unit (e.g. MoE routing counts); read before it is released."""
        return []

    def record_unit(self, unit: Unit, recorder) -> None:
        """Debug records about a processed unit that no processor owns (e.g. MoE routed tokens per expert)."""
