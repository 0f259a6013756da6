"""Would vLLM-Ascend load this checkpoint? Asked of vLLM-Ascend's own quantization code, not of our reading of it.

For every quantized linear (fused the way vLLM fuses q/k/v and gate/up), every MoE expert block and every
quantized attention, the engine's real `AscendModelSlimConfig.get_quant_method` picks the scheme and the
scheme's real `create_weights` allocates the parameters. The checkpoint's tensors are then loaded the way
vLLM's weight loaders do it at tensor-parallel size 1: shard slices along `output_dim` (halved for packed
dims), per-tensor parameters shared by all shards, MoE experts into `w13_*` (gate then up) and `w2_*`.
A problem is reported for: a layer the engine refuses; a tensor with no parameter to land in (never loaded);
a shape the loader's assertion rejects; a dtype whose copy would change the meaning (an int bit pattern read
as a number, a float that is not an integer copied into an int parameter); a parameter the engine reads that
the checkpoint lacks; per-tensor values that differ between fused shards (the engine keeps one); offsets
the engine's kernel ignores; and global keys the engine needs.
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Iterator

import torch

from modelslim.engines.checkpoint import EngineCheckpoint
from modelslim_core.formats.registry import VLLM_ASCEND
from modelslim_core.formats.tags import TAGS
from modelslim.engines.problems import Problem
from modelslim.engines.stubs import LAYER_CLASSES, Placeholder, hardware_stubs

ENGINE = "vllm-ascend"

#: Suffixes of attention tensors stored under a linear's prefix (C8 scales under k_proj / v_proj).
_ATTENTION_SUFFIXES = ("kv_cache_scale", "kv_cache_offset")
#: Registered tags that are not quantized linear layers (an unknown tag is treated as one, for the engine to judge).
_NON_LINEAR_TAGS = frozenset(fmt.tag for fmt in TAGS if fmt.kind != "linear")
#: vLLM's dense-model fusions (Llama/Qwen2/Qwen3/Mistral model classes' packed_modules_mapping).
DEFAULT_PACKED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
#: Module names vLLM builds as RowParallelLinear (input split across ranks).
ROW_PARALLEL = frozenset({"o_proj", "down_proj", "dense", "out_proj", "w2", "dense_4h_to_h"})
_EXPERT = re.compile(r"^(?P<block>.+\.experts)\.(?P<index>\d+)\.(?P<proj>[A-Za-z0-9_]+)$")
#: Tags whose engine kernel never reads `weight_offset` (a non-zero offset would be silently ignored).
OFFSET_IGNORED = frozenset(tag for tag, support in TAGS.support(VLLM_ASCEND).items() if not support.asymmetric_weights)


def logical_shape(tag: str, stored: tuple[int, ...]) -> tuple[int, int]:
    """[out, in] of the float linear behind a stored weight (int4 pairs pack rows, FP4 pairs pack columns)."""
    out, inp = stored[-2], stored[-1]
    packing = TAGS.packing(tag)
    if packing == "rows":
        return out * 2, inp
    if packing == "columns":
        return out, inp * 2
    return out, inp


_CONFIG: Any = None


def _current_config() -> Any:
    """What `get_current_vllm_config()` returns inside the engine while a checkpoint is checked."""
    return _CONFIG


@contextlib.contextmanager
def _engine(checkpoint: EngineCheckpoint, platform: str) -> Iterator[tuple[Any, Any]]:
    """The engine's config class for `platform` and its method adapters, with the vLLM config it expects."""
    global _CONFIG
    with hardware_stubs(_current_config):
        from vllm_ascend.quantization import method_adapters  # noqa: PLC0415
        from vllm_ascend.quantization import modelslim_config  # noqa: PLC0415

        config_cls = modelslim_config.AscendModelSlimConfig
        if platform == "310p":
            from vllm_ascend._310p.quantization.modelslim_config import AscendModelSlimConfig310  # noqa: PLC0415

            config_cls = AscendModelSlimConfig310
        for module in list(__import__("sys").modules.values()):
            name = getattr(module, "__name__", "") or ""
            if name.startswith("vllm_ascend.") and "quantization" in name:
                for attr in ("get_current_vllm_config", "get_current_vllm_config_or_none"):
                    if hasattr(module, attr):
                        setattr(module, attr, _current_config)
                if hasattr(module, "get_tensor_model_parallel_world_size"):
                    module.get_tensor_model_parallel_world_size = lambda *a: 1
        quant_config = config_cls(dict(checkpoint.description))
        model_type = checkpoint.config.get("model_type", "")
        packed = modelslim_config.packed_modules_model_mapping.get(model_type) or DEFAULT_PACKED
        quant_config.packed_modules_mapping = packed
        hf_config = SimpleNamespace(**checkpoint.config)
        hf_config.model_type = model_type
        _CONFIG = SimpleNamespace(
            model_config=SimpleNamespace(hf_config=hf_config, dtype=checkpoint.serving_dtype, use_mla=hasattr(
                hf_config, "kv_lora_rank")),
            quant_config=quant_config, kv_transfer_config=None,
            parallel_config=SimpleNamespace(enable_expert_parallel=False), compilation_config=Placeholder())
        previous_default, previous_rank = torch.get_default_dtype(), torch.distributed.get_rank
        torch.set_default_dtype(checkpoint.serving_dtype)  # vLLM builds the model under its dtype
        # MoE schemes ask the (stubbed) HCCL group for their rank: one process, rank 0.
        torch.distributed.get_rank = lambda *args, **kwargs: 0
        try:
            yield quant_config, method_adapters
        finally:
            torch.set_default_dtype(previous_default)
            torch.distributed.get_rank = previous_rank
            _CONFIG = None


