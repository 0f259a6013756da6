"""Stand-ins for the serving engines' hardware stacks, so their pure-Python quantization loaders import anywhere.

vLLM-Ascend's `quantization/` package and MindIE-SD's `quantization/` package decide which tensors a
checkpoint must hold in plain Python, but they import vLLM, torch_npu and their own NPU kernels at module
level. `hardware_stubs()` puts a stand-in module into `sys.modules` for each of those that cannot be
imported on this host (nothing is replaced on an Ascend host with the real stack), lets the loaders be
imported, and takes the stand-ins out again afterwards: the engine modules keep the references they need,
and nothing else in the process (device detection, other tests) ever sees a fake `torch_npu`.

The stand-ins are deliberately permissive (any attribute is a callable, subclassable placeholder), except
for the few names whose behaviour the loaders' parameter-creation code relies on; those are real
implementations of vLLM's documented semantics (parameter attributes, the `ascend` config registration,
tensor-parallel size 1).
"""

from __future__ import annotations

import contextlib
import enum
import importlib.util
import sys
import types
from collections.abc import Iterator
from typing import Any

import torch


class Placeholder:
    """Anything: callable, indexable, iterable (empty), subclassable, false, equal only to itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> "Placeholder":
        return Placeholder()

    def __getattr__(self, name: str) -> "Placeholder":
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return Placeholder()

    def __getitem__(self, key: Any) -> "Placeholder":
        return Placeholder()

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __bool__(self) -> bool:
        return False

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (object,)


class StubModule(types.ModuleType):
    """A module whose every missing attribute is a Placeholder; `overrides` supplies the real behaviour."""

    def __init__(self, name: str, overrides: dict[str, Any] | None = None) -> None:
        super().__init__(name)
        self.__path__: list[str] = []  # a package: `import stub.sub` works
        self.__dict__.update(overrides or {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return Placeholder()


# --- vLLM semantics the loaders rely on ---------------------------------------------------------------
def set_weight_attrs(weight: torch.Tensor, attrs: dict[str, Any] | None) -> None:
    """vLLM's helper: loader metadata (output_dim, packed_dim, weight_loader, ...) lives on the Parameter."""
    for key, value in (attrs or {}).items():
        setattr(weight, key, value)


class PerTensorScaleParameter(torch.nn.Parameter):
    """vLLM's per-tensor scale: a Parameter built from `data=` with a `weight_loader`."""

    def __new__(cls, data: torch.Tensor, weight_loader: Any = None, **kwargs: Any):
        param = super().__new__(cls, data, requires_grad=False)
        param.weight_loader = weight_loader
        return param


class FusedMoeWeightScaleSupported(enum.Enum):
    TENSOR = "tensor"
    CHANNEL = "channel"
    GROUP = "group"
    BLOCK = "block"


class _Base:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()


