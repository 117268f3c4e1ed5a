"""Data Center's Webhooks page in a real browser (headless Chromium through Playwright): add a webhook,
send it a test event, give it a new secret; a receiver on loopback checks what arrives."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import ServerFactory
from tests.support.checks import wait_for
from tests.support.receivers import Receiver, running_receiver, verified
from tests.support.server import LiveServer
from tests.web.test_browser import VIEWPORT, sign_in


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def site(make_server: ServerFactory) -> LiveServer:
    """A server sending webhooks (its receiver is on loopback, which it must be told to allow)."""
    return make_server(pipeline_workers="1", webhook_allow_private_targets="1", webhook_poll_seconds="0.1")


@pytest.fixture
def page(browser: Browser, site: LiveServer) -> Iterator[Page]:
    context = browser.new_context(base_url=site.root, viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    opened = context.new_page()
    opened.goto("/datacenter/signin")
    sign_in(opened, site)
    opened.wait_for_url("**/datacenter/exports")
    yield opened
    context.close()


def _tested_with(receiver: Receiver, secret: str) -> bool:
    return any(verified(request, secret) for request in receiver.on("/ok", "webhook.test"))


def test_add_a_webhook_send_it_a_test_event_and_rotate_its_secret(
    page: Page, site: LiveServer, receiver: Receiver
) -> None:
    page.goto("/datacenter/webhooks")
    page.fill("#webhook-url", receiver.url("/ok"))
    page.fill("#webhook-description", "Browser CRM")
    page.get_by_role("button", name="Add webhook").click()
    expect(page.get_by_text("Webhook added.")).to_be_visible()
    secret = page.locator("#new-secret").inner_text()
    assert secret.startswith("whsec_")

    page.get_by_role("button", name="Send test event").click()
    page.wait_for_url("**/datacenter/webhooks")
    expect(page.locator("#new-secret")).to_have_count(0)
    assert wait_for(lambda: _tested_with(receiver, secret), timeout=15)

    def shows_delivered() -> bool:
        page.reload()
        return page.get_by_role("cell", name="delivered").count() == 1

    assert wait_for(shows_delivered, timeout=15)

    page.get_by_role("button", name=f"New secret for {receiver.url('/ok')}").click()
    expect(page.get_by_text("New secret for")).to_be_visible()
    rotated = page.locator("#new-secret").inner_text()
    assert rotated.startswith("whsec_") and rotated != secret
    page.goto("/datacenter/webhooks")
    page.get_by_role("button", name="Send test event").click()
    assert wait_for(lambda: _tested_with(receiver, rotated), timeout=15)
