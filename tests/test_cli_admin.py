"""`datalab admin` and `datalab demo` run as commands, checked against the API and the database.

The commands run in the test process (the Typer app `python -m datalab` runs); `datalab demo` runs
as a process of its own too.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import func, select

from datalab.accounts.models import ApiKey, Organization, User
from datalab.demo.service import DEMO_STUDENTS, demo_students
from datalab.exports.models import Export
from datalab.students.linkage import default_model
from datalab.students.matching import current_model
from datalab.students.models import MatchModel, Student
from tests.support.accounts import login_body, run_cli, unique, unique_fice
from tests.support.checks import assert_envelope
from tests.support.factories import add_account, add_organization
from tests.support.server import LiveServer
from tests.support.students import record_sampled_pairs

PASSWORD_ENV = "DATALAB_NEW_PASSWORD"
# These tests prove what the commands store, not the model's precision (tests/students/ measure it on
# the default number of pairs): a tenth of the default sample trains in a fraction of the time.
TRAINING_PAIRS = 100_000
TRAINING = {"DATALAB_EMATCH_TRAINING_PAIRS": str(TRAINING_PAIRS)}


def admin_json(server: LiveServer, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run `datalab admin <args> --json` in this process, expecting success; the parsed output."""
    result = server.invoke("admin", *args, "--json", env=env)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def admin_fails(server: LiveServer, *args: str, env: dict[str, str] | None = None) -> str:
    """Run `datalab admin <args> --json` in this process, expecting failure with nothing on stdout; what it
    said on stderr (an exception the command does not handle is raised)."""
    result = server.invoke("admin", *args, "--json", env=env)
    assert result.exit_code != 0, result.stdout
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    return result.stderr


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


def login_response(server: LiveServer, user_name: str, password: str, api_key: str) -> httpx2.Response:
    return httpx2.post(
        server.base_url + "/login", headers={"x-api-key": api_key}, json=login_body(user_name, password)
    )


# --- organizations ------------------------------------------------------------------------------------


def admin_json_each(server: LiveServer, *commands: list[str]) -> list[Any]:
    """Run several `datalab admin ... --json` commands, each expected to succeed; their parsed outputs."""
    return [admin_json(server, *command) for command in commands]


def admin_fails_each(server: LiveServer, *commands: list[str]) -> list[str]:
    """Run several `datalab admin ... --json` commands, each expected to fail; what each said on stderr."""
    return [admin_fails(server, *command) for command in commands]


def test_org_create_keeps_leading_zeros(server: LiveServer) -> None:
    name = unique("Zero College")
    fice = unique_fice()
    created = admin_json(server, "org", "create", "--name", f"  {name} ", "--fice", fice, "--state", "ne")
    assert set(created) == {"uid", "name", "fice", "stateCode"}
    assert created["name"] == name
    assert created["fice"] == fice
    assert created["fice"].startswith("00")
    assert created["stateCode"] == "NE"

    # A user of the organization sees the FICE exactly so in the login response.
    account = add_account(server, organization_uids=[created["uid"]])
    response = login_response(server, account.user_name, account.password, account.api_key)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["organizations"] == [created]


def test_org_create_refusals(server: LiveServer) -> None:
    existing = add_organization(server)
    create = ["org", "create", "--name", unique("Copy College")]
    duplicate, demo_fice, bad_state = admin_fails_each(
        server,
        [*create, "--fice", existing.fice],
        [*create, "--fice", "001024"],
        [*create, "--fice", unique_fice(), "--state", "Kansas"],
    )
    assert f"FICE {existing.fice} already exists" in duplicate
    assert "FICE 001024 already exists" in demo_fice
    assert "stateCode" in bad_state
    assert "Kansas" in bad_state


# --- users --------------------------------------------------------------------------------------------


