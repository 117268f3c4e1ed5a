"""What the webhooks service reports when a webhook cannot be registered, read or changed."""

from __future__ import annotations

from datalab.domain_errors import Forbidden, NotFound, Unprocessable


class InvalidWebhookUrl(Unprocessable):
    """A URL deliveries may not go to (too long, not absolute http(s), no host)."""

    code = "invalid_url"


class PrivateWebhookAddress(Unprocessable):
    """A URL whose host is or resolves to a loopback, private or link-local address."""

    code = "private_address"

    def __init__(self, address: str) -> None:
        super().__init__(
            f"url's host resolves to {address}, a loopback, private or link-local address; webhooks "
            "deliver to public addresses only"
        )
        self.address = address


class InvalidWebhookEvents(Unprocessable):
    """No events, or events that are not event types."""

    code = "invalid_events"


class WebhookAdminRequired(Forbidden):
    """Only the organization's admins (or an operator) manage its webhooks."""

    code = "admin_required"

    def __init__(self) -> None:
        super().__init__("Only the organization's admins can manage its webhooks")


class WebhookNotFound(NotFound):
    """No webhook with this uid in the caller's organization."""

    code = "not_found"

    def __init__(self, uid: str) -> None:
        super().__init__(f"No webhook {uid[:40]!r} in this organization")
        self.uid = uid
