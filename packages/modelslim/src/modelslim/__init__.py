"""ModelSlim: the `msmodelslim` command and the quick-quantization application."""