class QuantizationConfig(_Base):
    packed_modules_mapping: dict[str, list[str]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.packed_modules_mapping = {}


class FusedMoEMethodBase(_Base):
    def __init__(self, moe_config: Any = None) -> None:
        super().__init__()
        self.moe = moe_config


class WeightsMapper:
    def __init__(self, orig_to_new_prefix=None, orig_to_new_substr=None, orig_to_new_suffix=None, **kwargs):
        self.orig_to_new_prefix = dict(orig_to_new_prefix or {})
        self.orig_to_new_substr = dict(orig_to_new_substr or {})
        self.orig_to_new_suffix = dict(orig_to_new_suffix or {})

    def _map_name(self, key: str) -> str:
        for old, new in self.orig_to_new_substr.items():
            key = key.replace(old, new)
        for old, new in self.orig_to_new_prefix.items():
            if key.startswith(old):
                key = new + key[len(old):]
        for old, new in self.orig_to_new_suffix.items():
            if key.endswith(old):
                key = key[: -len(old)] + new
        return key

    def apply_dict(self, values: dict[str, Any]) -> dict[str, Any]:
        return {self._map_name(k): v for k, v in values.items()}


class _NoCommunicationGroup:
    """A process group handle with no device group (AttributeError on `.device_group`, as without HCCL)."""

    world_size = 1
    rank_in_group = 0


def _module_classes() -> dict[str, type]:
    """Layer classes the loaders test with isinstance; harness layers derive from them (torch modules)."""
    linear_base = type("LinearBase", (torch.nn.Module,), {})
    return {
        "LinearBase": linear_base,
        "RowParallelLinear": type("RowParallelLinear", (linear_base,), {}),
        "ColumnParallelLinear": type("ColumnParallelLinear", (linear_base,), {}),
        "FusedMoE": type("FusedMoE", (torch.nn.Module,), {}),
        "AttentionLayerBase": type("AttentionLayerBase", (torch.nn.Module,), {}),
        "VocabParallelEmbedding": type("VocabParallelEmbedding", (torch.nn.Module,), {}),
    }


LAYER_CLASSES = _module_classes()


def _vllm_overrides(config_provider: Any) -> dict[str, dict[str, Any]]:
    methods = {name: type(name, (_Base,), {}) for name in (
        "LinearMethodBase", "QuantizeMethodBase", "UnquantizedEmbeddingMethod", "BaseKVCacheMethod",
        "UnquantizedLinearMethod")}
    return {
        "vllm.config": {"get_current_vllm_config": config_provider,
                        "get_current_vllm_config_or_none": config_provider},
        "vllm.distributed": {"get_tensor_model_parallel_world_size": lambda *a: 1,
                             "get_tensor_model_parallel_rank": lambda *a: 0},
        "vllm.model_executor.layers.linear": {**{k: LAYER_CLASSES[k] for k in ("LinearBase", "RowParallelLinear",
                                                                                 "ColumnParallelLinear")},
                                              "LinearMethodBase": methods["LinearMethodBase"],
                                              "UnquantizedLinearMethod": methods["UnquantizedLinearMethod"]},
        "vllm.model_executor.layers.quantization": {"register_quantization_config": lambda name: (lambda cls: cls),
                                                    "QUANTIZATION_METHODS": []},
        "vllm.model_executor.layers.quantization.base_config": {
            "QuantizationConfig": QuantizationConfig, "QuantizeMethodBase": methods["QuantizeMethodBase"]},
        "vllm.model_executor.layers.quantization.kv_cache": {"BaseKVCacheMethod": methods["BaseKVCacheMethod"]},
        "vllm.model_executor.layers.vocab_parallel_embedding": {
            "VocabParallelEmbedding": LAYER_CLASSES["VocabParallelEmbedding"],
            "UnquantizedEmbeddingMethod": methods["UnquantizedEmbeddingMethod"]},
        "vllm.model_executor.layers.attention_layer_base": {"AttentionLayerBase": LAYER_CLASSES["AttentionLayerBase"]},
        "vllm.model_executor.layers.fused_moe": {"FusedMoE": LAYER_CLASSES["FusedMoE"],
                                                 "FusedMoEMethodBase": FusedMoEMethodBase,
                                                 "FusedMoeWeightScaleSupported": FusedMoeWeightScaleSupported},
        "vllm.model_executor.models.utils": {"WeightsMapper": WeightsMapper},
        "vllm.model_executor.parameter": {"PerTensorScaleParameter": PerTensorScaleParameter},
        "vllm.model_executor.utils": {"set_weight_attrs": set_weight_attrs},
        "vllm.utils.math_utils": {"cdiv": lambda a, b: -(-a // b)},
        # One process, no expert-parallel (MC2) communication group: the MoE schemes' constructors then take
        # their own "MC2 group metadata unavailable" path instead of asking an HCCL backend on torch.device("npu").
        "vllm_ascend.distributed.parallel_state": {"get_mc2_group": lambda *a, **k: _NoCommunicationGroup(),
                                                   "get_ep_group": lambda *a, **k: _NoCommunicationGroup()},
        # An Atlas A2 (SoC 220): the generation both engines' quantized linears target.
        "torch_npu": {"npu": StubModule("torch_npu.npu", {"get_soc_version": lambda: 220, "is_available": lambda: False,
                                                          "empty_cache": lambda: None})},
        "vllm_ascend.utils": {"ASCEND_QUANTIZATION_METHOD": "ascend", "COMPRESSED_TENSORS_METHOD": "compressed-tensors",
                              "FP8_METHOD": "fp8", "vllm_version_is": lambda version: version == "0.23.0",
                              "maybe_trans_nz": lambda tensor, *a, **k: tensor,
                              "calc_split_factor": lambda dims: dims},
    }


#: Packages that exist only with the hardware stack; stubbed when they cannot be imported.
HARDWARE_PACKAGES = ("vllm", "torch_npu", "triton", "triton_ascend")
#: vLLM-Ascend modules (inside the installed wheel) that pull in NPU kernels or a running vLLM at import time.
VLLM_ASCEND_RUNTIME_MODULES = (
    "vllm_ascend.utils", "vllm_ascend.ascend_config", "vllm_ascend.ascend_forward_context", "vllm_ascend.distributed",
    "vllm_ascend.ops", "vllm_ascend.device", "vllm_ascend.flash_common3_context", "vllm_ascend.attention",
    "vllm_ascend.logger", "vllm_ascend._310p.ops", "vllm_ascend._310p.fused_moe",
)


def hardware_stack_present() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("vllm", "torch_npu"))


class _StubFinder:
    """Serves a StubModule for every module under the stubbed roots (so `import vllm.a.b.c` works)."""

    def __init__(self, roots: tuple[str, ...], overrides: dict[str, dict[str, Any]]) -> None:
        self.roots = roots
        self.overrides = overrides

    def _covers(self, fullname: str) -> bool:
        return any(fullname == root or fullname.startswith(root + ".") for root in self.roots)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None):
        if not self._covers(fullname):
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec) -> types.ModuleType:
        return StubModule(spec.name, self.overrides.get(spec.name))

    def exec_module(self, module: types.ModuleType) -> None:
        parent, _, child = module.__name__.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, module)


@contextlib.contextmanager
def hardware_stubs(config_provider: Any, extra_roots: tuple[str, ...] = ()) -> Iterator[None]:
    """Import engine loaders inside this block; the stand-ins leave `sys.modules` (and `torch.npu`) after it."""
    if hardware_stack_present():
        yield
        return
    roots = tuple(name for name in HARDWARE_PACKAGES if importlib.util.find_spec(name) is None)
    roots += VLLM_ASCEND_RUNTIME_MODULES + extra_roots
    finder = _StubFinder(roots, _vllm_overrides(config_provider))
    before = set(sys.modules)
    # Covered modules imported for real earlier would shadow the stand-ins.
    shadowed = {name: sys.modules.pop(name) for name in list(sys.modules) if finder._covers(name)}
    had_npu = hasattr(torch, "npu")
    if not had_npu:
        torch.npu = StubModule("torch.npu", {"is_available": lambda: False, "empty_cache": lambda: None})
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in set(sys.modules) - before:
            if finder._covers(name):
                del sys.modules[name]
        sys.modules.update(shadowed)
        if not had_npu:
            del torch.npu
