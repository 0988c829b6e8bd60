"""The one exception base of retrspect.

Every error retrspect raises on purpose derives from :class:`RetrspectError`:
it carries what it is about (a file, a spectrum, a model, a query argument)
and the reason, ``str()`` reads ``"<about>: <reason>"``, and it survives
pickling, so errors raised in ingest worker processes (process pools, Dask)
arrive whole.  Subclasses also derive from the built-in exception that
callers catch for that kind of problem (``ValueError`` for bad input).
"""
from __future__ import annotations


class RetrspectError(Exception):
    """An error with the thing it is about and the reason, picklable.

    Parameters
    ----------
    path : str or os.PathLike or None
        The file (or other named thing) the error is about; None when the
        reason says it all.
    reason : str
        What is wrong, in words a user can act on.
    """

    def __init__(self, path, reason=None):
        if reason is None:  # a one-argument error: the reason alone
            path, reason = None, path
        self.path = None if path is None else str(path)
        self.reason = str(reason)
        super().__init__(self.reason if self.path is None
                         else f"{self.path}: {self.reason}")

    def __reduce__(self):
        return type(self), (self.path, self.reason)


class ReaderError(RetrspectError, ValueError):
    """A file that cannot be read as a spectrum."""


class ModelError(RetrspectError, ValueError):
    """An ONNX model file that does not follow the contract, or does not fit
    what the caller expects (kind, grid, latent dimension, metric)."""
