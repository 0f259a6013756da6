"""The YAML protocol: safe loading, the qconfig schema and the top-level `apiversion` + `spec` models."""
