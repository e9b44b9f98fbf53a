"""The A/B gateway: one endpoint that splits live traffic across registry aliases.

It fronts scoring backends (one per alias), speaks MLflow's scoring protocol unchanged, follows
alias moves in the registry live, and adds what a serving platform needs: API keys with roles,
sticky weighted assignment, micro-batching, metrics, request ids, an inference log for A/B tests.
It holds no model logic. Its parts:

- the data plane (``scoring``): a request through authenticate -> parse -> choose -> send ->
  answer -> record, around the pure decision of ``routing`` (``split`` for the weights);
  ``protocol``, ``batching``, ``forwarding`` and ``backend_http`` are its stages;
- the control plane (``control``): following the registry, starting backends, the A/B autopilot;
- what both share (``state``), and the HTTP shell that wires them (``app``, ``cli``).
"""
