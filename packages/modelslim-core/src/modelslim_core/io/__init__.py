"""Checkpoint input/output that stays within a bounded amount of memory."""
