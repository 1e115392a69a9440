"""The spec: YAML validated against a shipped JSON Schema, variables resolved, as attrs models."""

from runform.spec.load import load_spec, schema

__all__ = ["load_spec", "schema"]