def test_user_create_with_password_from_the_environment(server: LiveServer) -> None:
    organization = add_organization(server)
    user_name = unique("Env.User") + "@Example.edu"
    password = "from the environment"
    created = admin_json(
        server,
        "user",
        "create",
        "--user-name",
        user_name,
        "--org",
        organization.fice,
        "--first-name",
        "Env",
        "--last-name",
        "User",
        env={PASSWORD_ENV: password},
    )
    assert created["userName"] == user_name
    assert created["email"] == user_name
    assert (created["firstName"], created["lastName"], created["status"]) == ("Env", "User", "Active")
    assert [o["uid"] for o in created["organizations"]] == [organization.uid]

    with server.db() as db:
        stored = db.scalars(select(User).where(User.uid == created["uid"])).one()
        assert stored.user_name_key == user_name.lower()
        assert password not in stored.password_hash
        assert stored.password_hash.startswith("$argon2id$")

    issued = admin_json(server, "apikey", "create", "--user", user_name.lower(), "--name", "env test")
    response = login_response(server, user_name, password, issued["apiKey"])
    assert response.status_code == 200, response.text
    assert response.json()["user"]["uid"] == created["uid"]


def test_user_create_with_an_unknown_org_fails_and_creates_nothing(server: LiveServer) -> None:
    user_name = unique("orphan") + "@example.edu"
    message = admin_fails(
        server,
        "user",
        "create",
        "--user-name",
        user_name,
        "--org",
        "999999",
        env={PASSWORD_ENV: "long enough pw"},
    )
    assert "no organization" in message
    assert "999999" in message
    with server.db() as db:
        assert db.scalar(select(User).where(User.user_name_key == user_name)) is None


def test_user_commands_refusals(server: LiveServer) -> None:
    account = add_account(server)
    create = ["user", "create", "--org", account.organization_uids[0]]
    duplicate, short, unknown_status, unknown_user = admin_fails_each(
        server,
        [*create, "--user-name", account.user_name.upper(), "--password", "long enough pw"],
        [*create, "--user-name", unique("short") + "@example.edu", "--password", "short"],
        ["user", "set-status", account.user_name, "Disabled"],
        ["user", "set-status", "nobody@example.edu", "Inactive"],
    )
    assert "already exists" in duplicate
    assert "at least 8 characters" in short
    assert "Active" in unknown_status
    assert "Inactive" in unknown_status
    assert "no user" in unknown_user
    # Nothing changed: the account still logs in as before.
    response = login_response(server, account.user_name, account.password, account.api_key)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["status"] == "Active"


# --- API keys -----------------------------------------------------------------------------------------


def test_apikey_create_and_revoke(server: LiveServer) -> None:
    account = add_account(server)
    issued = admin_json(server, "apikey", "create", "--user", account.user_name, "--name", "nightly job")
    assert set(issued) == {"uid", "apiKey", "userName", "name"}
    assert re.fullmatch(r"[A-Za-z0-9]{40}", issued["apiKey"])
    assert (issued["userName"], issued["name"]) == (account.user_name, "nightly job")
    assert login_response(server, account.user_name, account.password, issued["apiKey"]).status_code == 200

    revoked = admin_json(server, "apikey", "revoke", issued["uid"])
    assert revoked["uid"] == issued["uid"]
    revoked_at = datetime.fromisoformat(revoked["revokedAt"])
    assert abs(datetime.now(UTC) - revoked_at) < timedelta(minutes=1)
    refused = login_response(server, account.user_name, account.password, issued["apiKey"])
    assert_envelope(refused, 401, "invalid_api_key")
    # Revoking one key leaves the user's other key working.
    assert login_response(server, account.user_name, account.password, account.api_key).status_code == 200

    listed = {k["uid"]: k for k in admin_json(server, "apikey", "list", "--user", account.user_name)}
    assert set(listed) == {issued["uid"], account.api_key_uid}
    assert listed[issued["uid"]]["revokedAt"] == revoked["revokedAt"]
    assert listed[issued["uid"]]["prefix"] == issued["apiKey"][:8]
    assert listed[account.api_key_uid]["revokedAt"] is None
    assert all(issued["apiKey"] not in json.dumps(row) for row in listed.values())


def test_apikey_commands_refuse_unknown_users_and_keys(server: LiveServer) -> None:
    create, revoke, listing = admin_fails_each(
        server,
        ["apikey", "create", "--user", "nobody@example.edu"],
        ["apikey", "revoke", "00000000-0000-0000-0000-000000000000"],
        ["apikey", "list", "--user", "nobody@example.edu"],
    )
    assert "no user" in create
    assert "no API key" in revoke
    assert "no user" in listing


# --- exports ------------------------------------------------------------------------------------------


