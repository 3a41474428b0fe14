"""Errors that mean bad input data, not a bug: jobs print them as one line and exit 2."""


class DataError(ValueError):
    """Input data that cannot be used as it is; the message names the file, the column and
    how many rows."""
