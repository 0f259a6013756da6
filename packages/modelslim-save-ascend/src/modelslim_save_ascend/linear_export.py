"""The ascendv1 exporters, by tag: they live with the tag registry (modelslim_core/formats/exporters.py)."""

from __future__ import annotations

from modelslim_core.formats.exporters import ExportDtypes, Exported, Exporter, deq_scale_tensor, quant_bias_tensor
from modelslim_core.formats.tags import TAGS

#: tag -> exporter, for every tag the registry gives an ascendv1 exporter.
EXPORTERS: dict[str, Exporter] = TAGS.exporters()

__all__ = ["EXPORTERS", "ExportDtypes", "Exported", "Exporter", "deq_scale_tensor", "quant_bias_tensor"]
