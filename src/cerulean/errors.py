"""Cerulean's error hierarchy, rendered in Azure OpenAI's wire shapes.

Every error a client can see is an :class:`APIError`; each class knows its status code and its
exact Azure body (see ``shared/reference/azure-openai-wire.md`` §2.2, §5)::

    CeruleanError
    ├── APIError                        rendered by :func:`cerulean.api.middleware.error_response`
    │   ├── ResourceNotFound            404 {"error":{"code":"404","message":"Resource not found"}}
    │   ├── UnsupportedApiVersion       400 BadRequest: a dated api-version on /openai/v1
    │   ├── DeploymentNotFound          404 DeploymentNotFound
    │   ├── InvalidSubscriptionKey      401 wrong api-key
    │   ├── MissingCredentials          401 APIM body (no "error" wrapper), no/invalid bearer
    │   ├── PermissionDenied            401 a valid Entra token whose principal lacks the role
    │   ├── AuthenticationTypeDisabled  403 a key sent while the account disables local auth
    │   ├── InvalidRequest              400 invalid_request_error (message/type/param/code)
    │   │   ├── ObjectNotFound          404 the same shape: an unknown (or deleted) stored object
    │   │   ├── ContextLengthExceeded   400 context_length_exceeded
    │   │   ├── InputTooLong            400 an embeddings input beyond the model's context
    │   │   ├── FileTooLarge            413 a file over its purpose's limit
    │   │   └── NotCancellable          409 a batch that has already ended
    │   ├── OperationNotSupported       400 e.g. embeddings on a chat model's deployment
    │   ├── RequestTooLarge             413 invalid_request_error
    │   ├── ServiceUnavailable          503 temporarily unable to process
    │   ├── BadGateway                  502 an upstream failed or answered what it should not
    │   ├── GatewayTimeout              504 an upstream did not answer in time
    │   ├── ServerBusy                  429 every slot busy and the waiting line full
    │   ├── RateLimited                 429 a deployment's token or call rate limit (§5.3)
    │   ├── ArmError                    the management API's {"error":{"code","message"}} (§9)
    │   ├── StudioError                 a Studio request refused (sign-in, session, CSRF, origin)
    │   └── InternalServerError         500 server_error with the request id
    ├── ControlError                    a management operation refused (CLI and ARM API)
    └── EngineError                     raised by engines; services turn it into an APIError
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

__all__ = [
    "APIError",
    "ArmError",
    "BadGateway",
    "CeruleanError",
    "ContentFiltered",
    "ContextLengthExceeded",
    "ControlError",
    "DeploymentNotFound",
    "EngineError",
    "FileTooLarge",
    "GatewayTimeout",
    "InputTooLong",
    "InternalServerError",
    "InvalidRequest",
    "InvalidSubscriptionKey",
    "MissingCredentials",
    "NotCancellable",
    "ObjectNotFound",
    "OperationNotSupported",
    "PermissionDenied",
    "AuthenticationTypeDisabled",
    "RateLimited",
    "RequestTooLarge",
    "ResourceNotFound",
    "ServerBusy",
    "ServiceUnavailable",
    "StudioError",
    "UnsupportedApiVersion",
]


class CeruleanError(Exception):
    """Base of every error Cerulean raises on purpose."""


class EngineError(CeruleanError):
    """An engine could not serve a request (load failure, native error)."""


class ControlError(CeruleanError):
    """A management operation (``cerulean models/deployments`` or the ARM API) that cannot be done.

    ``reason`` classifies it (the ARM API answers 400, 404 or 409); ``code`` is ARM's error code.
    """

    def __init__(
        self, message: str, *, reason: Literal["invalid", "not_found", "conflict"], code: str
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.code = code


class APIError(CeruleanError):
    """An error with an HTTP status and an Azure-shaped JSON body."""

    status_code: ClassVar[int] = 500
    headers: dict[str, str]

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.headers = {}

    def body(self) -> dict[str, Any]:
        """The JSON body sent to the client."""
        raise NotImplementedError


class _CodeMessageError(APIError):
    """Errors whose wire body is ``{"error": {"code": ..., "message": ...}}``."""

    code: ClassVar[str] = ""
    default_message: ClassVar[str] = ""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class ResourceNotFound(_CodeMessageError):
    """Unknown route, or a missing/unknown ``api-version``."""

    status_code = 404
    code = "404"
    default_message = "Resource not found"


class UnsupportedApiVersion(_CodeMessageError):
    """A dated ``api-version`` on an ``/openai/v1`` route (§1.4)."""

    status_code = 400
    code = "BadRequest"
    default_message = "API version not supported"


class DeploymentNotFound(_CodeMessageError):
    """The deployment named in the path does not exist."""

    status_code = 404
    code = "DeploymentNotFound"
    default_message = (
        "The API deployment for this resource does not exist. If you created the deployment "
        "within the last 5 minutes, please wait a moment and try again."
    )


class InvalidSubscriptionKey(_CodeMessageError):
    """An ``api-key`` header was sent but matches neither account key."""

    status_code = 401
    code = "401"
    default_message = (
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
        "provide a valid key for an active subscription and use a correct regional API endpoint "
        "for your resource."
    )


class MissingCredentials(APIError):
    """No ``api-key`` and no valid bearer token: API Management's body, without a wrapper."""

    status_code = 401

    def __init__(self) -> None:
        super().__init__(
            "Unauthorized. Access token is missing, invalid, audience is incorrect "
            "(https://cognitiveservices.azure.com), or have expired."
        )

    def body(self) -> dict[str, Any]:
        return {"statusCode": 401, "message": self.message}


