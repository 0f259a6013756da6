"""Rebuilding a model from a saved checkpoint on top of the float model's architecture.

The architecture comes from the float model's config; every parameter must then be accounted for by the
checkpoint — a FLOAT tensor of the right dtype and shape, or the exact tensor set of a quantized linear's
kernel. Anything missing, extra, mis-typed, mis-shaped or tagged with an unknown type is an error naming
the tensor: loading is the conformance check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from modelslim_core.errors import CheckpointError, ModelError
from modelslim_core.models.base import read_config_json, source_dtype_of
from modelslim_core.reference_runtime.attention import AttentionPlan, install_attention, plan_attention
from modelslim_core.reference_runtime.checkpoint import DESCRIPTION, SavedCheckpoint
from modelslim_core.formats.kernels import KERNELS, LinearShape, TensorSpec
from modelslim_core.reference_runtime.multimodal import fused_parts, omni_thinker, saved_to_module_name
from modelslim_core.reference_runtime.stacked_experts import stacked_expert_parts
from modelslim_core.smoothing.fusion import add_output_bias
from modelslim_core.reference_runtime.rotations import install_online_rotations, plan_online_rotations

MAX_LISTED = 5


@dataclass
class Plan:
    """What the checkpoint must hold for this architecture, and which kernel rebuilds each linear."""

    specs: dict[str, TensorSpec] = field(default_factory=dict)
    quantized: dict[str, tuple[str, LinearShape]] = field(default_factory=dict)  # linear name -> (tag, shape)
    attention: AttentionPlan = field(default_factory=AttentionPlan)  # KV-cache / FA3 tensors and taps


def build_skeleton(model_path: Path, dtype: torch.dtype, trust_remote_code: bool = False) -> nn.Module:
    """The float model's architecture with every parameter on `meta`: each one is then read from the checkpoint
    (or replaced by a kernel), so random initialisation would be thrown away (it was a third of the load).

    MoE experts are split into per-expert linears (models/moe.py): the checkpoint stores, and vLLM-Ascend
    loads, one tensor set per expert, and each quantized expert needs its own kernel; the split module
    computes exactly what the fused one does, so the logits stay comparable with the float model.
    """
    from transformers import AutoConfig

    from modelslim_core.models.base import instantiate_from_config
    from modelslim_core.models.default import model_class_for
    from modelslim_core.models.moe import prepare_moe_model
    from modelslim_core.models.weights import parameters_on_meta

    try:
        config = AutoConfig.from_pretrained(model_path, local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelError(f"cannot read the model config in {str(model_path)!r}: {exc}", "pass the float model's directory.") from None
    served = omni_thinker(config)  # an Omni release serves (and quantizes) only its thinker
    cls, config = served if served is not None else (model_class_for(config, trust_remote_code), config)
    with parameters_on_meta():
        model = prepare_moe_model(instantiate_from_config(cls, config, dtype, trust_remote_code))
    return model.eval().requires_grad_(False)


def _group_size(checkpoint: SavedCheckpoint) -> int:
    value = checkpoint.description.get("group_size", 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CheckpointError(f"{checkpoint.path}: group_size must be a non-negative integer, got {value!r}.",
                              "re-run the quantization.")
    return value


def adopt_smoothing_biases(model: nn.Module, checkpoint: SavedCheckpoint) -> None:
    """Centring smoothing (iter_smooth / smooth_quant with `symmetric: false`) gives norms and linears a bias
    the float architecture lacks; give those modules a bias so the checkpoint's `<module>.bias` has a place."""
    for name in sorted(checkpoint.names()):
        owner_name, _, leaf = name.rpartition(".")
        if leaf != "bias" or not owner_name:
            continue
        try:
            owner = model.get_submodule(owner_name)
        except AttributeError:
            continue  # reported as an extra tensor by validate()
        if getattr(owner, "bias", None) is None and isinstance(getattr(owner, "weight", None), torch.Tensor):
            add_output_bias(owner)


def plan_for(model: nn.Module, checkpoint: SavedCheckpoint, source_dtype: torch.dtype | None) -> Plan:
    plan = Plan()
    group_size = _group_size(checkpoint)
    serving = (checkpoint.description.get("metadata") or {}).get("serving_dtype")
    serving_dtype = getattr(torch, serving) if serving in ("bfloat16", "float16") else None
    covered: set[str] = set()
    for name, module in model.named_modules():
        tag = checkpoint.tags.get(f"{name}.weight")
        if not isinstance(module, nn.Linear) or tag in (None, "FLOAT"):
            continue
        kernel = KERNELS.get(tag)
        if kernel is None:
            raise CheckpointError(
                f"{name}.weight is tagged {tag!r}, a type the reference runtime does not know.",
                f"known types: FLOAT, {', '.join(KERNELS)}.",
            )
        shape = LinearShape(module.out_features, module.in_features, module.bias is not None, source_dtype, name, group_size,
                            serving_dtype)
        plan.quantized[name] = (tag, shape)
        for suffix, spec in kernel.expected(shape).items():
            plan.specs[f"{name}.{suffix}"] = spec
        covered.update(f"{name}.{p}" for p, _ in module.named_parameters())
    for pname, param in model.named_parameters(remove_duplicate=False):
        if pname not in covered:
            plan.specs[pname] = TensorSpec((source_dtype or param.dtype,), tuple(param.shape))
    plan.attention = plan_attention(model, checkpoint, source_dtype)
    plan.specs.update({name: spec for name, (spec, _) in plan.attention.specs.items()})
    return plan