# --- comparing one checkpoint tensor with the parameter it lands in ---------------------------------------
def _dtype_problem(checkpoint: EngineCheckpoint, name: str, target: torch.dtype) -> str | None:
    """None when copying the stored tensor into a `target` parameter keeps its meaning."""
    stored = checkpoint.tensors[name].dtype
    if stored == target:
        return None
    if stored.is_floating_point and target.is_floating_point:
        return None  # the loader's copy_ rounds to the serving precision, as for any float checkpoint
    if not stored.is_floating_point and target.is_floating_point:
        return (f"is {_dt(stored)} but vLLM-Ascend allocates {_dt(target)}: the loader would copy the integer values "
                "as numbers (an int64 deq_scale holds a float32 bit pattern)")
    values = checkpoint.read(name)
    if not torch.equal(values.to(target).to(values.dtype), values):
        return f"is {_dt(stored)} but vLLM-Ascend allocates {_dt(target)} and its values do not survive that copy"
    return None


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass
class _Landing:
    """Where one checkpoint tensor goes: the parameter and the shape of the slice it fills."""

    param_name: str
    param: torch.nn.Parameter
    shape: tuple[int, ...]


class _LayerCheck:
    """Loading the tensors of one engine layer and collecting problems."""

    def __init__(self, checkpoint: EngineCheckpoint, layer_name: str, problems: list[Problem]):
        self.checkpoint = checkpoint
        self.layer_name = layer_name
        self.problems = problems
        self.loaded: set[str] = set()
        self.shared_values: dict[str, list[str]] = defaultdict(list)

    def problem(self, where: str, message: str) -> None:
        self.problems.append(Problem(ENGINE, where, message))

    def land(self, name: str, landing: _Landing | None, tag: str) -> None:
        info = self.checkpoint.tensors.get(name)
        if info is None:
            return
        if landing is None:
            self.problem(name, f"vLLM-Ascend's {tag} scheme allocates no parameter for this tensor "
                               f"({self.layer_name}); it would never be loaded")
            return
        if tuple(info.shape) != tuple(landing.shape):
            self.problem(name, f"shape {list(info.shape)}, but vLLM-Ascend's {tag} scheme allocates "
                               f"{list(landing.shape)} for it ({self.layer_name}.{landing.param_name}); "
                               "its weight loader would fail the shape assertion")
            return
        dtype_problem = _dtype_problem(self.checkpoint, name, landing.param.dtype)
        if dtype_problem:
            self.problem(name, dtype_problem)
        self.loaded.add(landing.param_name)

    def missing(self, params: dict[str, torch.nn.Parameter], computed: set[str], tag: str) -> None:
        for param_name in params:
            if param_name in self.loaded or param_name == "bias":
                continue
            if param_name in computed:  # the scheme derives these itself (AscendLinearMethod.get_computed_params)
                continue
            self.problem(f"{self.layer_name}.{param_name}",
                         f"vLLM-Ascend's {tag} scheme reads this parameter, but the checkpoint holds no tensor for it")


