"""Domain error hierarchy; api.py maps each class to one HTTP status in a single handler."""


class FittingRoomError(Exception):
    """Base of every error the domain raises on purpose; `str(err)` is safe to show a user."""


class InvalidRequestError(FittingRoomError):
    """The request is well-formed JSON but asks for something the rules forbid (HTTP 422)."""


class NotFoundError(FittingRoomError):
    """A room, session or alert the caller named does not exist (HTTP 404)."""


class ConflictError(FittingRoomError):
    """The request contradicts the current state, e.g. a session that is not in that room (HTTP 409)."""


class DataContractError(FittingRoomError):
    """An input file does not follow the data contract; the message names the file and row or column."""


class ModelLoadError(FittingRoomError):
    """A model artifact is missing, unverifiable or built for another feature schema or library version."""


class AuthenticationError(FittingRoomError):
    """No API key, or one the service does not know (HTTP 401)."""


class PermissionDeniedError(FittingRoomError):
    """The key's role may not use this endpoint (HTTP 403)."""


class ServiceUnavailableError(FittingRoomError):
    """A dependency (verified models, the database) is not ready (HTTP 503)."""