def between(moment: datetime, start: datetime, end: datetime) -> bool:
    return start - timedelta(seconds=1) <= moment <= end + timedelta(seconds=1)


def test_export_publish_names_and_counts(server: LiveServer, tmp_path: Path) -> None:
    organization = add_organization(server)
    source = write_csv(
        tmp_path / "my upload.csv",
        'FIRSTNAME,LASTNAME,NOTE\r\nAda,Lovelace,"first\r\nprogrammer"\r\n\r\nAlan,Turing,\r\nGrace,Hopper,x\r\n',
    )
    started = datetime.now(UTC)
    published = admin_json(
        server,
        "export",
        "publish",
        "--org",
        organization.fice,
        "--product",
        "prospect",
        "--order-name",
        "Fall Search 2025",
        str(source),
    )
    finished = datetime.now(UTC)
    assert published["quantity"] == 3
    assert published["productKey"] == "prospect"
    assert published["status"] == "NotDelivered"
    assert (published["organizationUid"], published["fice"]) == (organization.uid, organization.fice)
    dates = {f"{started:%Y%m%d}", f"{finished:%Y%m%d}"}
    assert published["fileName"] in {
        f"Prospect_{day}_{organization.fice}_Fall_Search_2025.csv" for day in dates
    }
    assert between(datetime.fromtimestamp(published["date"] / 1000, UTC), started, finished)

    with server.db() as db:
        stored = db.scalars(select(Export).where(Export.uid == published["uid"])).one()
        assert stored.file_name == published["fileName"]
        assert stored.quantity == 3
        assert stored.size_bytes == source.stat().st_size
        assert stored.order_name == "Fall Search 2025"


def test_score_reporter_file_name(server: LiveServer, tmp_path: Path) -> None:
    organization = add_organization(server, name=f"North Plains State {unique('U')[2:]}")
    source = write_csv(tmp_path / "scores.csv", "ACT_ID,COMPOSITE\n1,30\n2,25\n")
    started = datetime.now(UTC)
    published = admin_json(
        server, "export", "publish", "--org", organization.uid, "--product", "score-reporter", str(source)
    )
    finished = datetime.now(UTC)
    assert published["quantity"] == 2
    expected_org = "-".join(organization.name.upper().split())
    match = re.fullmatch(rf"ACT-{re.escape(expected_org)}-(\d{{8}})-(\d{{5,6}})\.csv", published["fileName"])
    assert match, published["fileName"]
    day, clock = match.groups()
    hour, minute, second = int(clock[:-4]), int(clock[-4:-2]), int(clock[-2:])
    # The hour is not zero-padded.
    assert len(clock) == (5 if hour < 10 else 6)
    moment = datetime.strptime(day, "%m%d%Y").replace(hour=hour, minute=minute, second=second, tzinfo=UTC)
    assert between(moment, started.replace(microsecond=0), finished)


def test_export_publish_refusals(server: LiveServer, tmp_path: Path) -> None:
    organization = add_organization(server)
    source = write_csv(tmp_path / "rows.csv", "A,B\n1,2\n")
    empty = write_csv(tmp_path / "empty.csv", "")
    publish = ["export", "publish", "--product"]
    unknown_product, unknown_org, empty_file = admin_fails_each(
        server,
        [*publish, "brochures", "--org", organization.uid, str(source)],
        [*publish, "prospect", "--org", "999998", str(source)],
        [*publish, "prospect", "--org", organization.uid, str(empty)],
    )
    assert "productKey must be one of" in unknown_product
    assert "brochures" in unknown_product
    assert "no organization" in unknown_org
    assert "empty" in empty_file
    with server.db() as db:
        stored = db.scalars(
            select(Export).join(Export.organization).where(Organization.uid == organization.uid)
        )
        assert stored.all() == []


