"""Model families, one module each; the registry below is the one place they are listed."""

from bulwark.families.base import Family, LoadedModel, TensorSpec, script_bytes, state_bytes
from bulwark.families.mlp import MLPFamily
from bulwark.families.text import TextFamily
from bulwark.plugins import Registry

FAMILIES: Registry[Family] = Registry("model family")
FAMILIES.register(MLPFamily())
FAMILIES.register(TextFamily())

__all__ = ["FAMILIES", "Family", "LoadedModel", "TensorSpec", "script_bytes", "state_bytes"]
