"""One error type for the whole platform, and one table from its reasons to gRPC status codes.

Every failure Bulwark reports, on a dead-letter record or as a gRPC status, carries a `Reason`: a short
machine-readable string a client or an operator can act on. `BulwarkError.retryable` separates failures
of infrastructure (retry later, nothing skipped) from failures of content (the record or request is bad
and retrying will not help).
"""

from __future__ import annotations

import enum

import grpc


class Reason(str, enum.Enum):
    """Machine-readable cause of a failure, shared by dead-letter records and gRPC statuses."""

    # The record or request itself is bad.
    NOT_UTF8 = "NOT_UTF8"
    NOT_JSON = "NOT_JSON"
    SCHEMA_VIOLATION = "SCHEMA_VIOLATION"
    UNKNOWN_EVENT_TYPE = "UNKNOWN_EVENT_TYPE"
    UNSUPPORTED_SCHEMA_VERSION = "UNSUPPORTED_SCHEMA_VERSION"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    POLICY_VIOLATION = "POLICY_VIOLATION"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    DECRYPTION_FAILED = "DECRYPTION_FAILED"
    HANDLER_ERROR = "HANDLER_ERROR"
    # The request names something that does not exist or is not allowed now.
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    # A part of the platform is down or slow: retry, never skip.
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"


# Reasons a consumer retries (uncommitted, with back-off) instead of dead-lettering.
RETRYABLE_REASONS = frozenset({Reason.UNAVAILABLE, Reason.DEADLINE_EXCEEDED})

GRPC_STATUS: dict[Reason, grpc.StatusCode] = {
    Reason.NOT_UTF8: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.NOT_JSON: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.SCHEMA_VIOLATION: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.UNKNOWN_EVENT_TYPE: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.UNSUPPORTED_SCHEMA_VERSION: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.PAYLOAD_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.POLICY_VIOLATION: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.SIGNATURE_INVALID: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.DECRYPTION_FAILED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.HANDLER_ERROR: grpc.StatusCode.INTERNAL,
    Reason.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Reason.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Reason.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Reason.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Reason.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    Reason.INTERNAL: grpc.StatusCode.INTERNAL,
}


class BulwarkError(Exception):
    """A failure with a reason, a message a person can act on, and whether retrying may help.

    The message must never hold a personal value: it names fields, limits and identifiers only.
    """

    def __init__(self, reason: Reason, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.reason = Reason(reason)
        self.message = message
        self.retryable = self.reason in RETRYABLE_REASONS if retryable is None else retryable

    @property
    def grpc_status(self) -> grpc.StatusCode:
        """The gRPC status code this error is reported with."""
        return GRPC_STATUS[self.reason]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason.value}: {self.message})"


class SettingsError(BulwarkError):
    """A setting read from the environment is missing or malformed."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.INVALID_ARGUMENT, message)


class UnavailableError(BulwarkError):
    """A part of the platform (broker, Redis, Triton, a peer service) cannot be reached."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.UNAVAILABLE, message, retryable=True)


class InvalidArgumentError(BulwarkError):
    """A request or record field is malformed; the message names the field."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.INVALID_ARGUMENT, message)


class NotFoundError(BulwarkError):
    """A named model, version, key or record does not exist."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.NOT_FOUND, message)


class SignatureError(BulwarkError):
    """An artifact or report failed signature or digest verification."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.SIGNATURE_INVALID, message)


class CryptoError(BulwarkError):
    """Decryption failed: wrong key, forgotten key, or tampered ciphertext."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.DECRYPTION_FAILED, message)
