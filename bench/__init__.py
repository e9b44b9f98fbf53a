"""Benchmarks: ratios measured in one run, against the limit of the work itself (the bare network
in-process) and against the plain tools a user would otherwise use (``mlflow models serve`` alone,
a plain PyTorch loop). ``python -m bench`` (``make bench``); ``--quick`` is the CI smoke mode.
"""
