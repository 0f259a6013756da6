"""The adapter used for any model type no family claims: generic transformers decoder-layer handling."""

from modelslim_core.models.base import ModelAdapter


class DefaultAdapter(ModelAdapter):
    family = "default"
