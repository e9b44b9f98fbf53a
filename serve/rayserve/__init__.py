"""The model on Ray Serve (``mnist-gateway --engine ray``): MLflow's scoring app for every version
of the registered model in one Ray Serve application, multiplexed by version and scaled by Ray."""
