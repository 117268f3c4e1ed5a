"""The parts of sending a delivery that need no server: URL checks, the signature, refusing non-http(s)."""

from __future__ import annotations

import hashlib
import hmac
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2
import pytest
from pydantic import ValidationError

from datalab.errors import api_error
from datalab.settings import Settings
from datalab.webhooks.errors import InvalidWebhookUrl
from datalab.webhooks.sealing import SecretBox
from datalab.webhooks.service import check_url, sign
from datalab.webhooks.tasks import ClaimedDelivery, Sending, make_client, send


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.edu/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "https://",
        "/relative",
        "http://a b.edu/",
    ],
)
def test_only_absolute_http_urls_with_a_host_are_accepted(url: str) -> None:
    with pytest.raises(InvalidWebhookUrl) as raised:
        check_url(url, allow_private=True)
    assert (api_error(raised.value).status, raised.value.code) == (422, "invalid_url")


def test_accepted_urls_are_kept_as_given() -> None:
    assert check_url(" https://college.example.edu:8443/hooks?source=datalab ", allow_private=False) == (
        "https://college.example.edu:8443/hooks?source=datalab"
    )


def test_the_signature_is_the_hmac_of_timestamp_dot_body() -> None:
    body = b'{"id":"1","type":"export.published"}'
    expected = hmac.new(b"whsec_abc", b"1767225600." + body, hashlib.sha256).hexdigest()
    assert sign(secret="whsec_abc", timestamp="1767225600", body=body) == "sha256=" + expected
    assert sign(secret="whsec_abd", timestamp="1767225600", body=body) != "sha256=" + expected


BOX = SecretBox(Settings(dev_mode=True).encryption_key)


def _refuse_everything(request: httpx2.Request) -> httpx2.Response:
    raise AssertionError(f"no request may be sent, got {request.url}")


def _claimed(url: str, secret: str) -> ClaimedDelivery:
    return ClaimedDelivery(
        id=1, uid="d", event_type="webhook.test", body="{}", url=url, secret=secret, attempt=1, sender="t"
    )


def test_a_stored_url_that_is_not_http_is_refused_without_a_request() -> None:
    with httpx2.Client(transport=httpx2.MockTransport(_refuse_everything)) as client:
        outcome = send(
            _claimed("file:///etc/passwd", BOX.seal("whsec_s")),
            client=client,
            sending=Sending(box=BOX, allow_private=True),
        )
    assert outcome.status is None and not outcome.delivered
    assert outcome.error == "refused: the webhook's URL is not http(s)"


@pytest.mark.parametrize(
    ("url", "address"),
    [("http://localhost:8080/hook", "127.0.0.1"), ("http://169.254.169.254/x", "169.254.169.254")],
)
def test_a_host_resolving_to_a_non_public_address_is_refused_at_delivery(url: str, address: str) -> None:
    with httpx2.Client(transport=httpx2.MockTransport(_refuse_everything)) as client:
        outcome = send(
            _claimed(url, BOX.seal("whsec_s")), client=client, sending=Sending(box=BOX, allow_private=False)
        )
    assert outcome.status is None
    assert outcome.error == f"refused: the webhook's host resolves to {address}, not a public address"


@contextmanager
def _receiver() -> Iterator[tuple[httpx2.Client, list[httpx2.Request]]]:
    """A client whose every request is answered 204, and the requests it sent."""
    seen: list[httpx2.Request] = []

    def accept(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(204)

    with httpx2.Client(transport=httpx2.MockTransport(accept)) as client:
        yield client, seen


def _resolving(monkeypatch: pytest.MonkeyPatch, answers: list[list[str]]) -> list[str]:
    """DNS for the test: each lookup gets the next of the answers (addresses); the names looked up."""
    looked_up: list[str] = []

    def getaddrinfo(host: str, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        looked_up.append(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 0)) for address in answers.pop(0)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


@pytest.mark.parametrize(
    ("url", "address", "sent_to", "host", "server_name"),
    [
        (
            "https://hooks.college.example/in?x=1",
            "93.184.215.14",
            "https://93.184.215.14/in?x=1",
            "hooks.college.example",
            "hooks.college.example",
        ),
        (
            "http://hooks.college.example:8080/in",
            "2606:2800:21f:cb07::1",
            "http://[2606:2800:21f:cb07::1]:8080/in",
            "hooks.college.example:8080",
            None,
        ),
        (
            "https://bücher.example/in",
            "93.184.215.14",
            "https://93.184.215.14/in",
            "xn--bcher-kva.example",
            "xn--bcher-kva.example",
        ),
    ],
)
def test_a_delivery_goes_to_the_address_checked_without_a_second_lookup(
    monkeypatch: pytest.MonkeyPatch, url: str, address: str, sent_to: str, host: str, server_name: str | None
) -> None:
    # the name's second answer is the server's own network: a client resolving again would go there
    looked_up = _resolving(monkeypatch, [[address], ["127.0.0.1"]])
    with _receiver() as (client, seen):
        outcome = send(
            _claimed(url, BOX.seal("whsec_s")), client=client, sending=Sending(box=BOX, allow_private=False)
        )
    assert outcome.delivered
    assert len(looked_up) == 1
    (request,) = seen
    assert str(request.url) == sent_to
    assert request.headers["host"] == host
    assert request.extensions.get("sni_hostname") == server_name


def test_a_host_that_does_not_resolve_is_refused_at_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    _resolving(monkeypatch, [])
    with httpx2.Client(transport=httpx2.MockTransport(_refuse_everything)) as client:
        outcome = send(
            _claimed("https://gone.college.example/in", BOX.seal("whsec_s")),
            client=client,
            sending=Sending(box=BOX, allow_private=False),
        )
    assert (outcome.status, outcome.error) == (None, "refused: the webhook's host does not resolve")


def test_allowed_private_targets_get_the_request_signed_with_the_decrypted_secret() -> None:
    with _receiver() as (client, seen):
        outcome = send(
            _claimed("http://127.0.0.1:9/hook", BOX.seal("whsec_s")),
            client=client,
            sending=Sending(box=BOX, allow_private=True),
        )
    assert outcome.delivered
    timestamp = seen[0].headers["x-datalab-timestamp"]
    assert seen[0].headers["x-datalab-signature"] == sign(secret="whsec_s", timestamp=timestamp, body=b"{}")


def test_a_secret_sealed_with_another_key_is_refused_without_a_request() -> None:
    other = SecretBox(Settings(secret_key="k" * 40).encryption_key)
    with httpx2.Client(transport=httpx2.MockTransport(_refuse_everything)) as client:
        outcome = send(
            _claimed("http://127.0.0.1:9/hook", other.seal("whsec_s")),
            client=client,
            sending=Sending(box=BOX, allow_private=True),
        )
    assert outcome.error == "refused: the webhook's secret does not decrypt with DATALAB_SECRET_KEY"


def test_the_delivery_client_follows_no_redirect() -> None:
    with make_client(2.0) as client:
        assert client.follow_redirects is False
        assert client.timeout.read == 2.0


def test_retry_waits_are_a_json_list_from_the_environment_or_given_directly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATALAB_WEBHOOK_RETRY_SECONDS", "[3, 9.5]")
    assert Settings(dev_mode=True).webhook_retry_seconds == [3.0, 9.5]
    assert Settings.model_validate(
        {"dev_mode": True, "webhook_retry_seconds": "[1, 2]"}
    ).webhook_retry_seconds == [
        1.0,
        2.0,
    ]
    with pytest.raises(ValidationError, match="must be a JSON list of seconds"):
        Settings.model_validate({"dev_mode": True, "webhook_retry_seconds": "10,30"})
