"""Runners: model_wise, layer_wise and auto scheduling of processors and savers over model units."""
