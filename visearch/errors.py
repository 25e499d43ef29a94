"""Errors visearch raises for bad requests: each says what was wrong and what to do instead.

The HTTP API maps :class:`NotFoundError` to 404, :class:`InvalidRequestError` to 422,
:class:`ConflictError` to 409 and :class:`ForbiddenError` to 403.
"""


class VisearchError(Exception):
    """Base class of visearch's own errors."""


class NotFoundError(VisearchError, LookupError):
    """An id or name (image, annotation, dataset, concept, model) does not exist."""


class InvalidRequestError(VisearchError, ValueError):
    """A request that cannot be answered as asked (bad combination, bad range, ...)."""


class NotEmbeddedError(InvalidRequestError):
    """The query item has no vector for the model yet (it is queued or failed)."""


class ConflictError(VisearchError):
    """The request clashes with what exists (a dataset or collection name already taken)."""


class ForbiddenError(VisearchError):
    """A request for something visearch will not give out (a file outside the media roots)."""