def _problems(plan: Plan, checkpoint: SavedCheckpoint) -> list[str]:
    saved = checkpoint.names()
    problems = [f"{name} is missing (expected {spec.describe()})" for name, spec in plan.specs.items() if name not in saved]
    # FLOAT tensors the saver carried over from the source beside the model (MTP layers, models/mtp.py); the
    # prefixes are the release's names, which transformers' rules may rename (Step-3.7: `model.layers.N`)
    carried = tuple((checkpoint.description.get("metadata") or {}).get("carried_float") or ())
    extra = [name for name in sorted(saved - set(plan.specs))
             if not (carried and checkpoint.stored_name(name).startswith(carried)
                     and checkpoint.tags.get(name) == "FLOAT")]
    problems += [f"{name} is not part of this model's format (tag {checkpoint.tags[name]})" for name in extra]
    for name, spec in plan.specs.items():
        if name not in saved:
            continue
        dtype, shape = checkpoint.meta(name)
        if dtype not in spec.dtypes or not spec.allows(shape):
            found = f"{str(dtype).removeprefix('torch.')} {list(shape)}"
            problems.append(f"{name} is {found}, expected {spec.describe()}")
        expected_tag = plan.attention.specs[name][1] if name in plan.attention.specs else next(
            (tag for linear, (tag, _) in plan.quantized.items() if name.startswith(linear + ".")), "FLOAT")
        actual_tag = checkpoint.tags[name]
        if actual_tag != expected_tag and not (name.endswith(".bias") and actual_tag == "FLOAT"):
            problems.append(f"{name} is tagged {actual_tag}, expected {expected_tag}")
    return problems


def validate(plan: Plan, checkpoint: SavedCheckpoint) -> None:
    problems = _problems(plan, checkpoint)
    if problems:
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise CheckpointError(
            f"{checkpoint.path} does not match the model: " + "; ".join(problems[:MAX_LISTED]) + more + ".",
            f"check that --model_path is the float model this checkpoint was made from, and that {DESCRIPTION} "
            "and the weight files belong to one run.",
        )


def _set_parameter(model: nn.Module, name: str, value: torch.Tensor) -> None:
    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    current = getattr(owner, attr)
    setattr(owner, attr, nn.Parameter(value.to(current.dtype), requires_grad=False))


def check_materialized(model: nn.Module, checkpoint: SavedCheckpoint) -> None:
    """Every parameter and buffer holds data: the skeleton is built on `meta`, so one the plan did not fill
    would otherwise surface as an obscure 'meta tensor' error in the first forward."""
    empty = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if empty:
        more = f" (and {len(empty) - MAX_LISTED} more)" if len(empty) > MAX_LISTED else ""
        raise CheckpointError(
            f"{checkpoint.path}: the reference runtime found no value for {', '.join(empty[:MAX_LISTED])}{more}.",
            "the checkpoint does not cover this architecture; check that --model_path is the float model this "
            "checkpoint was made from.",
        )


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def load_quantized_model(
    model_path: str | Path, quant_path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
) -> nn.Module:
    """The float model's architecture computing with the saved (quantized) tensors (`trust_remote_code`: build it
    with the modeling code the model directory ships, for releases transformers has no class for)."""
    model_path, quant_path = Path(model_path), Path(quant_path)
    checkpoint = SavedCheckpoint(quant_path)
    source_dtype = source_dtype_of(read_config_json(model_path))
    model = build_skeleton(model_path, dtype, trust_remote_code)
    checkpoint.rename(saved_to_module_name(model))
    checkpoint.split(fused_parts(model))
    checkpoint.split(stacked_expert_parts(model))
    adopt_smoothing_biases(model, checkpoint)
    plan = plan_for(model, checkpoint, source_dtype)
    validate(plan, checkpoint)
    rotations = plan_online_rotations(model, checkpoint)
    module_params = [n for n in plan.specs if n not in plan.attention.specs]
    kernel_tensors: dict[str, dict[str, torch.Tensor]] = {linear: {} for linear in plan.quantized}
    for name in module_params:
        linear, _, suffix = name.rpartition(".")
        if linear in kernel_tensors:
            kernel_tensors[linear][suffix] = checkpoint.tensor(name)
        else:
            _set_parameter(model, name, checkpoint.tensor(name))
    for linear, (tag, shape) in plan.quantized.items():
        _replace(model, linear, KERNELS[tag].build(kernel_tensors[linear], shape))
    install_attention(model, plan.attention, checkpoint)
    install_online_rotations(model, rotations)
    check_materialized(model, checkpoint)
    checkpoint.close()
    return model.to(device)


def describe_checkpoint(quant_path: str | Path) -> dict:
    """The description's global keys (for reports)."""
    description = json.loads((Path(quant_path) / DESCRIPTION).read_text(encoding="utf-8"))
    return {k: description[k] for k in ("version", "model_quant_type", "group_size") if k in description}
