"""The Data Lab API client: log in lazily, keep the session fresh, retry what is safe, stream files."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal
from urllib.parse import unquote, urlsplit

import httpx2

from datalab.client.errors import (
    ApiError,
    AuthenticationError,
    ConfigurationError,
    ConnectionFailed,
    DownloadError,
    NotFound,
    ProcessingFailed,
    UploadError,
)
from datalab.client.models import Export, FileRecord

log = logging.getLogger("datalab.client")

DEFAULT_BASE_URL = "https://api-datalab.encoura.org/v1"
# The variables the public integration scripts use, plus one for the server's address.
ENVIRONMENT = {
    "base_url": "ENCOURA_BASE_URL",
    "api_key": "ENCOURA_API_KEY",
    "username": "ENCOURA_USERNAME",
    "password": "ENCOURA_PASSWORD",
    "organization": "ENCOURA_ORGANIZATION_UID",
    "retries": "ENCOURA_RETRIES",
}
DEFAULT_RETRIES = 4
# Session tokens live 20 minutes: without an `exp` claim to go by, refresh after 15.
TOKEN_REFRESH_SECONDS = 15 * 60
PAGE_SIZE = 100
CHUNK_BYTES = 1024 * 1024
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

Progress = Callable[[int, int | None], None]
Conflict = Literal["error", "rename", "overwrite"]


def _api_error(response: httpx2.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = str(
            body.get("message") or body.get("detail") or body.get("error") or response.reason_phrase
        )
        code, detail = str(body.get("code") or ""), body.get("detail")
    else:
        message, code, detail = (response.text[:500] or response.reason_phrase), "", None
    kind: type[ApiError] = ApiError
    if response.status_code in (401, 403):
        kind = AuthenticationError
    elif response.status_code == 404:
        kind = NotFound
    return kind(response.status_code, message, code=code, detail=detail)


def _store_error(response: httpx2.Response) -> UploadError:
    try:
        root = ET.fromstring(response.content)  # noqa: S314  (S3's error document from the store we post to)
        code, message = root.findtext("Code") or "", root.findtext("Message") or ""
    except ET.ParseError:
        code, message = "", response.text[:500]
    return UploadError(f"the store refused the file ({response.status_code} {code}): {message}", code=code)


def safe_file_name(url: str, fallback: str) -> str:
    """The last path segment of a URL as a plain file name (no directories, no hidden or control chars)."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    name = re.sub(r"[^\w.()+ -]", "_", name).strip(" .")
    return name[:200] or fallback


def token_lifetime(token: str) -> float:
    """Seconds until a session token should be refreshed: a minute (or half its life) before its `exp`."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        remaining = float(claims["exp"]) - time.time()
    except (IndexError, ValueError, KeyError, TypeError):
        return TOKEN_REFRESH_SECONDS
    return max(remaining - min(60.0, remaining / 2), 0.0)


def shown_url(url: str) -> str:
    """A URL as logs may show it: host and file name only (signed URLs carry secrets in path and query)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…/{parts.path.rsplit('/', 1)[-1]}"


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class _ProgressReader:
    """A file object that reports how much has been read (the upload's progress)."""

    def __init__(self, handle: IO[bytes], total: int, progress: Progress | None) -> None:
        self.handle = handle
        self.total = total
        self.progress = progress
        self.done = 0

    def fileno(self) -> int:
        # Lets the multipart encoder size the body: stores want a Content-Length, not chunks.
        return self.handle.fileno()

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.done += len(chunk)
        if self.progress is not None:
            self.progress(self.done, self.total)
        return chunk


def _retries(env: Mapping[str, str]) -> int:
    text = env.get(ENVIRONMENT["retries"], "").strip()
    if not text:
        return DEFAULT_RETRIES
    if not (text.isascii() and text.isdigit()):
        raise ConfigurationError(f"{ENVIRONMENT['retries']} must be a whole number of retries, not {text!r}")
    return int(text)