class PermissionDenied(_CodeMessageError):
    """A valid Entra ID token whose principal lacks the operation's data action: Azure's 401
    (not 403), naming the principal, the data action and the operation."""

    status_code = 401
    code = "PermissionDenied"

    def __init__(self, principal: str, data_action: str, operation: str) -> None:
        super().__init__(
            f"The principal `{principal}` lacks the required data action `{data_action}` to "
            f"perform `{operation}` operation."
        )


class AuthenticationTypeDisabled(_CodeMessageError):
    """An account key (``api-key``, or a bearer key) while ``disableLocalAuth`` is set."""

    status_code = 403
    code = "AuthenticationTypeDisabled"
    default_message = "Key based authentication is disabled for this resource."


class InvalidRequest(APIError):
    """A 400 ``invalid_request_error`` with OpenAI's four fields."""

    status_code = 400
    error_type: ClassVar[str | None] = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class ObjectNotFound(InvalidRequest):
    """A stored object (a response...) that does not exist, was deleted or has expired: OpenAI's
    404 body, which openai-python raises as ``NotFoundError``."""

    status_code = 404

    def __init__(self, kind: str, object_id: str) -> None:
        shown = object_id if len(object_id) <= 100 else object_id[:97] + "..."
        super().__init__(f"{kind} with id '{shown}' not found.")


class ContextLengthExceeded(InvalidRequest):
    """The prompt (plus the requested completion) does not fit the model's context."""

    def __init__(
        self,
        *,
        limit: int,
        prompt_tokens: int,
        completion_tokens: int | None,
        prompt: bool = False,
    ) -> None:
        if prompt:  # legacy completions: OpenAI's wording for a prompt
            super().__init__(
                _prompt_too_long(limit, prompt_tokens, completion_tokens),
                param="prompt",
                code="context_length_exceeded",
            )
            return
        if completion_tokens is None:
            message = (
                f"This model's maximum context length is {limit} tokens. However, your messages "
                f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
            )
        else:
            message = (
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + completion_tokens} tokens ({prompt_tokens} in the messages, "
                f"{completion_tokens} in the completion). Please reduce the length of the "
                "messages or completion."
            )
        super().__init__(message, param="messages", code="context_length_exceeded")


class InputTooLong(InvalidRequest):
    """An embeddings input has more tokens than the model reads: OpenAI's legacy wording."""

    def __init__(self, *, limit: int, tokens: int) -> None:
        super().__init__(
            f"This model's maximum context length is {limit} tokens, however you requested "
            f"{tokens} tokens ({tokens} in your prompt; 0 for the completion). Please reduce your "
            "prompt; or completion length."
        )


class FileTooLarge(InvalidRequest):
    """A file over its purpose's limit (Azure: 200 MB for batch files)."""

    status_code = 413

    def __init__(self, purpose: str, limit: int, size: int) -> None:
        super().__init__(
            f"The file is {size} bytes; files of purpose '{purpose}' may have at most {limit} "
            f"bytes ({limit // (1024 * 1024)} MB).",
            param="file",
            code="file_too_large",
        )


class NotCancellable(InvalidRequest):
    """Cancelling a batch that has completed, failed or expired: 409, as OpenAI answers."""

    status_code = 409

    def __init__(self, status: str) -> None:
        super().__init__(
            f"Cannot cancel a batch with status '{status}'.", code="batch_not_cancellable"
        )


class OperationNotSupported(_CodeMessageError):
    """The deployment's model cannot do what the route asks (chat on an embedding model...).

    ``operation`` is Azure's name for it: ``chatCompletion``, ``completion`` or ``embeddings``;
    real Azure bodies name the deployment's *model* (a deployment ``squadconv-gpt4`` of gpt-4
    answers "...with the specified model, gpt-4").
    """

    status_code = 400
    code = "OperationNotSupported"

    def __init__(self, operation: str, model: str) -> None:
        super().__init__(
            f"The {operation} operation does not work with the specified model, {model}. Please "
            "choose different model and try again. You can learn more about which models can be "
            "used with each operation here: https://go.microsoft.com/fwlink/?linkid=2197993."
        )


def _prompt_too_long(limit: int, prompt_tokens: int, completion_tokens: int | None) -> str:
    if completion_tokens is None:
        return (
            f"This model's maximum context length is {limit} tokens, however your prompt resulted "
            f"in {prompt_tokens} tokens. Please reduce your prompt."
        )
    return (
        f"This model's maximum context length is {limit} tokens, however you requested "
        f"{prompt_tokens + completion_tokens} tokens ({prompt_tokens} in your prompt; "
        f"{completion_tokens} for the completion). Please reduce your prompt; or completion "
        "length."
    )


