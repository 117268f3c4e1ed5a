"""The embedded store's browser-POST endpoint against tampered, incomplete and odd upload forms.

Every refused case asserts S3's status, `application/xml`, the exact Code and Message
(docs/reference/s3-presigned.md §1.8 as post_policy.py renders them) and their extra elements, and that
nothing was stored: no object under the key, no half-written file beside it, and the record still
`uploading` with nothing queued. Accepted variants assert 204 and the stored bytes. The bodies are built
part by part so the order of the parts, their names and the file's position are exactly as each case
needs them. The forms are posted to the in-process app; the large file streams through a live server.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

import httpx2
import pytest
from sqlalchemy import update

from datalab.uploads.models import Upload
from tests.conftest import AppFactory
from tests.support.checks import SIGNATURE_MISMATCH, s3_error
from tests.support.inprocess import InProcessApp
from tests.support.server import LiveServer, LoggedIn, MovableClock
from tests.support.uploads import (
    UPLOADS_BUCKET,
    Part,
    UploadForm,
    assert_nothing_stored,
    assert_still_uploading,
    assert_stored,
    boto3_post,
    create_upload,
    encode_multipart,
    field,
    file_part,
    form_parts,
    new_boundary,
    object_path,
    pipeline_jobs,
    post_parts,
    sha256_of,
    streamed_multipart,
    upload_row,
)

CONTENT = b"ID,FIRSTNAME\r\n00000001,Ana\r\n"
POLICY_FAILED = "Invalid according to Policy: Policy Condition failed: "
EXTRA_FIELDS = "Invalid according to Policy: Extra input fields: "
MISSING_FIELD = (
    "Bucket POST must contain a field named '{}'.  If it is specified, please check the order of the fields."
)
CREDENTIAL_MALFORMED = (
    "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
    'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
)

Body = tuple[bytes, str]


@pytest.fixture
def client(api: InProcessApp) -> httpx2.Client:
    return api.client


@pytest.fixture(scope="module")
def demo(api: InProcessApp) -> LoggedIn:
    return api.login()


@pytest.fixture
def form(client: httpx2.Client, api: InProcessApp, demo: LoggedIn) -> UploadForm:
    """A fresh record of the demo organization and its form."""
    return create_upload(client, api, demo.headers, file_name="tamper.csv")


# ---------------------------------------------------------------------------------------------------------
# Building the tampered bodies.


def edited(form: UploadForm, **changes: str | None) -> list[tuple[str, str]]:
    """The form's fields in order, some replaced (None removes one); names use _ for -."""
    wanted = {name.replace("_", "-"): value for name, value in changes.items()}
    pairs = [(name, wanted.get(name, value)) for name, value in form.fields.items()]
    return [(name, value) for name, value in pairs if value is not None]


def body_of(
    fields: list[tuple[str, str]], content: bytes = CONTENT, *, after: list[Part] | None = None
) -> Body:
    """Fields, then the file, then any parts placed after the file."""
    return encode_multipart([*form_parts(fields, content), *(after or [])])