class Client:
    """A session with the Data Lab API; use as a context manager or call close().

    Arguments default to the environment (ENCOURA_BASE_URL, ENCOURA_API_KEY, ENCOURA_USERNAME,
    ENCOURA_PASSWORD, ENCOURA_ORGANIZATION_UID, ENCOURA_RETRIES: how many times a failed idempotent call
    or download is tried again, 4 unless set). `transport` replaces the network (e.g.
    httpx2.MockTransport) so integration code can be tested without a server.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        organization: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int | None = None,
        backoff_seconds: float = 0.5,
        transport: httpx2.BaseTransport | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        env = os.environ if environ is None else environ
        given = {"api_key": api_key, "username": username, "password": password}
        values = {name: value or env.get(ENVIRONMENT[name], "") for name, value in given.items()}
        missing = [f"{name} (or {ENVIRONMENT[name]})" for name, value in values.items() if not value]
        if missing:
            raise ConfigurationError(f"missing credentials: {', '.join(missing)}")
        root = (base_url or env.get(ENVIRONMENT["base_url"]) or DEFAULT_BASE_URL).rstrip("/")
        if not root.startswith(("http://", "https://")):
            raise ConfigurationError(f"the base URL must start with http:// or https://, not {root!r}")
        self.base_url = root if root.endswith("/v1") else root + "/v1"
        self.api_key, self.username, self.password = values["api_key"], values["username"], values["password"]
        self.organization = organization or env.get(ENVIRONMENT["organization"]) or None
        self.retries = _retries(env) if retries is None else retries
        self.backoff_seconds = backoff_seconds
        self._clock = clock
        self._sleep = sleep
        self._token: str | None = None
        self._refresh_at = 0.0
        self._http = httpx2.Client(
            timeout=httpx2.Timeout(timeout, connect=min(timeout, 15.0)), transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the connections."""
        self._http.close()

    # --- sessions -------------------------------------------------------------------------------------

    def login(self) -> dict[str, Any]:
        """Log in now (other calls do it when needed); returns the user, with its organizations."""
        response = self._send(
            "POST",
            f"{self.base_url}/login",
            headers={"x-api-key": self.api_key},
            json={"userName": self.username, "password": self.password, "acceptedTerms": True},
            retry=True,
        )
        if response.status_code != 200:
            raise _api_error(response)
        body = response.json()
        self._set_token(str(body["sessionToken"]))
        user: dict[str, Any] = body.get("user") or {}
        organizations = user.get("organizations") or []
        if self.organization is None:
            if not organizations:
                raise AuthenticationError(403, "this account belongs to no organization")
            self.organization = str(organizations[0]["uid"])
        return user

    def _refresh(self) -> None:
        response = self._send(
            "GET",
            f"{self.base_url}/refresh-token",
            headers={"x-api-key": self.api_key, "Authorization": f"Bearer {self._token}"},
            retry=True,
        )
        if response.status_code == 200:
            self._set_token(str(response.json()["sessionToken"]))
        else:
            self.login()

    def _set_token(self, token: str) -> None:
        self._token = token
        self._refresh_at = self._clock() + token_lifetime(token)

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            self.login()
        elif self._clock() >= self._refresh_at:
            self._refresh()
        return {
            "x-api-key": self.api_key,
            "Authorization": f"Bearer {self._token}",
            "Organization": str(self.organization),
        }

    # --- HTTP -----------------------------------------------------------------------------------------

    def _delay(self, attempt: int, response: httpx2.Response | None) -> float:
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), 60.0)
        ceiling: float = min(self.backoff_seconds * 2**attempt, 30.0)
        return ceiling * random.uniform(0.5, 1.5)

    def _send(self, method: str, url: str, *, retry: bool, **kwargs: Any) -> httpx2.Response:
        """One request, retried on connection errors, 429 and 5xx when `retry` (idempotent calls)."""
        attempts = self.retries + 1 if retry else 1
        for attempt in range(attempts):
            response: httpx2.Response | None = None
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx2.TransportError as exc:
                if attempt + 1 == attempts:
                    raise ConnectionFailed(f"{method} {shown_url(url)}: {exc}") from exc
            else:
                if response.status_code not in RETRY_STATUSES or attempt + 1 == attempts:
                    return response
            log.info("retrying %s %s (attempt %s)", method, shown_url(url), attempt + 2)
            self._sleep(self._delay(attempt, response))
        raise AssertionError("unreachable")

    def _call(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> httpx2.Response:
        """An authenticated API call; a 401 logs in again once. Error answers raise ApiError."""
        response = self._send(
            method, f"{self.base_url}{path}", headers=self._headers(), retry=retry, **kwargs
        )
        if response.status_code == 401:
            self.login()
            response = self._send(
                method, f"{self.base_url}{path}", headers=self._headers(), retry=retry, **kwargs
            )
        if response.status_code >= 400:
            raise _api_error(response)
        return response

    def _pages(self, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            response = self._call("GET", path, params={**params, "limit": PAGE_SIZE, "offset": offset})
            items = response.json()
            yield from items
            total = response.headers.get("total-count")
            offset += len(items)
            # Without a total the server does not page: the answer was the whole list.
            if total is None or not items or offset >= int(total):
                return

    # --- exports --------------------------------------------------------------------------------------

    def exports(self, *, status: str | None = None, product_key: str | None = None) -> Iterator[Export]:
        """The organization's export files, optionally by status (Delivered, NotDelivered) and product."""
        params = {name: value for name, value in (("status", status), ("productKey", product_key)) if value}
        for item in self._pages("/datacenter/exports", params):
            yield Export.from_api(item)

    def download_url(self, uid: str) -> str:
        """A one-time download URL of an export (it expires within about a minute)."""
        return str(self._call("GET", f"/datacenter/exports/{uid}/download").json()["downloadUrl"])

    def download(
        self,
        export: Export | str,
        dest_dir: str | Path,
        *,
        on_conflict: Conflict = "error",
        progress: Progress | None = None,
    ) -> Path:
        """Download an export into dest_dir and return its path; the file appears only when complete.

        The bytes go to a temporary file in dest_dir, are checked against the length (and the MD5 ETag,
        when the server sends one), then renamed. An existing file with the same name and bytes is kept;
        a different one is an error unless on_conflict is "rename" (a numbered name) or "overwrite".
        """
        uid = export.uid if isinstance(export, Export) else export
        directory = Path(dest_dir)
        directory.mkdir(parents=True, exist_ok=True)
        last_error: Exception | None = None
        for attempt in range(self.retries + 1):
            url = self.download_url(uid)
            name = safe_file_name(url, fallback=f"{uid}.csv")
            temp = directory / f".{name}.{uid[:8]}.part"
            try:
                md5 = self._fetch(url, temp, progress)
            except DownloadError as exc:
                temp.unlink(missing_ok=True)
                last_error = exc
                if attempt < self.retries:
                    log.info("download of %s failed (%s); asking for a new URL", uid, exc)
                    self._sleep(self._delay(attempt, None))
                continue
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            return self._place(temp, md5, directory / name, on_conflict)
        raise DownloadError(f"export {uid} could not be downloaded: {last_error}")

    def _fetch(self, url: str, temp: Path, progress: Progress | None) -> str:
        """Write the URL's bytes to temp, checked; returns their MD5."""
        digest = hashlib.md5(usedforsecurity=False)
        written = 0
        try:
            # The stored bytes, not a compressed rendition: length and ETag describe what was stored.
            with self._http.stream(
                "GET", url, follow_redirects=True, headers={"Accept-Encoding": "identity"}
            ) as response:
                if response.status_code != 200:
                    raise DownloadError(f"the download URL answered {response.status_code}")
                expected = response.headers.get("content-length")
                total = int(expected) if expected and expected.isdigit() else None
                etag = response.headers.get("etag", "").strip('"')
                if response.headers.get("content-encoding", "identity").lower() != "identity":
                    # A proxy compressed it anyway: the headers describe the compressed bytes.
                    total, etag = None, ""
                with temp.open("wb") as handle:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        handle.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
                        if progress is not None:
                            progress(written, total)
                    handle.flush()
                    os.fsync(handle.fileno())
        except httpx2.TransportError as exc:
            raise DownloadError(f"the transfer broke off after {written} bytes: {exc}") from exc
        if total is not None and written != total:
            raise DownloadError(f"received {written} of {total} bytes")
        if re.fullmatch(r"[0-9a-f]{32}", etag) and digest.hexdigest() != etag:
            raise DownloadError("the file's MD5 does not match the ETag the server sent")
        return digest.hexdigest()

    @staticmethod
    def _place(temp: Path, md5: str, target: Path, on_conflict: Conflict) -> Path:
        if target.exists() and on_conflict != "overwrite":
            if target.stat().st_size == temp.stat().st_size and _md5_of(target) == md5:
                temp.unlink()
                return target
            if on_conflict == "error":
                temp.unlink()
                raise DownloadError(f"{target} exists with different content; not overwritten")
            number = 1
            while (candidate := target.with_name(f"{target.stem}-{number}{target.suffix}")).exists():
                number += 1
            log.warning("%s exists with different content; saving as %s", target.name, candidate.name)
            target = candidate
        temp.replace(target)
        return target

    # --- uploads --------------------------------------------------------------------------------------

    def files(self, *, status: str | None = None, product_type: str | None = None) -> Iterator[FileRecord]:
        """The organization's uploaded files, newest first."""
        params = {name: value for name, value in (("status", status), ("productType", product_type)) if value}
        for item in self._pages("/files", params):
            yield FileRecord.from_api(item)

    def file(self, file_id: str) -> FileRecord:
        """One uploaded file's record."""
        return FileRecord.from_api(self._call("GET", f"/files/{file_id}").json())

    def upload(
        self,
        path: str | Path,
        product_type: str,
        description: str | None = None,
        *,
        wait: bool = False,
        wait_timeout: float | None = None,
        progress: Progress | None = None,
    ) -> FileRecord:
        """Upload a file (streamed, never read whole into memory) and return its record.

        With wait, poll until the server is done with it: `failure` (or a file waiting for a mapping)
        raises ProcessingFailed carrying the record.
        """
        source = Path(path)
        if not source.is_file():
            raise ConfigurationError(f"{source} is not a readable file")
        body: dict[str, str] = {"fileName": source.name, "productType": product_type, "dataSource": "API"}
        if description:
            body["fileDescription"] = description
        form = self._call("POST", "/files/upload", json=body, retry=False).json()
        size = source.stat().st_size
        with source.open("rb") as handle:
            response = self._send(
                "POST",
                str(form["url"]),
                retry=False,
                data={str(k): str(v) for k, v in form["fields"].items()},
                files={
                    "file": (source.name, _ProgressReader(handle, size, progress), "application/octet-stream")
                },
            )
        if response.status_code not in (200, 201, 204):
            raise _store_error(response)
        record = self.file(str(form["id"]))
        return self.wait(record.id, timeout=wait_timeout) if wait else record

    def wait(self, file_id: str, *, timeout: float | None = None) -> FileRecord:
        """Poll a file until the server is done with it; `failure` raises ProcessingFailed."""
        started = self._clock()
        # A small file is often done within a fraction of a second: look again soon, then less and less often.
        delay = 0.1
        while True:
            record = self.file(file_id)
            if record.finished:
                if record.status != "done":
                    raise ProcessingFailed(record)
                return record
            if timeout is not None and self._clock() - started > timeout:
                raise ProcessingFailed(record)
            self._sleep(delay)
            delay = min(delay * 1.5, 10.0)
