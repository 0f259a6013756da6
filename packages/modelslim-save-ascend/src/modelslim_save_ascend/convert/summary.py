"""`--dry-run` for a conversion: what each tensor becomes, from the headers alone (nothing read or written)."""

from __future__ import annotations

import math
from collections import Counter

from modelslim_core.service.base import QuantRequest

from modelslim_save_ascend.convert.plan import ConvertPlan, build_plan
from modelslim_save_ascend.convert.routes import FLOAT
from modelslim_save_ascend.convert.service import open_source
from modelslim_save_ascend.convert.spec import ConvertSpec

#: Tensors listed per target before the rest are counted.
SHOWN = 6


def describe_plan(plan: ConvertPlan, spec: ConvertSpec, request: QuantRequest) -> str:
    stored = Counter(tensor.producer.kind for tensor in plan.tensors)
    lines = [
        "Dry run: only the checkpoint's safetensors headers were read; nothing is written.",
        f"Source: {request.model_path}: {len(plan.tensors)} tensors ("
        + ", ".join(f"{kind} x{count}" for kind, count in sorted(stored.items())) + ")",
    ]
    for target in sorted({tensor.target for tensor in plan.tensors}):
        # Dequantized tensors first: they are the ones a conversion changes.
        chosen = sorted((tensor for tensor in plan.tensors if tensor.target == target), key=lambda t: t.producer.kind == FLOAT)
        names = [f"{t.name} {list(t.producer.shape)}" + (f" <- {t.producer.kind}" if t.producer.kind != FLOAT else "")
                 for t in chosen]
        rule = {spec.paths[t.rule] for t in chosen if t.rule is not None}
        lines.append(f"{target} x{len(chosen)}" + (f" ({', '.join(sorted(rule))})" if rule else "") + ":")
        lines.extend(f"  {name}" for name in names[:SHOWN])
        if len(names) > SHOWN:
            lines.append(f"  ... and {len(names) - SHOWN} more")
    largest = max((math.prod(t.producer.shape) for t in plan.tensors), default=0)
    lines.append(f"Output: {spec.output.type} in {request.save_path} (part_file_size {spec.output.part_file_size:g} GiB); "
                 f"largest tensor {largest} elements, converted one tensor at a time.")
    return "\n".join(lines)


def dry_run_text(spec: ConvertSpec, request: QuantRequest) -> str:
    return describe_plan(build_plan(spec, open_source(request)), spec, request)
