"""The one exception type training raises for problems a user can fix.

Entry points print ``str(error)`` as one line and exit non-zero; nothing else is shown, because the
message already says what went wrong and how to fix it.
"""


class TrainingError(Exception):
    """A problem with the user's input or environment (data, parameters, tracking store)."""
