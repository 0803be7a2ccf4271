"""Triton: the model repository (configs, ensembles, the Python-backend postprocess model)."""
