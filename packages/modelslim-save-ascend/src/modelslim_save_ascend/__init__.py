"""Savers for Ascend serving engines: `ascendv1_saver` (vLLM-Ascend, MindIE) and `mindie_format_saver` (MindIE-SD)."""