def test_export_list_filters(server: LiveServer, tmp_path: Path) -> None:
    organization = add_organization(server)
    source = write_csv(tmp_path / "rows.csv", "A,B\n1,2\n3,4\n")
    publish = ["export", "publish", "--org", organization.uid, str(source)]
    published = admin_json_each(
        server,
        [*publish, "--product", "prospect", "--order-name", "Spring List"],
        [*publish, "--product", "score-reporter"],
    )
    uids = {e["uid"]: e["productKey"] for e in published}

    listing = ["admin", "export", "list", "--json", "--org", organization.uid]
    results = [
        server.invoke(*command)
        for command in (
            ["admin", "export", "list", "--json", "--org", organization.fice],
            [*listing, "--status", "NotDelivered", "--product", "prospect"],
            [*listing, "--status", "Delivered"],
            [*listing, "--status", "delivered"],
        )
    ]
    everything, prospects, delivered = (json.loads(r.stdout) for r in results[:3])
    assert {e["uid"]: e["productKey"] for e in everything} == uids
    assert all(e["organizationUid"] == organization.uid for e in everything)
    created = [e["date"] for e in everything]
    assert created == sorted(created, reverse=True)
    assert [(e["productKey"], e["status"]) for e in prospects] == [("prospect", "NotDelivered")]
    assert delivered == []
    assert results[3].exit_code != 0
    assert "Delivered, NotDelivered" in results[3].stderr

    # The organization's users see exactly the same list over the API.
    account = add_account(server, organization_uids=[organization.uid])
    logged_in = server.login(user_name=account.user_name, password=account.password, api_key=account.api_key)
    listed = httpx2.get(server.base_url + "/datacenter/exports", headers=logged_in.headers)
    assert listed.status_code == 200, listed.text
    assert sorted(e["uid"] for e in listed.json()) == sorted(uids)


# --- demo ---------------------------------------------------------------------------------------------


def demo_api_keys(server: LiveServer) -> list[str]:
    """Prefixes of the demo user's API keys, as stored."""
    assert server.demo is not None
    with server.db() as db:
        query = select(ApiKey.prefix).join(User).where(User.user_name_key == server.demo.user_name)
        return sorted(db.scalars(query))


def test_demo_is_idempotent(server: LiveServer) -> None:
    assert server.demo is not None
    organization_uid = server.demo.organization_uid
    exports_before = admin_json(server, "export", "list", "--org", organization_uid)
    keys_before = demo_api_keys(server)

    result = run_cli(server, "demo", "--base-url", server.root, "--json")
    assert result.returncode == 0, result.stderr
    again = json.loads(result.stdout)
    assert again == {
        "apiKey": server.demo.api_key,
        "userName": server.demo.user_name,
        "password": server.demo.password,
        "organizationUid": organization_uid,
        "baseUrl": server.demo.base_url,
    }
    exports_after = admin_json(server, "export", "list", "--org", organization_uid)
    assert sorted(e["uid"] for e in exports_after) == sorted(e["uid"] for e in exports_before)
    assert len(exports_before) >= 16
    assert demo_api_keys(server) == keys_before
    assert keys_before.count(server.demo.api_key[:8]) == 1
    # The credentials printed the second time still log in.
    assert server.login().organization_uid == organization_uid


