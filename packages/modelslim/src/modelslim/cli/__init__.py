"""The `msmodelslim` command line."""
