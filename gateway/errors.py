"""One error hierarchy for everything the gateway answers with a non-2xx status.

Every error is rendered in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, so the
official clients raise their proper exception classes (``BadRequestError``, ``NotFoundError``, ...)::

    GatewayError                      500 api_error
    ├── InvalidRequest                400 invalid_request_error
    │   ├── ImageUnavailable          400 invalid_request_error   (image_url could not be fetched/decoded)
    │   └── EmbeddingsDisabled        400 invalid_request_error
    ├── AuthenticationFailed          401 authentication_error
    ├── ModelNotFound                 404 invalid_request_error   (code model_not_found)
    ├── RouteNotFound                 404 invalid_request_error
    ├── MethodNotAllowed              405 invalid_request_error
    ├── PayloadTooLarge               413 invalid_request_error
    ├── UnsupportedMediaType          415 invalid_request_error
    ├── ServerBusy                    429 rate_limit_error        (every worker slot is taken)
    ├── UpstreamRateLimited           429 rate_limit_error        (the backend said 429)
    ├── UpstreamError                 502 api_error               (the backend answered with an error)
    ├── UpstreamUnavailable           503 api_error               (no backend could be reached)
    └── UpstreamTimeout               504 api_error               (deadline or read timeout)
"""

from __future__ import annotations

import json
from typing import Any, ClassVar


class GatewayError(Exception):
    status: int = 500
    error_type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status  # a backend's own 4xx keeps its status when relayed
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode()


class InvalidRequest(GatewayError):
    status = 400
    error_type = "invalid_request_error"


class ImageUnavailable(InvalidRequest):
    default_code = "invalid_image"


class EmbeddingsDisabled(InvalidRequest):
    default_code = "embeddings_disabled"


class AuthenticationFailed(GatewayError):
    status = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class ModelNotFound(GatewayError):
    status = 404
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class RouteNotFound(GatewayError):
    status = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    error_type = "invalid_request_error"
    default_code = "unsupported_media_type"


class ServerBusy(GatewayError):
    status = 429
    error_type = "rate_limit_error"
    default_code = "server_busy"


class UpstreamRateLimited(GatewayError):
    status = 429
    error_type = "rate_limit_error"
    default_code = "upstream_rate_limited"


class UpstreamError(GatewayError):
    status = 502
    error_type = "api_error"
    default_code = "upstream_error"


class UpstreamUnavailable(GatewayError):
    status = 503
    error_type = "api_error"
    default_code = "upstream_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    error_type = "api_error"
    default_code = "upstream_timeout"
