"""The quick-quantization application behind `msmodelslim quant`."""
