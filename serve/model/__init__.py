"""The inference pipeline inside the MLflow model: decode -> preprocess -> CNN -> postprocess.

Shipped in the model's ``code_paths``; depends on torch, numpy, pandas, scipy, Pillow and mlflow
only (the logged requirements), never on the installed project.
"""
