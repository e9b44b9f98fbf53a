"""The one error type of batch scoring: printed as one line by the CLI, with a non-zero exit."""


class BatchError(Exception):
    """A problem with the job as a whole (input missing, output exists, model unknown)."""