class RequestTooLarge(InvalidRequest):
    """The body is larger than ``max_body_bytes``."""

    status_code = 413

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The request body is too large: the maximum is {limit} bytes.",
            code="request_body_too_large",
        )


def _retry_headers(seconds: float) -> dict[str, str]:
    """``retry-after`` (whole seconds) and ``retry-after-ms``, which openai 1.x honours first."""
    return {"retry-after": str(max(1, round(seconds))), "retry-after-ms": str(int(seconds * 1000))}


class ServiceUnavailable(_CodeMessageError):
    """The model is still loading, or no slot freed up within the queue timeout."""

    status_code = 503
    code = "ServiceUnavailable"
    default_message = (
        "The service is temporarily unable to process your request. Please try again later."
    )

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        if retry_after is not None:
            self.headers.update(_retry_headers(retry_after))


class BadGateway(_CodeMessageError):
    """An upstream engine failed (5xx, a refused connection, a broken stream) or answered what a
    correctly configured one would not (401, 404): Azure's error envelope, never its body.

    The code and envelope follow Azure's gateway errors (``{"error": {"code", "message"}}``);
    Azure documents no body for them, so this one is Cerulean's (docs/scaling.md).
    """

    status_code = 502
    code = "BadGateway"
    default_message = (
        "The server received an invalid response from an upstream server. Please try again later."
    )

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        if retry_after is not None:
            self.headers.update(_retry_headers(retry_after))


class GatewayTimeout(BadGateway):
    """An upstream did not answer (or stopped answering) within its timeout."""

    status_code = 504
    code = "GatewayTimeout"
    default_message = "The upstream server did not answer in time. Please try again later."


class ServerBusy(_CodeMessageError):
    """Every slot is busy and the waiting line is full: Azure's capacity 429 (§5.3).

    Azure answers an overloaded backend with a 429 that reads like its 503; openai 1.x retries
    it after ``retry-after-ms``.
    """

    status_code = 429
    code = "429"
    default_message = (
        "The service is temporarily unable to process your request. Please try again later."
    )

    def __init__(self, *, retry_after: float) -> None:
        super().__init__()
        self.headers.update(_retry_headers(retry_after))


class RateLimited(_CodeMessageError):
    """A deployment's token (TPM) or call (RPM) rate limit: Azure's 429 with its template (§5.3).

    ``retry_after`` is rounded *up* (a retry a moment early would be refused again); openai 1.x
    sleeps ``retry-after-ms`` and retries by itself. When no wait can help (``retryable`` false:
    the request alone exceeds the limit) the message drops its "Please retry" sentence, as Azure's
    sometimes does, and ``x-should-retry: false`` tells openai 1.x not to retry.
    """

    status_code = 429
    code = "429"

    def __init__(
        self,
        *,
        operation: str,
        api_version: str,
        limit: Literal["token", "call"],
        retry_after: float,
        retryable: bool = True,
        tier: str = "OpenAI S0",
    ) -> None:
        seconds = max(1, math.ceil(retry_after))
        retry = f"Please retry after {seconds} second{'' if seconds == 1 else 's'}. "
        super().__init__(
            f"Requests to the {operation} Operation under Azure OpenAI API version {api_version} "
            f"have exceeded {limit} rate limit of your current {tier} pricing tier. "
            f"{retry if retryable else ''}Please go here: https://aka.ms/oai/quotaincrease if "
            "you would like to further increase the default rate limit."
        )
        self.retry_after = retry_after
        self.headers.update(
            {
                "retry-after": str(seconds),
                "retry-after-ms": str(max(1, math.ceil(retry_after * 1000))),
            }
        )
        if not retryable:
            self.headers["x-should-retry"] = "false"


class ContentFiltered(APIError):
    """A prompt the deployment's content-filter policy refused: Azure's 400 ``content_filter``,
    byte for byte as captured live (``innererror.content_filter_result``, singular)."""

    status_code = 400

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(
            "The response was filtered due to the prompt triggering Azure OpenAI's content "
            "management policy. Please modify your prompt and retry. To learn more about our "
            "content filtering policies please read our documentation: "
            "https://go.microsoft.com/fwlink/?linkid=2198766"
        )
        self.result = result

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": self.result,
                },
            }
        }


class ArmError(APIError):
    """An Azure Resource Manager error: ``{"error": {"code": ..., "message": ...}}``."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code  # type: ignore[misc]
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class StudioError(ArmError):
    """A Studio request refused: ``{"error": {"code", "message"}}`` for the Studio's JSON routes;
    its pages show the same message as HTML (docs/studio.md)."""


class InternalServerError(APIError):
    """Anything unexpected: Azure's 500 body, quoting the request id."""

    status_code = 500

    def __init__(self, request_id: str) -> None:
        super().__init__(
            "The server had an error processing your request. Sorry about that! You can retry "
            "your request, or contact us through an Azure support request at: "
            "https://go.microsoft.com/fwlink/?linkid=2213926 if you keep seeing this error. "
            f"(Please include the request ID {request_id} in your email.)"
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": "server_error", "param": None, "code": None}
        }
