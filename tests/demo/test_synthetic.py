"""Tests for datalab.demo.synthetic: layouts, determinism, realism and CSV round-trips of demo exports."""

from __future__ import annotations

import csv
import datetime
import pathlib
import re
from collections.abc import Iterator

import pytest

from datalab.demo.synthetic import export_header, export_rows, write_export_csv
from datalab.exports.models import PRODUCT_KEYS
from tests.support.exports import PRODUCT_KEYS as DOCUMENTED_PRODUCT_KEYS

TODAY = datetime.date(2025, 11, 28)
SCORE = "score-reporter"
INQUIRY_PRODUCTS = tuple(k for k in PRODUCT_KEYS if k != SCORE)

# fmt: off
INQUIRY_HEADER = [
    "DATSOURCE", "SEQUENCE", "STUDENTPIN", "FIRSTNAME", "MIDDLEINITIAL", "LASTNAME", "ADDRESS", "ADDRESS2",
    "CITY", "STATE", "POSTALCODE", "ZIP4", "EMAIL", "PHONE", "CELLPHONE", "HIGHSCHOOLNAME", "HIGHSCHOOLTYPE",
    "CEEB", "BIRTHDATE", "GENDER", "GRADUATIONYEAR", "GPA", "CTYPE01", "CTYPE02", "CTYPE03", "CTYPE04",
    "MAJOR01", "MAJOR02", "ACTIVITY01", "ACTIVITY02", "ACTIVITY03", "ACTIVITY04", "ACTIVITY05", "ACTIVITY06",
    "ACTIVITY07", "ACTIVITY08",
]
ACT_SCORES = ("COMPOSITE", "MATH", "SCIENCE", "ENGLISH", "READING", "WRITING", "STEM", "ELA")

# USPS three-digit ZIP prefix ranges per state, written out independently of the generator's own table.
ZIP3_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "MA": ((10, 27), (55, 55)), "RI": ((28, 29),), "NH": ((30, 38),), "ME": ((39, 49),), "VT": ((50, 59),),
    "CT": ((60, 69),), "NJ": ((70, 89),), "NY": ((5, 5), (63, 63), (100, 149)), "PA": ((150, 196),),
    "DE": ((197, 199),), "DC": ((200, 205),), "MD": ((206, 219),), "VA": ((201, 201), (220, 246)),
    "WV": ((247, 268),), "NC": ((270, 289),), "SC": ((290, 299),), "GA": ((300, 319), (398, 399)),
    "FL": ((320, 349),), "AL": ((350, 369),), "TN": ((370, 385),), "MS": ((386, 397),), "KY": ((400, 427),),
    "OH": ((430, 459),), "IN": ((460, 479),), "MI": ((480, 499),), "IA": ((500, 528),), "WI": ((530, 549),),
    "MN": ((550, 567),), "SD": ((570, 577),), "ND": ((580, 588),), "MT": ((590, 599),), "IL": ((600, 629),),
    "MO": ((630, 658),), "KS": ((660, 679),), "NE": ((680, 693),), "LA": ((700, 714),), "AR": ((716, 729),),
    "OK": ((730, 749),), "TX": ((750, 799), (885, 885)), "CO": ((800, 816),), "WY": ((820, 831),),
    "ID": ((832, 838),), "UT": ((840, 847),), "AZ": ((850, 865),), "NM": ((870, 884),), "NV": ((889, 898),),
    "CA": ((900, 961),), "HI": ((967, 968),), "OR": ((970, 979),), "WA": ((980, 994),), "AK": ((995, 999),),
}
# fmt: on
ACT_TEST_MONTHS = {2, 4, 6, 7, 9, 10, 12}


def rows_as_dicts(
    product: str, count: int, seed: int = 7, today: datetime.date = TODAY
) -> list[dict[str, str]]:
    header = export_header(product)
    rows = export_rows(product, count=count, seed=seed, today=today)
    return [dict(zip(header, row, strict=True)) for row in rows]


