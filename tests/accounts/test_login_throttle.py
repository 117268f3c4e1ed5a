"""Failed-login throttling over real HTTP: per userName, per client address, reset on success, Retry-After."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest

from tests.support.accounts import Account, login_body, unique
from tests.support.checks import assert_envelope
from tests.support.factories import add_account
from tests.support.server import LiveServer

ServerFactory = Callable[..., LiveServer]

MAX_FAILURES = 3
MAX_FAILURES_PER_ADDRESS = 6
LOCKOUT_SECONDS = 60
THROTTLE_SETTINGS = {
    "login_max_failures": str(MAX_FAILURES),
    "login_max_failures_per_address": str(MAX_FAILURES_PER_ADDRESS),
    "login_lockout_seconds": str(LOCKOUT_SECONDS),
}
_addresses = itertools.count(1)


@pytest.fixture(scope="module")
def throttled(make_server: ServerFactory) -> LiveServer:
    """Low limits; the server trusts X-Forwarded-For from the test client so each test has its own address."""
    return make_server(**THROTTLE_SETTINGS, forwarded_allow_ips="127.0.0.1")


def fresh_address() -> str:
    """A client address (sent as X-Forwarded-For) no other test uses."""
    return f"198.51.100.{next(_addresses)}"


@pytest.fixture
def address() -> str:
    return fresh_address()


def attempt(
    server: LiveServer, account: Account, *, password: str | None = None, address: str | None = None
) -> httpx2.Response:
    """One login as the account, with its key, from the address when given."""
    headers = {"x-api-key": account.api_key}
    if address is not None:
        headers["X-Forwarded-For"] = address
    return httpx2.post(
        server.base_url + "/login",
        headers=headers,
        json=login_body(account.user_name, account.password if password is None else password),
    )


def fail(server: LiveServer, account: Account, *, address: str | None = None, times: int = 1) -> None:
    """Log in with a wrong password, expecting the ordinary 401 each time."""
    for _ in range(times):
        assert_envelope(
            attempt(server, account, password="wrong password", address=address), 401, "invalid_credentials"
        )


def assert_throttled(response: httpx2.Response) -> None:
    error = assert_envelope(response, 429, "too_many_login_failures")
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= LOCKOUT_SECONDS + 1
    assert f"{retry_after} seconds" in error["message"]


def test_user_name_is_locked_after_max_failures(throttled: LiveServer, address: str) -> None:
    account = add_account(throttled)
    fail(throttled, account, address=address, times=MAX_FAILURES)
    # Even the right password is refused while locked, from any address.
    assert_throttled(attempt(throttled, account, address=address))
    assert_throttled(attempt(throttled, account, address="203.0.113.99"))
    assert_throttled(attempt(throttled, account, password="wrong again", address=address))


def test_lockout_ignores_user_name_case(throttled: LiveServer, address: str) -> None:
    account = add_account(throttled)
    for user_name in (account.user_name.upper(), account.user_name.title(), account.user_name):
        response = httpx2.post(
            throttled.base_url + "/login",
            headers={"x-api-key": account.api_key, "X-Forwarded-For": address},
            json=login_body(user_name, "wrong password"),
        )
        assert_envelope(response, 401, "invalid_credentials")
    assert_throttled(attempt(throttled, account, address=address))


def test_unknown_user_names_are_locked_too(throttled: LiveServer, address: str) -> None:
    account = add_account(throttled)
    ghost = Account(
        uid="",
        user_name=unique("ghost") + "@example.edu",
        password="whatever it is",
        api_key=account.api_key,
        api_key_uid="",
        organization_uids=(),
    )
    fail(throttled, ghost, address=address, times=MAX_FAILURES)
    assert_throttled(attempt(throttled, ghost, address=address))


def test_other_user_names_from_the_same_address_work_until_the_address_limit(
    throttled: LiveServer, address: str
) -> None:
    locked, bystander = add_account(throttled), add_account(throttled)
    fail(throttled, locked, address=address, times=MAX_FAILURES)
    assert_throttled(attempt(throttled, locked, address=address))

    assert attempt(throttled, bystander, address=address).status_code == 200
    # The bystander's own failures count for the address too; the last one reaches its limit.
    fail(throttled, bystander, address=address, times=MAX_FAILURES_PER_ADDRESS - MAX_FAILURES - 1)
    assert attempt(throttled, bystander, address=address).status_code == 200
    others = [add_account(throttled) for _ in range(2)]
    fail(throttled, others[0], address=address)

    for account in (bystander, *others):
        assert_throttled(attempt(throttled, account, address=address))
    # Only that address is locked: the same accounts log in from elsewhere.
    for account in (bystander, *others):
        assert attempt(throttled, account, address="203.0.113.7").status_code == 200


def test_successful_login_resets_the_user_name_count(throttled: LiveServer, address: str) -> None:
    account = add_account(throttled)
    fail(throttled, account, address=address, times=MAX_FAILURES - 1)
    assert attempt(throttled, account, address=address).status_code == 200
    fail(throttled, account, address=address, times=MAX_FAILURES - 1)
    assert attempt(throttled, account, address=address).status_code == 200
    # Counting restarted at the last success: the limit since then locks it (from a new address, as this
    # one has seen four failures and the next two would lock the address instead).
    elsewhere = fresh_address()
    fail(throttled, account, address=elsewhere, times=MAX_FAILURES)
    assert_throttled(attempt(throttled, account, address=elsewhere))


def test_requests_refused_before_the_password_check_do_not_count(throttled: LiveServer, address: str) -> None:
    account = add_account(throttled)
    for _ in range(MAX_FAILURES + 1):
        bad_key = httpx2.post(
            throttled.base_url + "/login",
            headers={"x-api-key": "wrong", "X-Forwarded-For": address},
            json=login_body(account.user_name, "wrong password"),
        )
        assert_envelope(bad_key, 401, "invalid_api_key")
        no_terms = httpx2.post(
            throttled.base_url + "/login",
            headers={"x-api-key": account.api_key, "X-Forwarded-For": address},
            json={"userName": account.user_name, "password": "wrong password"},
        )
        assert_envelope(no_terms, 400, "terms_not_accepted")
    assert attempt(throttled, account, address=address).status_code == 200


def test_concurrent_failures_all_count(throttled: LiveServer, address: str) -> None:
    account = add_account(throttled)
    # A key used moment ago is not written to again, so the attempts below do not queue behind its row.
    assert attempt(throttled, account, address=address).status_code == 200
    parallel = 4 * MAX_FAILURES
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        responses = list(
            pool.map(
                lambda _: attempt(throttled, account, password="wrong password", address=address),
                range(parallel),
            )
        )
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {401, 429}, [r.text for r in responses if r.status_code not in {401, 429}]
    # Attempts are counted before their passwords are checked: a burst gets exactly the allowance.
    assert statuses.count(401) == MAX_FAILURES
    for response in responses:
        assert_envelope(
            response,
            response.status_code,
            "invalid_credentials" if response.status_code == 401 else "too_many_login_failures",
        )
    assert_throttled(attempt(throttled, account, address=address))


def test_address_lockout_without_a_trusted_proxy(make_server: ServerFactory) -> None:
    """With no trusted proxy, X-Forwarded-For is ignored: spoofing it does not escape the address limit."""
    server = make_server(**THROTTLE_SETTINGS)
    assert server.demo is not None
    demo = Account(
        uid="",
        user_name=server.demo.user_name,
        password=server.demo.password,
        api_key=server.demo.api_key,
        api_key_uid="",
        organization_uids=(server.demo.organization_uid,),
    )
    for index in range(MAX_FAILURES_PER_ADDRESS):
        ghost = Account(
            uid="",
            user_name=f"ghost-{index}@example.edu",
            password="not the password",
            api_key=demo.api_key,
            api_key_uid="",
            organization_uids=(),
        )
        assert_envelope(attempt(server, ghost, address=f"192.0.2.{index}"), 401, "invalid_credentials")
    assert_throttled(attempt(server, demo))
    assert_throttled(attempt(server, demo, address="192.0.2.200"))


def _throttle_rows(server: LiveServer) -> dict[str, tuple[int, object]]:
    from sqlalchemy import select

    from datalab.accounts.models import LoginThrottle

    with server.db() as db:
        return {row.scope: (row.failures, row.locked_until) for row in db.scalars(select(LoginThrottle))}


def test_attempts_refused_while_locked_out_store_nothing(throttled: LiveServer, address: str) -> None:
    account = add_account(throttled)
    fail(throttled, account, address=address, times=MAX_FAILURES)
    before = _throttle_rows(throttled)
    for other_address in (address, fresh_address(), fresh_address()):
        assert_throttled(attempt(throttled, account, password="wrong again", address=other_address))
    assert _throttle_rows(throttled) == before
    # Keyed by digests: neither the userName nor the address appears in what is stored.
    assert not any(account.user_name in scope or address in scope for scope in before)