def flip_last(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


def edited_policy(form: UploadForm) -> str:
    """The form's policy re-encoded with a much larger content-length-range, as a tamperer would."""
    policy = json.loads(base64.b64decode(form.fields["policy"]))
    policy["conditions"] = [
        condition
        if not (isinstance(condition, list) and condition[0] == "content-length-range")
        else ["content-length-range", 0, 10**15]
        for condition in policy["conditions"]
    ]
    return base64.b64encode(json.dumps(policy).encode()).decode()


def credential_with(form: UploadForm, *, index: int, value: str) -> str:
    parts = form.fields["x-amz-credential"].split("/")
    parts[index] = value
    return "/".join(parts)


def previous_day(form: UploadForm) -> str:
    date = datetime.strptime(form.fields["x-amz-credential"].split("/")[1], "%Y%m%d")
    return (date - timedelta(days=1)).strftime("%Y%m%d")


def signature_extras(form: UploadForm, *, policy: str, signature: str) -> dict[str, str]:
    return {
        "AWSAccessKeyId": form.fields["x-amz-credential"].split("/")[0],
        "StringToSign": policy,
        "SignatureProvided": signature,
        "StringToSignBytes": policy.encode().hex(" "),
    }


def missing(spelling: str) -> str:
    return MISSING_FIELD.format(spelling)


def condition_failed(name: str, value: str) -> str:
    return POLICY_FAILED + json.dumps(["eq", f"${name}", value])


@dataclass(frozen=True)
class Refused:
    """A tampered body and S3's answer to it."""

    build: Callable[[UploadForm], Body]
    status: int
    code: str
    message: Callable[[UploadForm], str]
    extras: Callable[[UploadForm], dict[str, str]] | None = None


def fixed(text: str) -> Callable[[UploadForm], str]:
    return lambda _form: text


def missing_case(name: str, spelling: str) -> Refused:
    return Refused(
        build=lambda form: body_of(edited(form, **{name.replace("-", "_"): None})),
        status=400,
        code="InvalidArgument",
        message=fixed(missing(spelling)),
        extras=lambda _form: {"ArgumentName": spelling, "ArgumentValue": ""},
    )


REFUSED: dict[str, Refused] = {
    "signature-changed": Refused(
        build=lambda form: body_of(edited(form, x_amz_signature=flip_last(form.fields["x-amz-signature"]))),
        status=403,
        code="SignatureDoesNotMatch",
        message=fixed(SIGNATURE_MISMATCH),
        extras=lambda form: signature_extras(
            form, policy=form.fields["policy"], signature=flip_last(form.fields["x-amz-signature"])
        ),
    ),
    "policy-edited-signature-kept": Refused(
        build=lambda form: body_of(edited(form, policy=edited_policy(form))),
        status=403,
        code="SignatureDoesNotMatch",
        message=fixed(SIGNATURE_MISMATCH),
        extras=lambda form: signature_extras(
            form, policy=edited_policy(form), signature=form.fields["x-amz-signature"]
        ),
    ),
    "policy-truncated": Refused(
        build=lambda form: body_of(edited(form, policy=form.fields["policy"][:-8])),
        status=403,
        code="SignatureDoesNotMatch",
        message=fixed(SIGNATURE_MISMATCH),
        extras=lambda form: signature_extras(
            form, policy=form.fields["policy"][:-8], signature=form.fields["x-amz-signature"]
        ),
    ),
    "key-changed": Refused(
        build=lambda form: body_of(edited(form, key=form.key.rsplit("/", 1)[0] + "/other.csv")),
        status=403,
        code="AccessDenied",
        message=lambda form: condition_failed("key", form.key),
    ),
    "security-token-changed": Refused(
        build=lambda form: body_of(edited(form, x_amz_security_token="forged-token")),
        status=403,
        code="AccessDenied",
        message=lambda form: condition_failed("x-amz-security-token", form.fields["x-amz-security-token"]),
    ),
    "x-amz-date-changed": Refused(
        build=lambda form: body_of(edited(form, x_amz_date="20200101T000000Z")),
        status=403,
        code="AccessDenied",
        message=lambda form: condition_failed("x-amz-date", form.fields["x-amz-date"]),
    ),
    "credential-date-changed": Refused(
        build=lambda form: body_of(
            edited(form, x_amz_credential=credential_with(form, index=1, value=previous_day(form)))
        ),
        status=403,
        code="SignatureDoesNotMatch",
        message=fixed(SIGNATURE_MISMATCH),
        extras=lambda form: signature_extras(
            form, policy=form.fields["policy"], signature=form.fields["x-amz-signature"]
        ),
    ),
    "credential-region-changed": Refused(
        build=lambda form: body_of(
            edited(form, x_amz_credential=credential_with(form, index=2, value="us-west-2"))
        ),
        status=400,
        code="InvalidArgument",
        message=fixed("the region 'us-west-2' is wrong; expecting 'us-east-1'"),
        extras=lambda form: {
            "ArgumentName": "X-Amz-Credential",
            "ArgumentValue": credential_with(form, index=2, value="us-west-2"),
            "Region": "us-east-1",
        },
    ),
    "credential-unknown-access-key": Refused(
        build=lambda form: body_of(
            edited(form, x_amz_credential=credential_with(form, index=0, value="AKIAIOSFODNN7EXAMPLE"))
        ),
        status=403,
        code="InvalidAccessKeyId",
        message=fixed("The AWS Access Key Id you provided does not exist in our records."),
        extras=lambda _form: {"AWSAccessKeyId": "AKIAIOSFODNN7EXAMPLE"},
    ),
    "credential-malformed": Refused(
        build=lambda form: body_of(edited(form, x_amz_credential="AKIA/not-a-credential")),
        status=400,
        code="InvalidArgument",
        message=fixed(CREDENTIAL_MALFORMED),
        extras=lambda _form: {"ArgumentName": "X-Amz-Credential", "ArgumentValue": "AKIA/not-a-credential"},
    ),
    "algorithm-changed": Refused(
        build=lambda form: body_of(edited(form, x_amz_algorithm="AWS4-HMAC-SHA512")),
        status=400,
        code="InvalidArgument",
        message=fixed('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"'),
        extras=lambda _form: {"ArgumentName": "X-Amz-Algorithm", "ArgumentValue": "AWS4-HMAC-SHA512"},
    ),
    "field-added-x-requested-with": Refused(
        build=lambda form: body_of([*edited(form), ("x-requested-with", "XMLHttpRequest")]),
        status=403,
        code="AccessDenied",
        message=fixed(EXTRA_FIELDS + "x-requested-with"),
    ),
    "field-added-content-type": Refused(
        build=lambda form: body_of([*edited(form), ("Content-Type", "text/csv")]),
        status=403,
        code="AccessDenied",
        message=fixed(EXTRA_FIELDS + "content-type"),
    ),
    "success-action-status-201-not-in-policy": Refused(
        build=lambda form: body_of([*edited(form), ("success_action_status", "201")]),
        status=403,
        code="AccessDenied",
        message=fixed(EXTRA_FIELDS + "success_action_status"),
    ),
    "missing-x-amz-algorithm": missing_case("x-amz-algorithm", "X-Amz-Algorithm"),
    "missing-x-amz-credential": missing_case("x-amz-credential", "X-Amz-Credential"),
    "missing-x-amz-date": missing_case("x-amz-date", "X-Amz-Date"),
    "missing-x-amz-signature": missing_case("x-amz-signature", "X-Amz-Signature"),
    "missing-policy": missing_case("policy", "Policy"),
    "missing-key": missing_case("key", "key"),
    "missing-x-amz-security-token": Refused(
        build=lambda form: body_of(edited(form, x_amz_security_token=None)),
        status=403,
        code="AccessDenied",
        message=lambda form: condition_failed("x-amz-security-token", form.fields["x-amz-security-token"]),
    ),
    "no-auth-fields-at-all": Refused(
        build=lambda form: body_of([("key", form.key)]),
        status=403,
        code="AccessDenied",
        message=fixed("Access Denied"),
    ),
    "sigv2-form": Refused(
        build=lambda form: body_of(
            [
                ("key", form.key),
                ("AWSAccessKeyId", "AKIAIOSFODNN7EXAMPLE"),
                ("policy", form.fields["policy"]),
                ("signature", "c2lnbmF0dXJl"),
            ]
        ),
        status=400,
        code="InvalidRequest",
        message=fixed(
            "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
        ),
    ),
    "key-after-file": Refused(
        build=lambda form: body_of(edited(form, key=None), after=[field("key", form.key)]),
        status=400,
        code="InvalidArgument",
        message=fixed(missing("key")),
        extras=lambda _form: {"ArgumentName": "key", "ArgumentValue": ""},
    ),
    "signature-after-file": Refused(
        build=lambda form: body_of(
            edited(form, x_amz_signature=None),
            after=[field("x-amz-signature", form.fields["x-amz-signature"])],
        ),
        status=400,
        code="InvalidArgument",
        message=fixed(missing("X-Amz-Signature")),
        extras=lambda _form: {"ArgumentName": "X-Amz-Signature", "ArgumentValue": ""},
    ),
    "no-file-part": Refused(
        build=lambda form: encode_multipart([field(name, value) for name, value in edited(form)]),
        status=400,
        code="InvalidArgument",
        message=fixed("POST requires exactly one file upload per request."),
        extras=lambda _form: {"ArgumentName": "file", "ArgumentValue": "0"},
    ),
    "empty-file-below-min": Refused(
        build=lambda form: body_of(edited(form), b""),
        status=400,
        code="EntityTooSmall",
        message=fixed("Your proposed upload is smaller than the minimum allowed size"),
        extras=lambda _form: {"ProposedSize": "0", "MinSizeAllowed": "1"},
    ),
    "fields-before-file-above-20kb": Refused(
        build=lambda form: body_of([("x-ignore-padding", "p" * 21_000), *edited(form)]),
        status=400,
        code="MaxPostPreDataLengthExceeded",
        message=fixed("Your POST request fields preceeding the upload file was too large."),
        extras=lambda _form: {"MaxPostPreDataLengthBytes": "20480"},
    ),
    "urlencoded-body": Refused(
        build=lambda form: (
            urlencode([*edited(form), ("file", CONTENT.decode())]).encode(),
            "application/x-www-form-urlencoded",
        ),
        status=412,
        code="PreconditionFailed",
        message=fixed("At least one of the pre-conditions you specified did not hold"),
        extras=lambda _form: {"Condition": "Bucket POST must be of the enclosure-type multipart/form-data"},
    ),
    "json-body": Refused(
        build=lambda form: (json.dumps(form.fields).encode(), "application/json"),
        status=412,
        code="PreconditionFailed",
        message=fixed("At least one of the pre-conditions you specified did not hold"),
        extras=lambda _form: {"Condition": "Bucket POST must be of the enclosure-type multipart/form-data"},
    ),
    "multipart-without-boundary": Refused(
        build=lambda form: (body_of(edited(form))[0], "multipart/form-data"),
        status=400,
        code="MalformedPOSTRequest",
        message=fixed("The body of your POST request is not well-formed multipart/form-data."),
    ),
    "multipart-cut-inside-the-file": Refused(
        build=lambda form: (
            body_of(edited(form), CONTENT * 100)[0][: -len(CONTENT) * 50],
            body_of(edited(form))[1],
        ),
        status=400,
        code="MalformedPOSTRequest",
        message=fixed("The body of your POST request is not well-formed multipart/form-data."),
    ),
}


@pytest.mark.parametrize("case", list(REFUSED.values()), ids=list(REFUSED))
def test_refused_forms_store_nothing(
    client: httpx2.Client, api: InProcessApp, form: UploadForm, case: Refused
) -> None:
    content, content_type = case.build(form)
    response = client.post(form.url, content=content, headers={"Content-Type": content_type})
    error = s3_error(response, status=case.status, code=case.code, message=case.message(form))
    extras = {
        name: value for name, value in error.items() if name not in {"Code", "Message", "RequestId", "HostId"}
    }
    assert extras == (case.extras(form) if case.extras else {})
    assert_still_uploading(api, form)
    # The untampered form still works afterwards: the refusal did not use it up.
    accepted = post_parts(client, form.url, form_parts(form.fields, CONTENT))
    assert accepted.status_code == 204, accepted.text
    assert_stored(api, form.key, CONTENT)


# ---------------------------------------------------------------------------------------------------------
# Variants S3 accepts.

EVERY_BYTE = bytes(range(256)) * 64 + b"\r\n--\r\n--" + bytes(range(255, -1, -1))


def case_insensitive(form: UploadForm) -> list[Part]:
    spellings = {
        "key": "Key",
        "x-amz-algorithm": "X-Amz-Algorithm",
        "x-amz-credential": "X-Amz-Credential",
        "x-amz-date": "X-Amz-Date",
        "x-amz-security-token": "X-Amz-Security-Token",
        "policy": "Policy",
        "x-amz-signature": "X-Amz-Signature",
    }
    return form_parts([(spellings[name], value) for name, value in form.fields.items()], CONTENT)


ACCEPTED: dict[str, tuple[Callable[[UploadForm], list[Part]], bytes]] = {
    "x-ignore-field-added": (
        lambda form: form_parts([*edited(form), ("x-ignore-foo", "bar")], CONTENT),
        CONTENT,
    ),
    "field-after-file-ignored": (
        lambda form: [*form_parts(form.fields, CONTENT), field("x-requested-with", "XMLHttpRequest")],
        CONTENT,
    ),
    "second-file-after-file-ignored": (
        lambda form: [*form_parts(form.fields, CONTENT), file_part(b"second file", filename="b.csv")],
        CONTENT,
    ),
    "field-names-in-any-case": (case_insensitive, CONTENT),
    "aws-example-casing": (
        lambda form: form_parts(
            [
                (
                    {
                        "x-amz-credential": "X-Amz-Credential",
                        "policy": "Policy",
                        "x-amz-signature": "X-Amz-Signature",
                    }.get(name, name),
                    value,
                )
                for name, value in form.fields.items()
            ],
            CONTENT,
        ),
        CONTENT,
    ),
    "bucket-field-covered-by-the-policy": (
        lambda form: form_parts([("bucket", UPLOADS_BUCKET), *edited(form)], CONTENT),
        CONTENT,
    ),
    "fields-in-another-order": (
        lambda form: form_parts(list(form.fields.items())[::-1], CONTENT),
        CONTENT,
    ),
    "file-without-filename": (
        lambda form: [*(field(name, value) for name, value in form.fields.items()), Part("file", CONTENT)],
        CONTENT,
    ),
    "binary-content-with-boundary-like-lines": (
        lambda form: form_parts(form.fields, EVERY_BYTE),
        EVERY_BYTE,
    ),
    "one-byte": (lambda form: form_parts(form.fields, b"x"), b"x"),
}


@pytest.mark.parametrize(("build", "content"), list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_accepted_variants(
    client: httpx2.Client,
    api: InProcessApp,
    form: UploadForm,
    build: Callable[[UploadForm], list[Part]],
    content: bytes,
) -> None:
    response = post_parts(client, form.url, build(form))
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert "content-type" not in response.headers
    assert_stored(api, form.key, content)
    row = upload_row(api, form.id)
    assert row.status == "analyzing"
    assert row.size_bytes == len(content)
    assert row.sha256 == hashlib.sha256(content).hexdigest()
    assert pipeline_jobs(api, row.id) == [("analyze", "pending")]


def test_bucket_url_with_a_trailing_slash(client: httpx2.Client, api: InProcessApp, form: UploadForm) -> None:
    # The documentation's example URL is the bucket's with a trailing slash.
    response = post_parts(client, form.url + "/", form_parts(form.fields, CONTENT))
    assert response.status_code == 204, response.text
    assert_stored(api, form.key, CONTENT)


# ---------------------------------------------------------------------------------------------------------
# The upload gate: a correctly signed form still needs a live record whose key it names.


def test_signed_form_with_an_unknown_token(
    client: httpx2.Client, api: InProcessApp, form: UploadForm
) -> None:
    fields = boto3_post(api, key=form.key, token="not-a-token-of-this-server")
    response = post_parts(client, form.url, form_parts(fields, CONTENT))
    error = s3_error(
        response,
        status=400,
        code="InvalidToken",
        message="The provided token is malformed or otherwise invalid.",
    )
    assert error["Token-0"] == "not-a-token-of-this-server"
    assert_still_uploading(api, form)


def test_signed_form_naming_another_records_key(
    client: httpx2.Client, api: InProcessApp, demo: LoggedIn, form: UploadForm
) -> None:
    other = create_upload(client, api, demo.headers, file_name="other.csv")
    fields = boto3_post(api, key=other.key, token=form.fields["x-amz-security-token"])
    response = post_parts(client, form.url, form_parts(fields, CONTENT))
    s3_error(response, status=403, code="AccessDenied", message="Access Denied")
    assert_still_uploading(api, form)
    assert_still_uploading(api, other)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"status": "canceled"}, id="record-canceled"),
        pytest.param({"status": "failure"}, id="record-failed"),
    ],
)
def test_form_of_a_record_no_longer_uploading(
    client: httpx2.Client, api: InProcessApp, form: UploadForm, change: dict[str, str]
) -> None:
    with api.db() as db:
        db.execute(update(Upload).where(Upload.uid == form.id).values(**change))
        db.commit()
    response = post_parts(client, form.url, form_parts(form.fields, CONTENT))
    error = s3_error(response, status=400, code="ExpiredToken", message="The provided token has expired.")
    assert error["Token-0"] == form.fields["x-amz-security-token"]
    assert_nothing_stored(api, form.key)
    row = upload_row(api, form.id)
    assert row.status == change["status"]
    assert row.size_bytes is None
    assert pipeline_jobs(api, row.id) == []


