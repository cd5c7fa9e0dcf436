"""The project's own error types.

Everything wrong with what a caller asked for (an argument of the wrong type,
shape or value, a damaged checkpoint, missing data) raises a subclass of
``NumpyVAEError``. They also subclass the built-in type a Python user expects
(``ValueError``, ``TypeError``, ``FileNotFoundError``), so ``except ValueError``
keeps working; the command line turns exactly these into one line and exit
status 2, and lets any other exception (a bug) show its traceback.
"""


class NumpyVAEError(Exception):
    """Base of every error about the caller's input."""


class InvalidValueError(NumpyVAEError, ValueError):
    """An argument has the right type but a wrong value, shape or content."""


class InvalidTypeError(NumpyVAEError, TypeError):
    """An argument has the wrong type (or dtype)."""
