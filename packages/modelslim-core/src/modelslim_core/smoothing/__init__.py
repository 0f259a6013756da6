"""Smoothing (SmoothQuant family) math shared by the smoothing processors."""