def test_record_deadline_passed_while_a_boto3_policy_is_still_valid(
    client: httpx2.Client, api: InProcessApp, form: UploadForm
) -> None:
    # boto3's policy lasts an hour; the record's own deadline (the server's form lifetime) is what counts.
    fields = boto3_post(api, key=form.key, token=form.fields["x-amz-security-token"])
    past = upload_row(api, form.id).created_at
    with api.db() as db:
        db.execute(update(Upload).where(Upload.uid == form.id).values(form_expires_at=past))
        db.commit()
    response = post_parts(client, form.url, form_parts(fields, CONTENT))
    error = s3_error(response, status=400, code="ExpiredToken", message="The provided token has expired.")
    assert error["Token-0"] == form.fields["x-amz-security-token"]
    assert_still_uploading(api, form)


# ---------------------------------------------------------------------------------------------------------
# Size limits (an app whose largest upload is 100 bytes) and an expired policy (forms that last 1 s).


@pytest.fixture(scope="module")
def small_server(make_app: AppFactory) -> InProcessApp:
    return make_app(max_upload_bytes="100")


@pytest.fixture(scope="module")
def small_demo(small_server: InProcessApp) -> LoggedIn:
    return small_server.login()


def assert_one_byte_too_large(response: httpx2.Response) -> None:
    """S3's EntityTooLarge for a 101-byte file on the app whose largest upload is 100 bytes."""
    error = s3_error(
        response,
        status=400,
        code="EntityTooLarge",
        message="Your proposed upload exceeds the maximum allowed size",
    )
    assert (error["ProposedSize"], error["MaxSizeAllowed"]) == ("101", "100")


