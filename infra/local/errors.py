"""AWS-shaped API errors: the status code and x-amzn-ErrorType that botocore turns into exceptions."""

from __future__ import annotations


class ApiError(Exception):
    status = 400
    error_type = "InvalidArgumentException"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(ApiError):
    error_type = "InvalidArgumentException"


class ResourceNotFound(ApiError):
    status = 404
    error_type = "ResourceNotFoundException"


class ResourceInUse(ApiError):
    error_type = "ResourceInUseException"


class ClientLimitExceeded(ApiError):
    error_type = "ClientLimitExceededException"


class ConnectionLimitExceeded(ApiError):
    error_type = "ConnectionLimitExceededException"


class VersionMismatch(ApiError):
    error_type = "VersionMismatchException"


class TagsPerResourceExceeded(ApiError):
    error_type = "TagsPerResourceExceededLimitException"


class UnknownOperation(ApiError):
    status = 404
    error_type = "UnknownOperationException"