def test_students_load_inserts_then_updates_and_keeps_leading_zeros(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sampled = record_sampled_pairs(monkeypatch)
    key = unique("00")
    students = tmp_path / "students.csv"
    students.write_text(
        "StudentKey,FirstName,LastName,BirthDate,Email,ZipCode\n"
        f"{key},Ann,O'Brien,4/1/2008,Ann.OBrien@Example.edu,2134\n",
        encoding="utf-8",
    )
    first = admin_json(server, "students", "load", str(students), env=TRAINING)
    assert (first["inserted"], first["updated"]) == (1, 0)
    second = admin_json(server, "students", "load", str(students), env=TRAINING)
    assert (second["inserted"], second["updated"]) == (0, 1)
    # Each load trains the matching model on the whole student database, on the pairs the setting asks.
    assert sampled == [TRAINING_PAIRS] * 2
    assert second["model"]["id"] > first["model"]["id"]
    assert second["model"]["students"] == first["model"]["students"] >= 1
    with server.db() as db:
        student = db.scalar(select(Student).where(Student.student_key == key))
        assert student is not None
        assert (student.birth_date, student.zip_code, student.zip5) == ("2008/04/01", "02134", "02134")
        assert (student.email_key, student.name_key) == ("ann.obrien@example.edu", "ann|obrien")


def test_students_train_stores_a_model_the_matcher_uses(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sampled = record_sampled_pairs(monkeypatch)
    trained = admin_json(server, "students", "train", env=TRAINING)
    assert sampled == [TRAINING_PAIRS]
    with server.db() as db:
        stored = db.scalar(select(MatchModel).order_by(MatchModel.id.desc()).limit(1))
        assert stored is not None
        count = db.scalar(select(func.count(Student.id))) or 0
        model_id, settings = current_model(db)
    assert (trained["id"], trained["students"]) == (stored.id, stored.student_count) == (model_id, count)
    assert datetime.fromisoformat(trained["trainedAt"]) == stored.trained_at
    # splink's settings: the comparisons with their estimated probabilities, the prior from the count.
    assert settings == json.loads(stored.settings)
    assert settings["probability_two_random_records_match"] == 1 / count
    assert {c["output_column_name"] for c in settings["comparisons"]} >= {
        "first_name",
        "last_name",
        "dob",
        "email",
    }


def test_students_train_with_an_ematch_file_estimates_m_by_em(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sampled = record_sampled_pairs(monkeypatch)
    people = tmp_path / "people.csv"
    rows = list(demo_students(today=datetime.now(UTC).date()))[:500]
    people.write_text(
        "UniqueID,FirstName,LastName,BirthDate,Email,ZipCode\n"
        + "".join(
            f"P{i},{r['FirstName']},{r['LastName']},{r['BirthDate']},{email},{r['ZipCode']}\n"
            for i, r in enumerate(rows)
            for email in [r["Email"] if i % 3 else ""]
        ),
        encoding="utf-8",
    )
    trained = admin_json(server, "students", "train", "--people", str(people), env=TRAINING)
    assert sampled == [TRAINING_PAIRS]
    with server.db() as db:
        _, settings = current_model(db)
    assert trained["students"] >= DEMO_STUDENTS

    def m_of(model: dict[str, Any], name: str) -> list[float]:
        (comparison,) = [c for c in model["comparisons"] if c["output_column_name"] == name]
        return [level.get("m_probability") for level in comparison["comparison_levels"]]

    # EM on this file's pairs, not the shipped model's m probabilities.
    assert m_of(settings, "email") != m_of(default_model(), "email")
    assert "is not a readable file" in admin_fails(
        server, "students", "train", "--people", str(tmp_path / "nope")
    )


def test_students_train_refuses_a_number_of_pairs_that_is_not_a_positive_whole_number(
    server: LiveServer,
) -> None:
    def models() -> int:
        with server.db() as db:
            return db.scalar(select(func.count(MatchModel.id))) or 0

    before = models()
    for pairs in ("0", "-1", "1e6", "many"):
        refused = admin_fails(server, "students", "train", env={"DATALAB_EMATCH_TRAINING_PAIRS": pairs})
        assert "invalid settings: DATALAB_EMATCH_TRAINING_PAIRS: " in refused, refused
    assert models() == before


def test_students_load_refuses_a_bad_file_and_loads_nothing(server: LiveServer, tmp_path: Path) -> None:
    key = unique("S")
    no_key = tmp_path / "no-key.csv"
    no_key.write_text("FirstName,LastName\nAnn,Lee\n", encoding="utf-8")
    assert "lacks StudentKey" in admin_fails(server, "students", "load", str(no_key))
    half_bad = tmp_path / "half-bad.csv"
    half_bad.write_text(f"StudentKey,FirstName,LastName\n{key},Ann,Lee\n{key}-2,,Lee\n", encoding="utf-8")
    assert "row 3" in admin_fails(server, "students", "load", str(half_bad))
    with server.db() as db:
        assert db.scalar(select(Student).where(Student.student_key == key)) is None


def test_the_demo_seeds_the_student_database(server: LiveServer) -> None:
    expected = {row["StudentKey"]: row for row in demo_students(today=datetime.now(UTC).date())}
    assert len(expected) == DEMO_STUDENTS
    with server.db() as db:
        stored = {
            student.student_key: student
            for student in db.scalars(select(Student).where(Student.student_key.in_(expected)))
        }
    assert stored.keys() == expected.keys()
    sample = next(iter(expected.values()))
    student = stored[sample["StudentKey"]]
    assert (student.first_name, student.last_name, student.zip_code) == (
        sample["FirstName"],
        sample["LastName"],
        sample["ZipCode"],
    )
