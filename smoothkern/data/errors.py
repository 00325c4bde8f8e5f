"""The one error type of the data loaders."""


class DataError(ValueError):
    """A data file or folder is missing, unreadable or malformed."""