def test_file_above_the_maximum(small_server: InProcessApp, small_demo: LoggedIn) -> None:
    client = small_server.client
    form = create_upload(client, small_server, small_demo.headers)
    policy = json.loads(base64.b64decode(form.fields["policy"]))
    assert ["content-length-range", 1, 100] in policy["conditions"]
    response = post_parts(client, form.url, form_parts(form.fields, b"x" * 101))
    assert_one_byte_too_large(response)
    assert_still_uploading(small_server, form)

    at_the_maximum = post_parts(client, form.url, form_parts(form.fields, b"y" * 100))
    assert at_the_maximum.status_code == 204, at_the_maximum.text
    assert_stored(small_server, form.key, b"y" * 100)


@pytest.mark.parametrize("size", [64 * 1024 + 7, 3 * 1024 * 1024 + 1])
def test_a_file_far_above_the_maximum_reports_its_own_size(
    small_server: InProcessApp, small_demo: LoggedIn, size: int
) -> None:
    """Refused early, but ProposedSize is the file's size (from Content-Length), as S3 reports it."""
    client = small_server.client
    form = create_upload(client, small_server, small_demo.headers)
    error = s3_error(
        post_parts(client, form.url, form_parts(form.fields, b"z" * size)),
        status=400,
        code="EntityTooLarge",
        message="Your proposed upload exceeds the maximum allowed size",
    )
    assert (error["ProposedSize"], error["MaxSizeAllowed"]) == (str(size), "100")
    assert_still_uploading(small_server, form)


