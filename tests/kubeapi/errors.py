"""API errors, each one a ``Status`` object the way the real server writes it.

Rules:
* every failure the server reports is an ``APIError`` turned into one JSON
  ``Status`` body (kind Status, apiVersion v1, status Failure) with the HTTP
  code, reason and details the real server uses for the same failure;
* ``details.kind`` is the resource (plural, "services") for NotFound,
  AlreadyExists and Conflict, and the Kind ("Service") for Invalid, as
  apimachinery's ``errors.New*`` helpers do; ``details.group`` is left out for
  the core group.
"""

from __future__ import annotations


class APIError(Exception):
    """One failed request: raised anywhere, answered by the HTTP handler."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.retry_after = retry_after

    def status(self) -> dict:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(resource, name: str, **extra) -> dict:
    details = {"name": name}
    if resource.group:
        details["group"] = resource.group
    details["kind"] = resource.plural
    details.update(extra)
    return details


def not_found(resource, name: str) -> APIError:
    return APIError(404, "NotFound", f'{resource.qualified_plural} "{name}" not found',
                    _details(resource, name))


def no_route() -> APIError:
    return APIError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(resource, name: str) -> APIError:
    return APIError(409, "AlreadyExists",
                    f'{resource.qualified_plural} "{name}" already exists',
                    _details(resource, name))


def conflict(resource, name: str, why: str | None = None) -> APIError:
    why = why or ("the object has been modified; please apply your changes to the latest "
                  "version and try again")
    return APIError(409, "Conflict",
                    f'Operation cannot be fulfilled on {resource.qualified_plural} "{name}": {why}',
                    _details(resource, name))


def invalid(resource, name: str, causes: list[tuple[str, str, str]]) -> APIError:
    """422 Invalid; ``causes`` are (reason, field, message) as field.Error gives them."""
    text = ", ".join(f"{field}: {message}" for _, field, message in causes)
    if len(causes) > 1:
        text = f"[{text}]"
    details = {"name": name}
    if resource.group:
        details["group"] = resource.group
    details["kind"] = resource.kind
    details["causes"] = [{"reason": r, "message": m, "field": f} for r, f, m in causes]
    return APIError(422, "Invalid", f'{resource.qualified_kind} "{name}" is invalid: {text}',
                    details)


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def method_not_allowed() -> APIError:
    return APIError(405, "MethodNotAllowed",
                    "the server does not allow this method on the requested resource", {})


def unsupported_media_type(content_type: str, accepted: list[str]) -> APIError:
    return APIError(415, "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: {', '.join(accepted)}", {})


def expired(message: str) -> APIError:
    return APIError(410, "Expired", message)


def too_large_resource_version(wanted: int, current: int) -> APIError:
    return APIError(504, "Timeout",
                    f"Too large resource version: {wanted}, current: {current}",
                    {"causes": [{"reason": "ResourceVersionTooLarge",
                                 "message": "Too large resource version"}],
                     "retryAfterSeconds": 1}, retry_after=1)
