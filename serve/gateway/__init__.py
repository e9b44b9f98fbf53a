"""The A/B gateway: one endpoint that splits live traffic across registry aliases.

It fronts ``mlflow models serve`` backends (one per alias), speaks MLflow's scoring protocol
unchanged, follows alias moves in the registry live, and adds what a serving platform needs:
API keys with roles, sticky weighted assignment, metrics, request ids. It holds no model logic.
"""