def test_the_setting_caps_a_policy_without_a_size_range(
    small_server: InProcessApp, small_demo: LoggedIn
) -> None:
    client = small_server.client
    form = create_upload(client, small_server, small_demo.headers)
    fields = boto3_post(small_server, key=form.key, token=form.fields["x-amz-security-token"])
    assert "content-length-range" not in base64.b64decode(fields["policy"]).decode()
    response = post_parts(client, form.url, form_parts(fields, b"z" * 101))
    assert_one_byte_too_large(response)
    assert_still_uploading(small_server, form)


@pytest.fixture(scope="module")
def short_lived_server(make_app: AppFactory) -> InProcessApp:
    return make_app(upload_form_ttl_seconds="1")


def test_expired_policy(short_lived_server: InProcessApp, server_clock: MovableClock) -> None:
    client = short_lived_server.client
    logged_in = short_lived_server.login()
    form = create_upload(client, short_lived_server, logged_in.headers)
    policy = json.loads(base64.b64decode(form.fields["policy"]))
    signed_at = datetime.strptime(form.fields["x-amz-date"], "%Y%m%dT%H%M%SZ")
    expires_at = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ")
    assert expires_at - signed_at == timedelta(seconds=1)
    server_clock.advance(2)
    response = post_parts(client, form.url, form_parts(form.fields, CONTENT))
    s3_error(
        response, status=403, code="AccessDenied", message="Invalid according to Policy: Policy expired."
    )
    assert_still_uploading(short_lived_server, form)


