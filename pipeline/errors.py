"""Errors that are not bugs, which jobs print as one line: bad input data (exit code 2) and
a numerical fault that stopped training (exit code 1)."""


class DataError(ValueError):
    """Input data that cannot be used as it is; the message names the file, the column and
    how many rows."""


class NumericalFault(RuntimeError):
    """Training met a non-finite loss or gradient and stopped before applying it; the
    message says where, and which checkpoint (the last good one) is kept."""


FAULT_FILE = "numerical_fault.txt"  # in the run folder: what a worker that stopped on one wrote
