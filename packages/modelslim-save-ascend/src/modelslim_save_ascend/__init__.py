"""Savers for Ascend serving engines: `ascendv1_saver` writes the format vLLM-Ascend and MindIE load."""
