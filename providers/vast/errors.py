"""What a Vast API call can fail with; all are ProviderError (the CLI shows them without a traceback)."""

from __future__ import annotations

from runform.errors import ProviderError


class VastAPIError(ProviderError):
    """A Vast API call failed; ``status``/``code`` say how (``code`` is Vast's ``error`` field)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code


class AuthError(VastAPIError):
    """No API key, or the server rejected it."""


class RateLimited(VastAPIError):
    """Still rate limited after the retries, or asked to wait longer than we will."""


class SearchQuotaExceeded(VastAPIError):
    """The daily offer-search quota is spent; it resets at UTC midnight. Not retried."""


class OfferGone(VastAPIError):
    """The offer was rented by someone else (``no_such_ask``); try the next one."""


class CreateFailed(VastAPIError):
    """Create reported failure; ``new_contract`` is an instance it made anyway (destroy it)."""

    def __init__(self, message: str, *, new_contract: int | None, status: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, status=status, code=code)
        self.new_contract = new_contract


class CreateOutcomeUnknown(VastAPIError):
    """The create response was lost (5xx or dropped connection): the instance may exist."""


class Unreachable(VastAPIError):
    """The API host cannot be reached at all (no network, DNS, refused): nothing was sent."""