def age_on(birth: datetime.date, today: datetime.date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def expected_grad_year(birth: datetime.date) -> int:
    # Sept 1 school-entry cutoff: later birthdays are a class year behind.
    return birth.year + (19 if (birth.month, birth.day) >= (9, 1) else 18)


def read_csv(path: pathlib.Path) -> Iterator[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        yield from csv.reader(fh)


def test_product_keys_are_the_documented_eight() -> None:
    assert PRODUCT_KEYS == DOCUMENTED_PRODUCT_KEYS


@pytest.mark.parametrize("product", INQUIRY_PRODUCTS)
def test_inquiry_layout_header(product: str) -> None:
    assert export_header(product) == INQUIRY_HEADER


def test_score_reporter_header_is_an_act_layout() -> None:
    header = export_header(SCORE)
    assert header != INQUIRY_HEADER
    assert len(header) == len(set(header))
    assert all(name == name.upper() for name in header)
    for name in (
        "ACTID",
        "FIRSTNAME",
        "LASTNAME",
        "ADDRESS",
        "CITY",
        "STATE",
        "ZIPCODE",
        "BIRTHDATE",
        "TESTDATE",
        "HSCODE",
        "HSGRADYEAR",
        "GPA",
        "INTENDEDMAJOR",
        *ACT_SCORES,
    ):
        assert name in header
    assert header[-len(ACT_SCORES) :] == list(ACT_SCORES)


def test_header_is_a_fresh_list() -> None:
    export_header("prospect").append("EXTRA")
    assert export_header("prospect") == INQUIRY_HEADER


@pytest.mark.parametrize("product", PRODUCT_KEYS)
def test_rows_match_header_and_are_all_strings(product: str) -> None:
    header = export_header(product)
    rows = list(export_rows(product, count=1500, seed=3, today=TODAY))
    assert len(rows) == 1500
    for row in rows:
        assert len(row) == len(header)
        assert all(type(value) is str for value in row)


@pytest.mark.parametrize("product", ["prospect", SCORE])
def test_deterministic_per_seed(product: str) -> None:
    def make(seed: int, count: int = 1200) -> list[list[str]]:
        return list(export_rows(product, count=count, seed=seed, today=TODAY))

    first = make(11)
    assert first == make(11)
    assert first != make(12)
    # A smaller file is a prefix of a larger one for the same seed (chunks straddle the cut on purpose).
    assert make(11, count=1030) == first[:1030]
    assert make(11, count=5) == first[:5]


def test_products_and_today_change_output() -> None:
    aos = list(export_rows("aos", count=50, seed=1, today=TODAY))
    prospect = list(export_rows("prospect", count=50, seed=1, today=TODAY))
    assert [r[2:] for r in aos] != [r[2:] for r in prospect]
    later = list(export_rows("aos", count=50, seed=1, today=TODAY + datetime.timedelta(days=400)))
    assert later != aos


def test_zero_rows_and_negative_count() -> None:
    assert list(export_rows("prospect", count=0, seed=1, today=TODAY)) == []
    with pytest.raises(ValueError, match="count"):
        export_rows("prospect", count=-1, seed=1, today=TODAY)


@pytest.mark.parametrize("product", INQUIRY_PRODUCTS)
def test_datsource_and_sequence(product: str) -> None:
    rows = rows_as_dicts(product, 30)
    expected_source = product.upper()
    assert {r["DATSOURCE"] for r in rows} == {expected_source}
    assert [r["SEQUENCE"] for r in rows] == [f"{i:06d}" for i in range(1, 31)]


def test_identifiers_keep_leading_zeros_and_are_unique() -> None:
    rows = rows_as_dicts("prospect", 4000)
    pins = [r["STUDENTPIN"] for r in rows]
    assert all(len(p) >= 9 and p.isdigit() for p in pins)
    assert len(set(pins)) == len(pins)
    assert any(p.startswith("0") for p in pins)
    ceebs = [r["CEEB"] for r in rows]
    assert all(re.fullmatch(r"\d{6}", c) for c in ceebs)
    assert any(c.startswith("0") for c in ceebs)
    act_ids = [r["ACTID"] for r in rows_as_dicts(SCORE, 4000)]
    assert all(a.isdigit() for a in act_ids)
    assert len(set(act_ids)) == len(act_ids)
    assert any(a.startswith("0") for a in act_ids)


@pytest.mark.parametrize(("product", "zip_field"), [("prospect", "POSTALCODE"), (SCORE, "ZIPCODE")])
def test_zip_agrees_with_state_and_keeps_leading_zeros(product: str, zip_field: str) -> None:
    rows = rows_as_dicts(product, 3000)
    zips = [r[zip_field] for r in rows]
    assert all(re.fullmatch(r"\d{5}", z) for z in zips)
    assert any(z.startswith("0") for z in zips)
    for r in rows:
        zip3 = int(r[zip_field][:3])
        ranges = ZIP3_RANGES[r["STATE"]]
        assert any(lo <= zip3 <= hi for lo, hi in ranges), (r["CITY"], r["STATE"], r[zip_field])
    # City names alone are ambiguous (Portland ME/OR), so city+state must map to a single ZIP prefix.
    prefixes: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        prefixes.setdefault((r["CITY"], r["STATE"]), set()).add(r[zip_field][:3])
    assert all(len(p) == 1 for p in prefixes.values())
    assert len({r["STATE"] for r in rows}) > 30


def test_contact_fields_are_realistic() -> None:
    rows = rows_as_dicts("inquiry", 3000)
    assert len({r["FIRSTNAME"] for r in rows}) > 150
    assert len({r["LASTNAME"] for r in rows}) > 200
    for r in rows:
        assert re.fullmatch(r"\d{10}", r["CELLPHONE"])
        assert r["PHONE"] == "" or re.fullmatch(r"\d{10}", r["PHONE"])
        assert r["ZIP4"] == "" or re.fullmatch(r"\d{4}", r["ZIP4"])
        assert r["MIDDLEINITIAL"] == "" or re.fullmatch(r"[A-Z]", r["MIDDLEINITIAL"])
        assert r["GENDER"] in {"M", "F", ""}
        assert r["ADDRESS"]
        assert r["CITY"]
        assert r["HIGHSCHOOLNAME"]
        assert r["HIGHSCHOOLTYPE"]
        email = r["EMAIL"]
        if email:
            local, _, domain = email.partition("@")
            assert re.fullmatch(r"[a-z0-9._]+", local)
            assert "." in domain
            last_token = re.sub(r"[^a-z]", "", r["LASTNAME"].lower().replace("ñ", "n"))
            first_token = re.sub(r"[^a-z]", "", r["FIRSTNAME"].lower())
            assert last_token[:3] in local or first_token[:3] in local
        assert r["GPA"] == "" or re.fullmatch(r"[1-4]\.\d\d", r["GPA"])
    assert sum(1 for r in rows if r["EMAIL"]) > 0.9 * len(rows)
    assert any(r["ACTIVITY08"] for r in rows)
    assert any(not r["ACTIVITY01"] for r in rows)
    assert any(r["MAJOR02"] for r in rows)


@pytest.mark.parametrize("today", [TODAY, datetime.date(2024, 2, 29), datetime.date(2025, 1, 15)])
@pytest.mark.parametrize(("product", "grad_field"), [("ematch", "GRADUATIONYEAR"), (SCORE, "HSGRADYEAR")])
def test_birth_dates_give_ages_16_to_18_and_consistent_grad_year(
    today: datetime.date, product: str, grad_field: str
) -> None:
    rows = rows_as_dicts(product, 3000, today=today)
    ages = set()
    for r in rows:
        birth = datetime.datetime.strptime(r["BIRTHDATE"], "%m/%d/%Y").date()
        assert re.fullmatch(r"\d\d/\d\d/\d{4}", r["BIRTHDATE"])
        ages.add(age_on(birth, today))
        assert int(r[grad_field]) == expected_grad_year(birth)
    assert ages == {16, 17, 18}


@pytest.mark.parametrize("today", [TODAY, datetime.date(2025, 1, 15)])
def test_act_test_dates_are_past_sittings(today: datetime.date) -> None:
    for r in rows_as_dicts(SCORE, 2000, today=today):
        assert re.fullmatch(r"\d\d/\d{4}", r["TESTDATE"])
        month, year = (int(part) for part in r["TESTDATE"].split("/"))
        assert month in ACT_TEST_MONTHS
        assert (year, month) <= (today.year, today.month)
        assert year >= int(r["HSGRADYEAR"]) - 4


def half_up_mean(*values: int) -> int:
    # ACT rounds half up; Python's round() would round half to even.
    return (2 * sum(values) + len(values)) // (2 * len(values))


def test_act_scores_in_range_and_consistent() -> None:
    rows = rows_as_dicts(SCORE, 5000)
    composites = []
    for r in rows:
        scores = {name: int(r[name]) for name in ACT_SCORES}
        assert all(1 <= s <= 36 for s in scores.values()), scores
        assert scores["COMPOSITE"] == half_up_mean(
            scores["ENGLISH"], scores["MATH"], scores["READING"], scores["SCIENCE"]
        )
        assert scores["STEM"] == half_up_mean(scores["MATH"], scores["SCIENCE"])
        assert scores["ELA"] == half_up_mean(scores["ENGLISH"], scores["READING"], scores["WRITING"])
        assert re.fullmatch(r"[1-4]\.\d\d", r["GPA"])
        assert float(r["GPA"]) <= 4.0
        assert re.fullmatch(r"\d{6}", r["HSCODE"])
        assert r["INTENDEDMAJOR"]
        composites.append(scores["COMPOSITE"])
    mean = sum(composites) / len(composites)
    assert 17 < mean < 24
    assert min(composites) < 14
    assert max(composites) > 30


@pytest.mark.parametrize("product", ["declared", SCORE])
def test_write_export_csv_round_trips(tmp_path: pathlib.Path, product: str) -> None:
    path = tmp_path / f"{product}.csv"
    written = write_export_csv(path, product, count=2500, seed=5, today=TODAY)
    assert written == 2500
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert raw.count(b"\r\n") >= 2501
    assert b"\n" not in raw.replace(b"\r\n", b"")
    read_back = list(read_csv(path))
    assert read_back[0] == export_header(product)
    assert read_back[1:] == list(export_rows(product, count=2500, seed=5, today=TODAY))


def test_csv_read_back_keeps_leading_zeros(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "prospect.csv"
    write_export_csv(path, "prospect", count=3000, seed=9, today=TODAY)
    rows = list(read_csv(path))
    header = rows[0]
    zip_col, ceeb_col, pin_col = header.index("POSTALCODE"), header.index("CEEB"), header.index("STUDENTPIN")
    data = rows[1:]
    assert any(r[zip_col].startswith("0") for r in data)
    assert all(len(r[zip_col]) == 5 for r in data)
    assert any(r[ceeb_col].startswith("0") for r in data)
    assert all(len(r[ceeb_col]) == 6 for r in data)
    assert any(r[pin_col].startswith("0") for r in data)


def test_write_export_csv_zero_rows(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "empty.csv"
    assert write_export_csv(path, "aos", count=0, seed=1, today=TODAY) == 0
    assert path.read_bytes() == (",".join(INQUIRY_HEADER) + "\r\n").encode()


def test_unknown_product_names_valid_keys(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="nope") as excinfo:
        export_header("nope")
    for key in PRODUCT_KEYS:
        assert key in str(excinfo.value)
    with pytest.raises(ValueError, match="score-reporter"):
        export_rows("legacy", count=1, seed=1, today=TODAY)
    path = tmp_path / "x.csv"
    with pytest.raises(ValueError, match="prospect"):
        write_export_csv(path, "Prospect", count=1, seed=1, today=TODAY)
    assert not path.exists()
