"""The one exception type the registry raises for problems a user can fix.

Entry points print ``str(error)`` as one line and exit non-zero; nothing was changed.
"""


class RegistryError(Exception):
    """A problem the user can fix (unknown version, store unreachable, gate refused...)."""