# ---------------------------------------------------------------------------------------------------------
# A large file streams through a live server without either side holding it.

LARGE_SIZE = 64 * 1024 * 1024
CHUNK = 1024 * 1024


def test_64_mib_file_streams_through(server: LiveServer) -> None:
    with httpx2.Client(timeout=60) as client:
        _stream_64_mib(client, server, server.login())


def _stream_64_mib(client: httpx2.Client, server: LiveServer, demo: LoggedIn) -> None:
    form = create_upload(client, server, demo.headers, file_name="large.csv")
    digest = hashlib.sha256()
    seed = hashlib.sha256(b"datalab").digest()

    def chunks() -> Iterator[bytes]:
        for index in range(LARGE_SIZE // CHUNK):
            # Different bytes in every chunk, made on the fly and hashed as they are sent.
            block = hashlib.sha256(seed + index.to_bytes(4, "big")).digest() * (CHUNK // 32)
            digest.update(block)
            yield block

    boundary = new_boundary()
    response = client.post(
        form.url,
        content=streamed_multipart(form.fields, chunks(), boundary=boundary),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 204, response.text
    row = upload_row(server, form.id)
    assert row.status == "analyzing"
    assert row.size_bytes == LARGE_SIZE
    assert row.sha256 == digest.hexdigest()
    stored = object_path(server, form.key)
    assert stored.stat().st_size == LARGE_SIZE
    assert sha256_of(stored) == digest.hexdigest()
    assert pipeline_jobs(server, row.id) == [("analyze", "pending")]
