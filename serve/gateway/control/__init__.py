"""The gateway's control plane: following the registry, starting and stopping backends, and the
A/B decision with its automatic promotion. The data plane (``scoring``) never imports it; both
meet in the shared ``state`` and are wired together by the app factory (``app``)."""
