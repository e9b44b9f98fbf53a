"""The serving frameworks a user would pick instead of the gateway, in the project's harness:
Ray Serve and BentoML, each serving the same pyfunc with its own recommended batching
(``harness``). The peers' own files (``ray_serve_app``, ``bentoml_service``) import nothing of
this project, so this package imports nothing at module level either."""
