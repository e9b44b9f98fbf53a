"""The life of a model version after training: registration, aliases and mirrored stages, gated
promotion, rollback, the promotion history and A/B analysis.

The MLflow model registry is the source of truth. ``registry.api`` is the small Python API the
CLI and ``serve/`` use; nothing here runs at import time.
"""
