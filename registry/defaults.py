"""The registry's names and default thresholds, import-light: the command line's options show
them in ``--help`` before MLflow is imported, and the modules that act on them import them here."""

from mnist_mlops.common.names import CHALLENGER, CHAMPION  # noqa: F401  (re-exported)

# Promotion gate
DEFAULT_TOLERANCE = 0.002  # the candidate may trail the champion by at most 0.2 points
DEFAULT_MIN_ACCURACY = 0.97

# A/B decisions (``registry.abtest.Policy``)
AB_ALPHA = 0.05  # the test's error rate, valid under continuous monitoring
AB_TAU = 0.05  # the accuracy difference the unpaired test is tuned to (5 points)
AB_MIN_FEEDBACK = 30  # per arm (or discordant pairs in shadow mode) before any decision
# An answer below this confidence is one a person should check: the served model's default
# ``uncertain_below`` (serve/model/schema.py, which imports nothing of the project; a test ties them)
AB_UNCERTAIN_BELOW = 0.8
