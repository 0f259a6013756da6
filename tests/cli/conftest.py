"""Fixtures of the CLI tests: `cli_env` lives in tests/conftest.py (the SD tests use it too)."""
