"""Errors that are not bugs, which jobs print as one line: bad input data and an
unreachable tracking server (exit code 2), a numerical fault that stopped training (1)."""


class DataError(ValueError):
    """Input data that cannot be used as it is; the message names the file, the column and
    how many rows."""


class NumericalFault(RuntimeError):
    """Training met a non-finite loss or gradient and stopped before applying it; the
    message says where, and which checkpoint (the last good one) is kept."""


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached (or the store written) when a job starts."""


FAULT_FILE = "numerical_fault.txt"  # in the run folder: what a worker that stopped on one wrote