def _params(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return dict(module.named_parameters(recurse=True))


def _linear_landing(params: dict[str, torch.nn.Parameter], suffix: str, out_offset_size: int) -> _Landing | None:
    param = params.get(suffix)
    if param is None:
        return None
    shape = list(param.shape)
    output_dim = getattr(param, "output_dim", None)
    if output_dim is not None:
        factor = getattr(param, "packed_factor", 1) if getattr(param, "packed_dim", None) == output_dim else 1
        shape[output_dim] = out_offset_size // factor
    return _Landing(suffix, param, tuple(shape))


def _linear_groups(tags: dict[str, str], packed: dict[str, list[str]]) -> dict[str, list[str]]:
    """Engine layer name -> the checkpoint linears it loads (q/k/v into qkv_proj, ...), for quantized linears."""
    shard_to_fused = {shard: fused for fused, shards in packed.items() for shard in shards if "." not in shard}
    groups: dict[str, list[str]] = {}
    for key, tag in tags.items():
        if not key.endswith(".weight") or tag in _NON_LINEAR_TAGS:
            continue
        prefix = key[: -len(".weight")]
        if _EXPERT.match(prefix):
            continue
        parent, _, leaf = prefix.rpartition(".")
        fused = shard_to_fused.get(leaf)
        if fused is None:
            groups[prefix] = [prefix]
            continue
        members = [f"{parent}.{shard}" for shard in packed[fused]]
        groups[f"{parent}.{fused}"] = members
    return groups


def _check_linear(checkpoint, quant_config, adapters, layer_name, members, problems) -> None:
    tags = checkpoint.tags()
    check = _LayerCheck(checkpoint, layer_name, problems)
    present = [m for m in members if f"{m}.weight" in tags]
    if len(present) != len(members):
        absent = sorted(set(members) - set(present))
        check.problem(layer_name, f"vLLM-Ascend fuses {', '.join(members)} into one layer, but "
                                  f"{', '.join(absent)} is missing from the description")
        return
    member_tags = {m: tags[f"{m}.weight"] for m in members}
    leaf = layer_name.rpartition(".")[2]
    layer = LAYER_CLASSES["RowParallelLinear" if leaf in ROW_PARALLEL else "ColumnParallelLinear"]()
    layer.prefix = layer_name
    try:
        method = quant_config.get_quant_method(layer, layer_name)
    except Exception as exc:  # noqa: BLE001 - the engine's refusal is the finding
        check.problem(layer_name, f"vLLM-Ascend refuses this layer: {type(exc).__name__}: {exc}")
        return
    tag = next(iter(member_tags.values()))
    if not isinstance(method, adapters.AscendLinearMethod):
        check.problem(layer_name, f"vLLM-Ascend loads this {tag} layer as unquantized (another tensor under this "
                                  "prefix is tagged FLOAT)")
        return
    shapes = {m: logical_shape(member_tags[m], checkpoint.tensors[f"{m}.weight"].shape)
              for m in members if f"{m}.weight" in checkpoint.tensors}
    if len(shapes) != len(members):
        check.problem(layer_name, "a weight tensor named in the description is missing from the safetensors files")
        return
    in_size = next(iter(shapes.values()))[1]
    out_sizes = [shapes[m][0] for m in members]
    try:
        method.create_weights(layer, in_size, out_sizes, in_size, sum(out_sizes), checkpoint.serving_dtype,
                              weight_loader=None)
    except Exception as exc:  # noqa: BLE001
        check.problem(layer_name, f"vLLM-Ascend's {tag} scheme cannot allocate this layer: {type(exc).__name__}: {exc}")
        return
    params = _params(layer)
    for member, out_size in zip(members, out_sizes):
        for name in [n for n in checkpoint.tensors if n.startswith(member + ".") and "." not in n[len(member) + 1:]]:
            suffix = name[len(member) + 1:]
            if suffix in _ATTENTION_SUFFIXES:
                continue
            if suffix == "bias":
                _check_bias(check, name, out_size)
                continue
            landing = _linear_landing(params, suffix, out_size)
            check.land(name, landing, tag)
            if landing is not None and getattr(landing.param, "output_dim", None) is None:
                check.shared_values[suffix].append(name)
    _check_shared_values(check)
    _check_ignored_offsets(check, members, tag)
    check.missing(params, set(method.get_computed_params()), tag)


def _check_bias(check: _LayerCheck, name: str, out_size: int) -> None:
    """vLLM's layer owns the float bias (models without one skip a stored bias); it must be [out] float."""
    info = check.checkpoint.tensors[name]
    if tuple(info.shape) != (out_size,) or not info.dtype.is_floating_point:
        check.problem(name, f"bias is {_dt(info.dtype)} {list(info.shape)}; vLLM-Ascend loads a float [{out_size}]")


def _check_shared_values(check: _LayerCheck) -> None:
    """Per-tensor parameters of fused layers hold ONE value: vLLM keeps the last shard's."""
    for suffix, names in check.shared_values.items():
        if len(names) < 2:
            continue
        first = check.checkpoint.read(names[0])
        for other in names[1:]:
            if not torch.equal(check.checkpoint.read(other), first):
                check.problem(other, f"differs from {names[0]}, but vLLM-Ascend fuses these layers and keeps one "
                                     f"{suffix} for all of them")


def _check_ignored_offsets(check: _LayerCheck, members: list[str], tag: str) -> None:
    if tag not in OFFSET_IGNORED:
        return
    for member in members:
        name = f"{member}.weight_offset"
        if name in check.checkpoint.tensors and bool(check.checkpoint.read(name).float().abs().max() > 0):
            check.problem(name, f"non-zero (asymmetric weights), but vLLM-Ascend's {tag} kernel ignores "
                                "weight_offset: the served layer would be silently wrong")


def _expert_names(packed: dict[str, list[str]]) -> dict[str, tuple[str, int | None]]:
    """Expert projection -> (fused parameter group, shard), from the engine's own `experts` mapping for the model
    (gate/up/down, or w1/w2/w3 for Mixtral-style checkpoints): vLLM's expert mapping loads only these names."""
    listed = [entry.rpartition(".")[2] for entry in packed.get("experts", [])]
    if set(listed) == {"w1", "w2", "w3"}:
        return {"w1": ("w13", 0), "w3": ("w13", 1), "w2": ("w2", None)}
    return {"gate_proj": ("w13", 0), "up_proj": ("w13", 1), "down_proj": ("w2", None)}


def _check_moe(checkpoint, quant_config, adapters, block, experts, problems) -> None:
    """One FusedMoE layer: every expert's gate/up/down tensors into w13_* / w2_* parameters, expert by expert."""
    tags = checkpoint.tags()
    check = _LayerCheck(checkpoint, block, problems)
    expert_tags = {tags[f"{block}.{e}.{p}.weight"] for e, p in experts}
    if len(expert_tags) != 1:
        check.problem(block, f"experts mix {', '.join(sorted(expert_tags))}; vLLM-Ascend loads one scheme per MoE layer")
        return
    tag = expert_tags.pop()
    names = _expert_names(quant_config.packed_modules_mapping)
    unknown = sorted({p for _, p in experts} - set(names))
    if unknown:
        check.problem(block, f"expert projections named {', '.join(unknown)}; vLLM-Ascend loads this model's experts "
                             f"as {', '.join(names)} and would never load these")
        return
    indices = sorted({e for e, _ in experts})
    gate = next(p for p, (_, shard) in names.items() if shard == 0)
    if f"{block}.{indices[0]}.{gate}.weight" not in checkpoint.tensors:
        check.problem(block, f"expert {indices[0]} has no {gate}.weight")
        return
    intermediate, hidden = logical_shape(tag, checkpoint.tensors[f"{block}.{indices[0]}.{gate}.weight"].shape)
    layer = LAYER_CLASSES["FusedMoE"]()
    layer.moe_config = SimpleNamespace(num_logical_experts=len(indices), num_experts=len(indices))
    try:
        method = quant_config.get_quant_method(layer, block)
        method.create_weights(layer, len(indices), hidden, intermediate, checkpoint.serving_dtype)
    except Exception as exc:  # noqa: BLE001
        check.problem(block, f"vLLM-Ascend refuses this MoE layer ({tag}): {type(exc).__name__}: {exc}")
        return
    params = _params(layer)
    for position, expert in enumerate(indices):
        for proj, (group, shard) in names.items():
            member = f"{block}.{expert}.{proj}"
            stored = {n[len(member) + 1:] for n in checkpoint.tensors if n.startswith(member + ".")}
            for param_name in [n for n in params if n.startswith(f"{group}_")]:
                suffix = param_name[len(group) + 1:]
                if suffix not in stored:
                    check.problem(f"{member}.{suffix}", f"vLLM-Ascend's {tag} scheme reads {param_name} for every "
                                                        "expert, but this expert's tensor is missing")
            for suffix in sorted(stored):
                param = params.get(f"{group}_{suffix}")
                landing = None
                if param is not None:
                    shape = list(param[position].shape)
                    if shard is not None:
                        shape[0] //= 2
                    landing = _Landing(f"{group}_{suffix}", param, tuple(shape))
                check.land(f"{member}.{suffix}", landing, tag)
    check.missing(params, set(), tag)


def _check_attention(checkpoint, quant_config, adapters, problems) -> None:
    description = checkpoint.description
    hf = checkpoint.config
    if description.get("fa_quant_type"):
        for key in [k for k in checkpoint.tensors if k.endswith(".fa_k.scale")]:
            attention = key[: -len(".fa_k.scale")]
            if "kv_lora_rank" not in hf:
                problems.append(Problem(ENGINE, attention, (
                    "FAQuant scales on non-MLA attention: vLLM-Ascend maps fa_q/fa_k/fa_v only into DeepSeek-style "
                    "MLA attention (mla_attn) and uses kv_lora_rank, so this model fails to load")))
                continue
            _check_fa(checkpoint, quant_config, attention, problems)
    if description.get("kv_cache_type") == "C8":
        for key in [k for k in checkpoint.tensors if k.endswith((".kv_cache_scale", ".kv_cache_offset"))]:
            mapped = quant_config.get_cache_scale(key)
            if mapped is None:
                problems.append(Problem(ENGINE, key, "vLLM-Ascend maps only k_proj/v_proj kv_cache_scale/_offset"))
                continue
            info = checkpoint.tensors[key]
            if not info.dtype.is_floating_point:
                problems.append(Problem(ENGINE, key, f"is {_dt(info.dtype)}; vLLM-Ascend reads float C8 scales"))
    elif any(k.endswith(".kv_cache_scale") for k in checkpoint.tensors):
        problems.append(Problem(ENGINE, "kv_cache_type", "KV-cache scales are stored, but the description lacks "
                                                         "kv_cache_type: \"C8\", so vLLM-Ascend never enables C8"))


def _check_fa(checkpoint, quant_config, attention, problems) -> None:
    layer = LAYER_CLASSES["AttentionLayerBase"]()
    heads = int(checkpoint.config.get("num_attention_heads", 0))
    layer.num_heads, layer.num_kv_heads = heads, heads  # MLA keeps one latent per head for the FA scales
    check = _LayerCheck(checkpoint, attention, problems)
    try:
        method = quant_config.get_quant_method(layer, f"{attention}.mla_attn")
        method.create_weights(layer)
    except Exception as exc:  # noqa: BLE001
        check.problem(attention, f"vLLM-Ascend refuses FAQuant here: {type(exc).__name__}: {exc}")
        return
    params = _params(layer)
    for suffix in params:
        name = f"{attention}.{suffix}"
        check.land(name, _Landing(suffix, params[suffix], tuple(params[suffix].shape)), "FAKQuant")
    check.missing(params, set(), "FAKQuant")


def check(checkpoint: EngineCheckpoint, platform: str = "default") -> list[Problem]:
    """Every reason vLLM-Ascend (0.23 code path; `platform` "310p" for Atlas 300I) would not serve `checkpoint`."""
    problems: list[Problem] = []
    if checkpoint.layout != "ascendv1":
        return [Problem(ENGINE, checkpoint.description_file.name,
                        "vLLM-Ascend reads quant_model_description.json (an ascendv1 checkpoint); this is MindIE-SD output")]
    tags = checkpoint.tags()
    for name in tags:
        if name not in checkpoint.tensors and not name.endswith(".quant_type"):
            problems.append(Problem(ENGINE, name, "described but not stored in any *.safetensors file"))
    with _engine(checkpoint, platform) as (quant_config, adapters):
        for layer_name, members in _linear_groups(tags, quant_config.packed_modules_mapping).items():
            _check_linear(checkpoint, quant_config, adapters, layer_name, members, problems)
        blocks: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for key, tag in tags.items():
            match = _EXPERT.match(key[: -len(".weight")]) if key.endswith(".weight") else None
            if match and tag not in _NON_LINEAR_TAGS:
                blocks[match["block"]].append((int(match["index"]), match["proj"]))
        for block, experts in blocks.items():
            _check_moe(checkpoint, quant_config, adapters, block, experts, problems)
        _check_attention(checkpoint, quant_config, adapters, problems)
    return problems
