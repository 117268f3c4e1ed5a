"""Tests for datalab.layouts: the shipped per-product definitions, their validation and header matching."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from datalab.layouts import (
    PRODUCTS,
    Layout,
    LayoutError,
    LayoutField,
    load_layout,
    load_layout_file,
    match_headers,
    missing_required,
    normalize_header,
)
from datalab.layouts.cleansing import RULES

FUNNEL = ("Inquired", "Applied", "Completed", "Admitted", "Confirmed", "Enrolled", "Canceled")

# The reference table, group by group, in its order.
REFERENCE_FIELDS = [
    *("UniqueID", "StudentID", "ALTERNATEID"),
    *("FirstName", "LastName", "PREFERREDFIRSTNAME", "Email", "CellPhoneNumber", "TextMessageOptIn"),
    *("Address1", "Address2", "City", "StateCode", "ZipCode", "CountryOfOrigin", "Territory"),
    *("Gender", "BirthDate", "Ethnicity", "HISPANIC", "FirstGenFlag", "International", "StudentAthlete"),
    *("EntryTerm", "EntryYear", "HSGradYear", "StudentType", "StudentStatus", "CampusLocation"),
    *("SrcCode", "SrcDate", "ProspectCode", "ProspectDate"),
    *FUNNEL,
    *("Dropped", "Graduated", "DEFERRED", "DENIED", "WAITLISTED", "DEFERREDFLAG", "WAITLISTFLAG"),
    *("GPA", "COLLEGEGPA", "HSCode", "ACTScore", "SATScore", "TESTOPTIONAL", "TRANSFERCOLLEGE", "INDEXSCORE"),
    *("AcademicProgram", "AdmittedProgram", "APPLIEDPROGRAM", "ENROLLEDPROGRAM", "College", "HonorsProgram"),
    *("ApplicationPlan", "APPLICATIONTYPE", "ADMITPLAN", "AdmitCode"),
    *("EFC", "SAI", "FAFSASubmitted"),
    *("EngagementScore", "CAMPUSVISITDATE", "CAMPUSVISITTYPE", "ORIENTREGDATE", "ORIENTATTENDDATE"),
    *("HOUSINGDATE", "HOUSINGTYPE", "COUNSELORNAME"),
    *("PARENT1FIRSTNAME", "PARENT1LASTNAME", "PARENT1EMAIL", "PARENT2FIRSTNAME", "PARENT2LASTNAME"),
    "PARENT2EMAIL",
    *(f"CustomFilter{i}" for i in range(1, 6)),
    *(f"CUSTOMFILTER{i}" for i in range(6, 11)),
    *(f"CustomDate{i}" for i in range(1, 6)),
]

DATE_FIELDS = {
    *("BirthDate", "SrcDate", "ProspectDate", "FAFSASubmitted", *FUNNEL, "Dropped", "Graduated"),
    *("CAMPUSVISITDATE", "ORIENTREGDATE", "ORIENTATTENDDATE", "HOUSINGDATE", "DEFERRED", "DENIED"),
    "WAITLISTED",
    *(f"CustomDate{i}" for i in range(1, 6)),
}


def _valid_definition() -> dict[str, Any]:
    return {
        "product": "sample",
        "notes": "a test layout",
        "fields": [
            {"name": "UniqueID", "width": 50, "required": True, "rule": "text"},
            {"name": "EntryYear", "width": 4, "required": False, "rule": "year"},
            {"name": "Applied", "width": 10, "required": False, "rule": "date"},
        ],
        "requireOneOf": [["EntryYear", "Applied"]],
    }


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "sample.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# --- the shipped definitions ---------------------------------------------------------------------------


@pytest.mark.parametrize("product", PRODUCTS)
def test_each_shipped_definition_is_json_and_loads(product: str) -> None:
    text = resources.files("datalab.layouts").joinpath(f"{product}.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    layout = load_layout(product)
    assert layout.product == product == raw["product"]
    assert [field.name for field in layout.fields] == [field["name"] for field in raw["fields"]]
    assert all(field.rule in RULES for field in layout.fields)
    assert all(field.width >= RULES[field.rule].min_width for field in layout.fields)
    assert isinstance(raw["notes"], str)
    assert layout.notes == raw["notes"]
    assert product in layout.notes or product.capitalize() in layout.notes or "eMatch" in layout.notes


@pytest.mark.parametrize("product", PRODUCTS)
def test_shipped_widths_and_rules_agree_with_the_enrollment_layout(product: str) -> None:
    full = {field.name: field for field in load_layout("enrollment").fields}
    order = [field.name for field in load_layout("enrollment").fields]
    layout = load_layout(product)
    for field in layout.fields:
        assert (field.width, field.rule) == (full[field.name].width, full[field.name].rule)
    names = [field.name for field in layout.fields]
    assert names == sorted(names, key=order.index), "fields follow the reference order"


def test_enrollment_uses_the_full_reference_field_list_in_order() -> None:
    layout = load_layout("enrollment")
    assert [field.name for field in layout.fields] == REFERENCE_FIELDS
    assert len(layout.fields) == 97


@pytest.mark.parametrize(
    ("name", "width", "rule"),
    [
        ("UniqueID", 50, "text"),
        ("FirstName", 64, "text"),
        ("PREFERREDFIRSTNAME", 64, "text"),
        ("Email", 75, "email"),
        ("CellPhoneNumber", 10, "phone"),
        ("TextMessageOptIn", 5, "boolean"),
        ("Address1", 150, "text"),
        ("StateCode", 50, "state"),
        ("ZipCode", 20, "zip"),
        ("Gender", 1, "gender"),
        ("BirthDate", 10, "birth_date"),
        ("HISPANIC", 1, "boolean"),
        ("StudentAthlete", 50, "athlete"),
        ("EntryTerm", 14, "term"),
        ("EntryYear", 4, "year"),
        ("HSGradYear", 4, "year"),
        ("SrcCode", 256, "text"),
        ("Canceled", 10, "date"),
        ("DEFERREDFLAG", 10, "boolean"),
        ("GPA", 20, "gpa"),
        ("COLLEGEGPA", 20, "gpa"),
        ("HSCode", 6, "hs_code"),
        ("ACTScore", 2, "act_score"),
        ("SATScore", 4, "sat_score"),
        ("INDEXSCORE", 10, "text"),
        ("College", 30, "text"),
        ("FAFSASubmitted", 10, "date"),
        ("CAMPUSVISITTYPE", 256, "text"),
        ("PARENT1FIRSTNAME", 20, "text"),
        ("PARENT2EMAIL", 50, "email"),
        ("CUSTOMFILTER10", 20, "text"),
        ("CustomDate5", 10, "date"),
    ],
)
def test_enrollment_sample_widths_and_rules_match_the_reference(name: str, width: int, rule: str) -> None:
    field = load_layout("enrollment").field(name)
    assert (field.name, field.width, field.rule) == (name, width, rule)


def test_every_reference_date_field_uses_a_date_rule() -> None:
    layout = load_layout("enrollment")
    dated = {field.name for field in layout.fields if field.rule in {"date", "birth_date"}}
    assert dated == DATE_FIELDS
    assert layout.field("BirthDate").rule == "birth_date"


def test_enrollment_requirements() -> None:
    layout = load_layout("enrollment")
    assert [field.name for field in layout.fields if field.required] == ["UniqueID", "EntryYear"]
    assert not layout.field("EntryTerm").required
    assert layout.require_one_of == (FUNNEL,)


def test_affinity_requires_name_and_mailing_address() -> None:
    layout = load_layout("affinity")
    assert [field.name for field in layout.fields if field.required] == [
        "FirstName",
        "LastName",
        "Address1",
        "City",
        "StateCode",
        "ZipCode",
    ]
    assert layout.require_one_of == ()
    assert not layout.field("UniqueID").required


def test_ematch_requirements_are_the_documented_choice() -> None:
    layout = load_layout("ematch")
    assert [field.name for field in layout.fields if field.required] == [
        "UniqueID",
        "FirstName",
        "LastName",
        "BirthDate",
    ]
    assert layout.require_one_of == (("Email", "Address1"), ("Email", "ZipCode"))
    assert "no public facts" in layout.notes


@pytest.mark.parametrize("product", ["affinity", "ematch"])
def test_matching_products_carry_identity_contact_address_and_demographic_fields(product: str) -> None:
    names = {field.name for field in load_layout(product).fields}
    assert set(REFERENCE_FIELDS[:23]) <= names  # identity .. demographic groups
    assert not names & set(FUNNEL)


def test_load_layout_is_cached() -> None:
    assert load_layout("enrollment") is load_layout("enrollment")


@pytest.mark.parametrize("product", ["legacy", "Enrollment", "", "prospect"])
def test_unknown_product_names_the_valid_ones(product: str) -> None:
    with pytest.raises(ValueError, match="valid products: enrollment, affinity, ematch") as info:
        load_layout(product)
    assert not isinstance(info.value, LayoutError)


def test_ematch_keeps_a_row_without_a_usable_birth_date() -> None:
    birth = load_layout("ematch").field("BirthDate")
    assert (birth.required, birth.row_required) == (True, False)


def test_layout_field_lookup() -> None:
    layout = load_layout("affinity")
    assert layout.field("ZipCode") == LayoutField("ZipCode", 20, required=True, rule="zip")
    with pytest.raises(KeyError, match="EntryYear"):
        layout.field("EntryYear")


# --- validation of a definition ------------------------------------------------------------------------


def test_a_valid_file_loads_through_the_validator(tmp_path: Path) -> None:
    layout = load_layout_file(_write(tmp_path, _valid_definition()))
    assert layout == Layout(
        product="sample",
        fields=(
            LayoutField("UniqueID", 50, required=True, rule="text"),
            LayoutField("EntryYear", 4, required=False, rule="year"),
            LayoutField("Applied", 10, required=False, rule="date"),
        ),
        require_one_of=(("EntryYear", "Applied"),),
        notes="a test layout",
    )


def test_a_copy_of_a_shipped_definition_loads_identically(tmp_path: Path) -> None:
    source = resources.files("datalab.layouts").joinpath("ematch.json").read_text(encoding="utf-8")
    path = tmp_path / "ematch.json"
    path.write_text(source, encoding="utf-8")
    assert load_layout_file(path) == load_layout("ematch")


Mutation = Callable[[dict[str, Any]], None]


def _set(path: tuple[str | int, ...], value: object) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[str | int, ...]) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            _set(("fields", 1, "rule"), "yeer"),
            r"fields\[1\] \(EntryYear\): unknown rule 'yeer' \(known: .*year",
        ),
        (_set(("fields", 2, "name"), "UniqueID"), r"fields\[2\] \(UniqueID\): duplicate field"),
        (_set(("fields", 2, "name"), "unique_id"), r"duplicate field \(same header key as 'UniqueID'\)"),
        (
            _set(("fields", 0, "width"), 0),
            r"fields\[0\] \(UniqueID\): 'width' must be a positive integer, got 0",
        ),
        (_set(("fields", 0, "width"), -5), "'width' must be a positive integer"),
        (_set(("fields", 0, "width"), "50"), "'width' must be a positive integer, got '50'"),
        (_set(("fields", 0, "width"), True), "'width' must be a positive integer, got True"),
        (_set(("fields", 0, "width"), 2.5), "'width' must be a positive integer"),
        (
            _set(("fields", 1, "width"), 2),
            r"width 2 cannot hold the output of rule 'year' \(needs at least 4\)",
        ),
        (_set(("fields", 0, "required"), "yes"), "'required' must be true or false, got 'yes'"),
        (
            _set(("fields", 0, "rowRequired"), "no"),
            r"fields\[0\] \(UniqueID\): 'rowRequired' must be true or false",
        ),
        (_set(("fields", 1, "rowRequired"), False), "only a required field can be false"),
        (_set(("fields", 0, "name"), ""), r"fields\[0\]: 'name' must be a non-empty string"),
        (_set(("fields", 0, "name"), " UniqueID"), "without surrounding spaces"),
        (_set(("fields", 0, "name"), "--"), "'name' must be a non-empty string"),
        (_set(("fields", 0, "name"), 7), "'name' must be a non-empty string"),
        (_set(("fields", 0, "Rule"), "text"), r"fields\[0\]: unknown Rule"),
        (_delete(("fields", 0, "width")), r"fields\[0\]: missing width"),
        (_set(("fields", 0), "UniqueID"), r"fields\[0\] must be an object"),
        (_set(("fields",), []), "'fields' must be a non-empty list"),
        (_delete(("fields",)), "'fields' must be a non-empty list"),
        (_set(("product",), ""), "'product' must be a non-empty string"),
        (_set(("notes",), ["not", "a", "string"]), "'notes' must be a string"),
        (_set(("extra",), 1), r"unknown member\(s\) extra"),
        (_set(("requireOneOf",), [["Inquired"]]), r"requireOneOf\[0\]: unknown field\(s\) Inquired"),
        (_set(("requireOneOf",), [[]]), r"requireOneOf\[0\] must be a non-empty list of field names"),
        (_set(("requireOneOf",), ["Applied"]), r"requireOneOf\[0\] must be a non-empty list"),
        (_set(("requireOneOf",), [["Applied", "Applied"]]), "listed twice"),
        (_set(("requireOneOf",), {"Applied": 1}), "'requireOneOf' must be a list"),
    ],
)
def test_a_broken_definition_is_rejected_with_a_clear_error(
    tmp_path: Path, mutate: Mutation, message: str
) -> None:
    data = _valid_definition()
    mutate(data)
    with pytest.raises(LayoutError, match=rf"^sample\.json: .*{message}"):
        load_layout_file(_write(tmp_path, data))


def test_a_definition_that_is_not_a_json_object_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="must be a JSON object"):
        load_layout_file(_write(tmp_path, [1, 2]))


def test_invalid_json_is_a_layout_error_and_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"product": "x", "fields": [}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"^broken\.json: not valid JSON") as info:
        load_layout_file(path)
    assert isinstance(info.value, LayoutError)


def test_optional_members_default(tmp_path: Path) -> None:
    data = _valid_definition()
    del data["notes"], data["requireOneOf"]
    layout = load_layout_file(_write(tmp_path, data))
    assert (layout.notes, layout.require_one_of) == ("", ())


# --- header matching -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("UniqueID", "uniqueid"),
        ("Unique ID", "uniqueid"),
        ("unique_id", "uniqueid"),
        ("UNIQUEID", "uniqueid"),
        ("  Unique-ID. ", "uniqueid"),
        ("\ufeffUniqueID", "uniqueid"),
        ("First Name", "firstname"),
        ("PREFERRED_FIRST_NAME", "preferredfirstname"),
        ("Address 1", "address1"),
        ("Custom Filter #6", "customfilter6"),
        ("ＥＭＡＩＬ", "email"),  # full-width letters (NFKC)
        ("", ""),
        ("---", ""),
    ],
)
def test_normalize_header(text: str, key: str) -> None:
    assert normalize_header(text) == key


def _by_field(entries: list[dict[str, object]]) -> dict[object, object]:
    return {entry["field"]: entry["fileHeader"] for entry in entries}


def test_match_headers_returns_the_headers_map_in_layout_order() -> None:
    layout = load_layout("affinity")
    headers = ["zip code", "First Name", "last_name", "ADDRESS1", "city", "State Code", "Shoe Size"]
    entries = match_headers(layout, headers)
    assert [entry["field"] for entry in entries] == [field.name for field in layout.fields]
    assert all(set(entry) == {"field", "fileHeader", "isRequired"} for entry in entries)
    assert entries[3] == {"field": "FirstName", "fileHeader": "First Name", "isRequired": True}
    mapped = {name: header for name, header in _by_field(entries).items() if header is not None}
    assert mapped == {
        "FirstName": "First Name",
        "LastName": "last_name",
        "Address1": "ADDRESS1",
        "City": "city",
        "StateCode": "State Code",
        "ZipCode": "zip code",
    }
    assert _by_field(entries)["Email"] is None
    assert [entry["isRequired"] for entry in entries] == [field.required for field in layout.fields]


def test_match_headers_is_case_space_underscore_and_punctuation_insensitive() -> None:
    layout = load_layout("enrollment")
    headers = ["UNIQUE ID", "entry.year", "Entry-Term", "hs_grad_year", "CellPhone Number", "custom filter 7"]
    mapped = _by_field(match_headers(layout, headers))
    assert mapped["UniqueID"] == "UNIQUE ID"
    assert mapped["EntryYear"] == "entry.year"
    assert mapped["EntryTerm"] == "Entry-Term"
    assert mapped["HSGradYear"] == "hs_grad_year"
    assert mapped["CellPhoneNumber"] == "CellPhone Number"
    assert mapped["CUSTOMFILTER7"] == "custom filter 7"
    assert mapped["CustomFilter1"] is None


def test_a_repeated_file_header_maps_only_its_first_occurrence() -> None:
    layout = load_layout("ematch")
    headers = ["EMAIL", "Email", "e-mail", "Unique ID", "UniqueID"]
    entries = match_headers(layout, headers)
    mapped = _by_field(entries)
    assert mapped["Email"] == "EMAIL"
    assert mapped["UniqueID"] == "Unique ID"
    assigned = [entry["fileHeader"] for entry in entries if entry["fileHeader"] is not None]
    assert sorted(map(str, assigned)) == ["EMAIL", "Unique ID"]


def test_match_headers_with_no_headers_maps_nothing() -> None:
    entries = match_headers(load_layout("enrollment"), [])
    assert len(entries) == 97
    assert all(entry["fileHeader"] is None for entry in entries)


def test_a_file_header_matches_at_most_one_field() -> None:
    layout = Layout(
        product="odd",
        fields=(LayoutField("Email", 75, required=False, rule="email"),),
        require_one_of=(),
    )
    assert match_headers(layout, ["email", "Email"]) == [
        {"field": "Email", "fileHeader": "email", "isRequired": False}
    ]


# --- required fields -----------------------------------------------------------------------------------


def test_missing_required_for_an_empty_mapping() -> None:
    assert missing_required(load_layout("enrollment"), {}) == [
        "UniqueID",
        "EntryYear",
        "one of Inquired, Applied, Completed, Admitted, Confirmed, Enrolled, Canceled",
    ]


def test_missing_required_is_satisfied_by_one_funnel_date() -> None:
    layout = load_layout("enrollment")
    mapping = {"UniqueID": "Student Key", "EntryYear": "Year", "Canceled": "cancel_dt"}
    assert missing_required(layout, mapping) == []
    assert missing_required(layout, {**mapping, "Canceled": None, "Dropped": "drop"}) == [
        "one of Inquired, Applied, Completed, Admitted, Confirmed, Enrolled, Canceled"
    ]


def test_none_and_blank_headers_are_unmapped_and_keys_match_loosely() -> None:
    layout = load_layout("affinity")
    mapping: dict[str, str | None] = {
        "first_name": "fn",
        "LastName": None,
        "ADDRESS1": "  ",
        "City": "c",
        "statecode": "s",
        "Zip Code": "z",
    }
    assert missing_required(layout, mapping) == ["LastName", "Address1"]


@pytest.mark.parametrize(
    ("mapped", "missing"),
    [
        ({"Email"}, []),
        ({"Address1", "ZipCode"}, []),
        ({"Email", "Address1"}, []),
        ({"Address1"}, ["one of Email, ZipCode"]),
        ({"ZipCode"}, ["one of Email, Address1"]),
        (set(), ["one of Email, Address1", "one of Email, ZipCode"]),
    ],
)
def test_ematch_needs_email_or_address_and_zip(mapped: set[str], missing: list[str]) -> None:
    layout = load_layout("ematch")
    base = {"UniqueID": "id", "FirstName": "f", "LastName": "l", "BirthDate": "dob"}
    mapping = {**base, **{name: name.lower() for name in mapped}}
    assert missing_required(layout, mapping) == missing


def test_headers_map_and_missing_required_work_together() -> None:
    layout = load_layout("ematch")
    entries = match_headers(layout, ["ID", "Unique ID", "First Name", "Last Name", "Birth Date", "Zip"])
    mapping = {str(entry["field"]): entry["fileHeader"] for entry in entries}
    assert all(value is None or isinstance(value, str) for value in mapping.values())
    typed = {key: value if isinstance(value, str) else None for key, value in mapping.items()}
    assert missing_required(layout, typed) == ["one of Email, Address1", "one of Email, ZipCode"]
