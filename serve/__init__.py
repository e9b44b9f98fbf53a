"""Serving: the model package (``model``), the A/B gateway (``gateway``), batch scoring
(``batch``), and the backend processes the gateway starts (``backend``, ``warm_pool``).

``model`` ships inside every logged model under a name of its own (``mnist_mlops.train.export``),
so it imports nothing of the project: only itself, relatively, and the model's requirements.
"""
