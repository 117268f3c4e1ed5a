"""Tests for datalab.layouts.cleansing: every rule with good, bad and edge values, relative to a fixed day."""

from __future__ import annotations

from datetime import date

import pytest

from datalab.layouts import LayoutField, load_layout
from datalab.layouts.cleansing import (
    RULES,
    Cleaned,
    FieldWarning,
    clean_birth_date,
    clean_date,
    clean_text,
    clean_value,
    clean_year,
)

TODAY = date(2025, 6, 15)
ENROLLMENT = load_layout("enrollment")


def _clean(field_name: str, raw: str, today: date = TODAY) -> Cleaned:
    return clean_value(raw, ENROLLMENT.field(field_name), today=today)


def _assert_clean(field_name: str, raw: str, expected: str) -> None:
    assert _clean(field_name, raw) == Cleaned(expected)


def _assert_warned(field_name: str, raw: str, code: str, value: str = "") -> None:
    cleaned = _clean(field_name, raw)
    assert cleaned.value == value
    assert cleaned.codes == (code,)
    assert cleaned.warnings[0].field == field_name


# --- registry and common behaviour ---------------------------------------------------------------------


def test_the_registry_has_every_rule_of_the_reference() -> None:
    assert set(RULES) == {
        *("text", "date", "birth_date", "year", "term", "gender", "gpa", "state", "boolean", "athlete"),
        *("email", "phone", "act_score", "sat_score", "hs_code", "zip"),
    }
    assert all(rule.name == name and rule.min_width >= 1 for name, rule in RULES.items())
    assert RULES["date"].function is clean_date
    assert clean_date.__name__ == "clean_date"
    assert clean_date.__doc__ is not None


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("raw", ["", "   ", "\t\r\n"])
def test_a_blank_value_stays_blank_without_a_warning(rule: str, raw: str) -> None:
    field = LayoutField("Anything", 50, required=True, rule=rule)
    assert RULES[rule](raw, field, today=TODAY) == Cleaned("")


def test_a_rule_can_be_called_directly() -> None:
    field = ENROLLMENT.field("Applied")
    assert clean_date("3/5/24", field, today=TODAY) == Cleaned("2024/03/05")
    assert RULES["date"]("3/5/24", field, today=TODAY) == Cleaned("2024/03/05")


@pytest.mark.parametrize(
    ("warnings", "codes"),
    [
        ((), ()),
        ((FieldWarning("date_invalid", "Applied", "nope"),), ("date_invalid",)),
        (
            (
                FieldWarning("state_unknown", "StateCode", "kept"),
                FieldWarning("truncated", "StateCode", "cut"),
            ),
            ("state_unknown", "truncated"),
        ),
    ],
)
def test_cleaned_codes(warnings: tuple[FieldWarning, ...], codes: tuple[str, ...]) -> None:
    assert Cleaned("", warnings).codes == codes


# --- width ---------------------------------------------------------------------------------------------


def test_values_longer_than_the_width_are_truncated_with_a_warning() -> None:
    cleaned = _clean("FirstName", "A" * 70)
    assert cleaned.value == "A" * 64
    assert cleaned.codes == ("truncated",)
    assert cleaned.warnings == (
        FieldWarning("truncated", "FirstName", "value longer than 64 characters was truncated"),
    )


def test_a_value_exactly_as_wide_as_the_field_is_not_truncated() -> None:
    _assert_clean("College", "C" * 30, "C" * 30)


def test_width_counts_characters_not_bytes() -> None:
    _assert_clean("College", "é" * 30, "é" * 30)


def test_truncation_drops_trailing_spaces_left_by_the_cut() -> None:
    field = LayoutField("Short", 5, required=False, rule="text")
    assert clean_text("abc   defgh", field, today=TODAY) == Cleaned(
        "abc", (FieldWarning("truncated", "Short", "value longer than 5 characters was truncated"),)
    )


def test_a_kept_value_can_carry_two_warnings() -> None:
    cleaned = _clean("StateCode", "Province of " + "X" * 60)
    assert cleaned.value == ("Province of " + "X" * 60)[:50]
    assert cleaned.codes == ("state_unknown", "truncated")


# --- text and identifiers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field_name", "raw", "expected"),
    [
        ("FirstName", "  Jane ", "Jane"),
        ("LastName", "O'Brien-Smith", "O'Brien-Smith"),
        ("UniqueID", "000123", "000123"),
        ("StudentID", "00000", "00000"),
        ("Address1", "12  Main   St", "12  Main   St"),
        ("CustomFilter1", "Honors/Scholar", "Honors/Scholar"),
        ("SAI", "-1500", "-1500"),
        ("TESTOPTIONAL", "Test Blind", "Test Blind"),
    ],
)
def test_text_is_trimmed_and_otherwise_kept(field_name: str, raw: str, expected: str) -> None:
    _assert_clean(field_name, raw, expected)


# --- dates ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("3/5/24", "2024/03/05"),  # m/d/yy
        ("03/05/2024", "2024/03/05"),  # m/d/yyyy
        ("3/5/2024", "2024/03/05"),
        ("2024-03-05", "2024/03/05"),  # yyyy-mm-dd
        ("2024-3-5", "2024/03/05"),
        ("20240305", "2024/03/05"),  # yyyymmdd
        ("05-Mar-2024", "2024/03/05"),  # dd-Mon-yyyy
        ("5-mar-24", "2024/03/05"),  # dd-Mon-yy
        ("05-MARCH-2024", "2024/03/05"),
        ("30-Sept-2024", "2024/09/30"),
        ("03-05-24", "2024/03/05"),  # mm-dd-yy
        ("03-05-2024", "2024/03/05"),  # mm-dd-yyyy
        ("2024-03-05T14:30:00Z", "2024/03/05"),  # ISO date-time
        ("2024-03-05T23:30:00.123-05:00", "2024/03/05"),  # the date as written, no time-zone shift
        ("2024-03-05T14:30", "2024/03/05"),
        ("2024-03-05T14:30:00+0200", "2024/03/05"),
        ("2024/03/05", "2024/03/05"),  # yyyy/mm/dd
        ("2024/3/5", "2024/03/05"),
        ("3/5/2024 12:00:00 AM", "2024/03/05"),  # text after the first space dropped
        ("2024-03-05 23:59:59.000", "2024/03/05"),
        ("  3/5/2024  ", "2024/03/05"),
        ("2/29/24", "2024/02/29"),
        ("12/31/99", "1999/12/31"),  # 2-digit year: the century inside the window
        ("1/1/80", "1980/01/01"),
        ("6/15/26", "2026/06/15"),  # one year ahead, inclusive
        ("6/15/1975", "1975/06/15"),  # 50 years back, inclusive
        ("06/15/2025", "2025/06/15"),  # today
        ("13/1/2024", "2024/01/13"),  # day first, unambiguously (13 cannot be a month)
        ("31-07-2025", "2025/07/31"),
    ],
)
def test_dates_in_every_format_become_yyyy_mm_dd(raw: str, expected: str) -> None:
    _assert_clean("Applied", raw, expected)


@pytest.mark.parametrize(
    "raw",
    [
        "13/13/2024",
        "2/30/2024",
        "2/29/2023",
        "0/10/2024",
        "032024",  # MMYYYY is not a date format here
        "March 5, 2024",  # only "March" is left after the first space
        "05-Foo-2024",
        "2024.03.05",
        "5/3",
        "45356",  # a spreadsheet serial number
        "yesterday",
        "05/03/024",
        "2024-03-05T",
        "2024-03-05Tnoon",
        "20241305",
        "1.5",
    ],
)
def test_unparseable_dates_are_blanked_with_a_warning(raw: str) -> None:
    _assert_warned("Applied", raw, "date_invalid")


@pytest.mark.parametrize("raw", ["6/16/2026", "6/14/1975", "1/1/1900", "3/5/60", "2099-01-01", "01-Jan-70"])
def test_dates_outside_50_years_back_to_1_year_ahead_are_blanked(raw: str) -> None:
    _assert_warned("Applied", raw, "date_out_of_range")
    (warning,) = _clean("Applied", raw).warnings
    assert warning.message == "must fall between 1975/06/15 and 2026/06/15"
    assert raw not in warning.message


@pytest.mark.parametrize(
    "field_name",
    sorted(field.name for field in ENROLLMENT.fields if field.rule == "date"),
)
def test_every_date_field_uses_the_date_rule(field_name: str) -> None:
    _assert_clean(field_name, "2024-09-01", "2024/09/01")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("3/5/05", "2005/03/05"),
        ("3/5/50", "1950/03/05"),  # a birth-date 2-digit year goes back a century
        ("07-Jul-88", "1988/07/07"),
        ("1990-07-04", "1990/07/04"),
        ("2/29/00", "2000/02/29"),
        ("6/15/2015", "2015/06/15"),  # 10 years back, inclusive
        ("6/15/1945", "1945/06/15"),  # 80 years back, inclusive
        ("19900704", "1990/07/04"),
    ],
)
def test_birth_dates_between_80_and_10_years_back(raw: str, expected: str) -> None:
    _assert_clean("BirthDate", raw, expected)


@pytest.mark.parametrize("raw", ["6/16/2015", "6/14/1945", "1/1/20", "3/5/2024", "2030-01-01", "1/1/1900"])
def test_birth_dates_out_of_range_are_blanked(raw: str) -> None:
    _assert_warned("BirthDate", raw, "date_out_of_range")


def test_an_unambiguous_day_first_birth_date_is_read_as_written() -> None:
    _assert_clean("BirthDate", "31/07/2008", "2008/07/31")
    # Ambiguous: month first, as every other date.
    _assert_clean("BirthDate", "05/07/2008", "2008/05/07")


def test_birth_date_garbage_is_invalid() -> None:
    _assert_warned("BirthDate", "unknown", "date_invalid")


def test_date_windows_follow_today_on_a_leap_day() -> None:
    leap = date(2024, 2, 29)
    field = ENROLLMENT.field("Applied")
    assert clean_date("2/28/1974", field, today=leap).value == "1974/02/28"
    assert clean_date("2/27/1974", field, today=leap).codes == ("date_out_of_range",)
    assert clean_date("2/28/2025", field, today=leap).value == "2025/02/28"
    assert clean_date("3/1/2025", field, today=leap).codes == ("date_out_of_range",)
    birth = ENROLLMENT.field("BirthDate")
    assert clean_birth_date("2/28/2014", birth, today=leap).value == "2014/02/28"
    assert clean_birth_date("3/1/2014", birth, today=leap).codes == ("date_out_of_range",)


# --- years ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024", "2024"),
        ("1975", "1975"),  # 50 years back
        ("2035", "2035"),  # 10 years ahead
        ("24", "2024"),
        ("35", "2035"),
        ("75", "1975"),
        ("80", "1980"),
        ("99", "1999"),
        ("00", "2000"),
        ("2024.0", "2024"),
        (" 2026 ", "2026"),
    ],
)
def test_years(raw: str, expected: str) -> None:
    _assert_clean("EntryYear", raw, expected)
    _assert_clean("HSGradYear", raw, expected)


@pytest.mark.parametrize("raw", ["2036", "1974", "36", "74", "50", "0000"])
def test_years_out_of_range(raw: str) -> None:
    _assert_warned("EntryYear", raw, "year_out_of_range")


@pytest.mark.parametrize("raw", ["202", "20245", "twenty", "24.5", "2024-25", "FA24", "2", "'24"])
def test_years_that_are_not_years(raw: str) -> None:
    _assert_warned("EntryYear", raw, "year_invalid")


def test_the_two_digit_pivot_moves_with_today() -> None:
    field = ENROLLMENT.field("EntryYear")
    assert clean_year("40", field, today=date(2030, 1, 1)).value == "2040"
    assert clean_year("40", field, today=TODAY).codes == ("year_out_of_range",)
    assert clean_year("80", field, today=date(2030, 1, 1)).value == "1980"
    assert clean_year("79", field, today=date(2030, 1, 1)).codes == ("year_out_of_range",)


# --- entry term ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Fall", "FALL"),
        ("fall 2024", "FALL"),
        ("2024 Fall", "FALL"),
        ("FALL2024", "FALL"),
        ("FA24", "FALL"),
        ("24FA", "FALL"),
        ("FA2024", "FALL"),
        ("fa", "FALL"),
        ("Autumn", "FALL"),
        ("Spring Semester 2025", "SPRING"),
        ("SP25", "SPRING"),
        ("SPR 2025", "SPRING"),
        ("Summer II", "SUMMER"),
        ("SU", "SUMMER"),
        ("Sum-25", "SUMMER"),
        ("WI25", "WINTER"),
        ("winter", "WINTER"),
        ("Fall Term", "FALL"),
    ],
)
def test_entry_term_becomes_a_season(raw: str, expected: str) -> None:
    _assert_clean("EntryTerm", raw, expected)


@pytest.mark.parametrize("raw", ["202408", "Fall/Spring", "Q1", "Semester 1", "F24", "Intersession"])
def test_entry_term_without_exactly_one_season_is_blanked(raw: str) -> None:
    _assert_warned("EntryTerm", raw, "term_invalid")


# --- demographic ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("M", "M"),
        ("m", "M"),
        ("Male", "M"),
        ("MAN", "M"),
        (" man ", "M"),
        ("F", "F"),
        ("female", "F"),
        ("Woman", "F"),
    ],
)
def test_gender(raw: str, expected: str) -> None:
    _assert_clean("Gender", raw, expected)


@pytest.mark.parametrize("raw", ["X", "U", "Non-binary", "Unknown", "male?", "Men", "1"])
def test_other_genders_are_blanked_with_a_warning(raw: str) -> None:
    _assert_warned("Gender", raw, "gender_invalid")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *[("YES", "Y"), ("yes", "Y"), ("Y", "Y"), ("true", "Y"), ("1", "Y")],
        *[("NO", "N"), ("no", "N"), ("n", "N"), ("FALSE", "N"), ("0", "N")],
    ],
)
@pytest.mark.parametrize("field_name", ["HISPANIC", "FirstGenFlag", "International", "TextMessageOptIn"])
def test_booleans(field_name: str, raw: str, expected: str) -> None:
    _assert_clean(field_name, raw, expected)


@pytest.mark.parametrize("raw", ["maybe", "2", "T", "yes please", "-1", "on"])
def test_other_booleans_are_blanked_with_a_warning(raw: str) -> None:
    _assert_warned("HISPANIC", raw, "boolean_invalid")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Y", "Y"),
        ("no", "N"),
        ("1", "Y"),
        ("Football", "Y"),
        ("Men's Soccer", "Y"),
        ("WOMEN'S BASKETBALL", "Y"),
        ("Track & Field", "Y"),
        ("Cross Country", "Y"),
        ("XC", "Y"),
        ("E-Sports", "Y"),
        ("Water Polo", "Y"),
        ("Swim/Dive", "Y"),
        ("None", "N"),
        ("Non-Athlete", "N"),
        ("not an athlete", "N"),
    ],
)
def test_student_athlete_counts_sport_names_as_yes(raw: str, expected: str) -> None:
    _assert_clean("StudentAthlete", raw, expected)


@pytest.mark.parametrize("raw", ["Chess Club", "Band", "maybe"])
def test_student_athlete_other_text_is_blanked(raw: str) -> None:
    _assert_warned("StudentAthlete", raw, "athlete_invalid")


# --- academic ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("3.5", "3.5"),
        ("3.50", "3.50"),
        ("03.50", "3.50"),
        (".5", "0.5"),
        ("4.", "4"),
        ("4", "4"),
        ("0", "0"),
        ("95", "95"),  # 100-point scales are kept
        ("4.3333", "4.3333"),
        ("A+", "4.0"),
        ("A", "4.0"),
        ("a-", "3.667"),
        ("B+", "3.333"),
        ("B", "3.0"),
        ("b-", "2.667"),
        ("C+", "2.333"),
        ("C", "2.0"),
        ("C-", "1.667"),
        ("D+", "1.333"),
        ("D", "1.0"),
        ("D-", "0.667"),
        ("F", "0.0"),
        ("B +", "3.333"),
    ],
)
def test_gpa(raw: str, expected: str) -> None:
    _assert_clean("GPA", raw, expected)
    _assert_clean("COLLEGEGPA", raw, expected)


@pytest.mark.parametrize(
    "raw", ["-1", "3,5", "1e3", "E", "F+", "3.5/4.0", "N/A", "3..5", "+3.5", "nan", "inf"]
)
def test_gpa_that_is_neither_a_number_nor_a_grade(raw: str) -> None:
    _assert_warned("GPA", raw, "gpa_invalid")


def test_a_long_gpa_is_truncated() -> None:
    cleaned = _clean("GPA", "3.1234567890123456789012")
    assert cleaned.value == "3.123456789012345678"
    assert cleaned.codes == ("truncated",)


@pytest.mark.parametrize(("raw", "expected"), [("1", "1"), ("36", "36"), ("07", "7"), ("32.0", "32")])
def test_act_score(raw: str, expected: str) -> None:
    _assert_clean("ACTScore", raw, expected)


@pytest.mark.parametrize(("raw", "code"), [("0", "score_out_of_range"), ("37", "score_out_of_range")])
def test_act_score_out_of_range(raw: str, code: str) -> None:
    _assert_warned("ACTScore", raw, code)


@pytest.mark.parametrize("raw", ["abc", "32.5", "-1", "3 2"])
def test_act_score_not_a_number(raw: str) -> None:
    _assert_warned("ACTScore", raw, "score_invalid")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("400", "400"), ("1600", "1600"), ("1210", "1210"), ("1210.0", "1210"), ("0400", "400")],
)
def test_sat_score(raw: str, expected: str) -> None:
    _assert_clean("SATScore", raw, expected)


@pytest.mark.parametrize(("raw", "code"), [("399", "score_out_of_range"), ("1601", "score_out_of_range")])
def test_sat_score_out_of_range(raw: str, code: str) -> None:
    _assert_warned("SATScore", raw, code)


@pytest.mark.parametrize("raw", ["2400", "36"])
def test_sat_scores_on_other_scales_are_out_of_range(raw: str) -> None:
    _assert_warned("SATScore", raw, "score_out_of_range")


@pytest.mark.parametrize("raw", ["1,210", "twelve", "1210.5"])
def test_sat_score_not_a_number(raw: str) -> None:
    _assert_warned("SATScore", raw, "score_invalid")


@pytest.mark.parametrize("raw", ["012345", "123456", "000000", " 050123 "])
def test_hs_code_keeps_six_digits_and_leading_zeros(raw: str) -> None:
    _assert_clean("HSCode", raw, raw.strip())


@pytest.mark.parametrize("raw", ["1234", "12345", "1234567", "12345A", "12-3456", "12345.0"])
def test_hs_code_other_values_are_blanked_not_padded(raw: str) -> None:
    _assert_warned("HSCode", raw, "hs_code_invalid")


def test_hs_code_hints_at_a_lost_leading_zero() -> None:
    (warning,) = _clean("HSCode", "51234").warnings
    assert "leading zero" in warning.message
    (other,) = _clean("HSCode", "1234").warnings
    assert "leading zero" not in other.message


# --- contact and address -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("jane@example.com", "jane@example.com"),
        ("Jane.Doe@Example.EDU", "jane.doe@example.edu"),
        ("  a@b  ", "a@b"),
        ("first+tag@sub.example.org", "first+tag@sub.example.org"),
    ],
)
@pytest.mark.parametrize("field_name", ["Email", "PARENT1EMAIL"])
def test_email(field_name: str, raw: str, expected: str) -> None:
    _assert_clean(field_name, raw, expected)


@pytest.mark.parametrize(
    "raw", ["jane.example.com", "@example.com", "jane@", "@", "jane doe@example.com", "n/a"]
)
def test_email_without_a_usable_at_sign_is_blanked(raw: str) -> None:
    _assert_warned("Email", raw, "email_invalid")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5551234567", "5551234567"),
        ("(555) 123-4567", "5551234567"),
        ("+1 555.123.4567", "5551234567"),
        ("15551234567", "5551234567"),
        ("555-123-4567 x89", "5551234567"),
        ("555-123-4567 ext. 89", "5551234567"),
        ("555 123 4567 #2", "5551234567"),
        ("0044 20 7946 0958", "2079460958"),  # last 10 digits, as upstream
        ("055-512-3456", "0555123456"),
    ],
)
def test_phone_keeps_the_last_ten_digits(raw: str, expected: str) -> None:
    _assert_clean("CellPhoneNumber", raw, expected)


@pytest.mark.parametrize("raw", ["555-1234", "n/a", "12345", "x5551234567"])
def test_phone_with_fewer_than_ten_digits_is_blanked(raw: str) -> None:
    _assert_warned("CellPhoneNumber", raw, "phone_invalid")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("NY", "NY"),
        ("ny", "NY"),
        ("N.Y.", "NY"),
        ("New York", "NY"),
        ("new   york", "NY"),
        ("NORTH-CAROLINA", "NC"),
        ("District of Columbia", "DC"),
        ("Washington, D.C.", "DC"),
        ("D.C.", "DC"),
        ("Washington", "WA"),
        ("West Virginia", "WV"),
        ("Puerto Rico", "PR"),
        ("U.S. Virgin Islands", "VI"),
        ("guam", "GU"),
        ("American Samoa", "AS"),
        ("Northern Mariana Islands", "MP"),
        ("AE", "AE"),
        ("Armed Forces Pacific", "AP"),
    ],
)
def test_state_names_and_codes_become_two_letter_codes(raw: str, expected: str) -> None:
    _assert_clean("StateCode", raw, expected)


@pytest.mark.parametrize("raw", ["Ontario", "XX", "Bavaria"])
def test_unknown_states_are_kept_with_a_warning(raw: str) -> None:
    _assert_warned("StateCode", raw, "state_unknown", value=raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("02134", "02134"),
        ("00601", "00601"),
        ("02134-1234", "02134-1234"),
        ("90210", "90210"),
        ("K1A 0B1", "K1A 0B1"),
        ("SW1A   1AA", "SW1A 1AA"),
        ("123456", "123456"),  # not a US ZIP: kept as written
        ("12", "12"),
        ("021341234", "021341234"),
    ],
)
def test_zip_codes_keep_their_leading_zeros(raw: str, expected: str) -> None:
    _assert_clean("ZipCode", raw, expected)


@pytest.mark.parametrize(
    ("raw", "expected"), [("2134", "02134"), ("601", "00601"), ("2134-1234", "02134-1234")]
)
def test_zip_codes_that_lost_leading_zeros_are_padded_with_a_warning(raw: str, expected: str) -> None:
    _assert_warned("ZipCode", raw, "zip_padded", value=expected)


def test_a_long_zip_is_truncated() -> None:
    cleaned = _clean("ZipCode", "1234567890123456789012")
    assert cleaned.value == "12345678901234567890"
    assert cleaned.codes == ("truncated",)


# --- value maps ----------------------------------------------------------------------------------------

GENDER = ENROLLMENT.field("Gender")


@pytest.mark.parametrize(
    ("raw", "value_map", "expected"),
    [
        ("Man", {"Man": "M"}, Cleaned("M")),
        ("Hombre", {"Hombre": "M", "Mujer": "F"}, Cleaned("M")),
        ("  mujer ", {"Hombre": "M", "Mujer": "F"}, Cleaned("F")),  # trimmed, case-insensitive
        ("Boy", {"boy ": "male"}, Cleaned("M")),  # the mapped value still goes through the rule
        ("Unknown", {"Unknown": ""}, Cleaned("")),  # mapping to blank: no warning
        ("F", {"Hombre": "M"}, Cleaned("F")),  # unmapped values are cleaned as usual
        ("F", {}, Cleaned("F")),
        ("F", None, Cleaned("F")),
    ],
)
def test_value_maps_apply_before_the_rule(
    raw: str, value_map: dict[str, str] | None, expected: Cleaned
) -> None:
    assert clean_value(raw, GENDER, value_map=value_map, today=TODAY) == expected


def test_an_exact_value_map_key_beats_a_case_insensitive_one() -> None:
    assert clean_value("m", GENDER, value_map={"M": "F", "m": "M"}, today=TODAY).value == "M"
    assert clean_value("M", GENDER, value_map={"m": "F", "M": "M"}, today=TODAY).value == "M"


def test_a_value_map_turns_otherwise_invalid_values_into_valid_ones() -> None:
    assert _clean("Gender", "X").codes == ("gender_invalid",)
    assert clean_value("X", GENDER, value_map={"X": "F"}, today=TODAY) == Cleaned("F")
    gpa = ENROLLMENT.field("GPA")
    assert clean_value("Honors", gpa, value_map={"honors": "A"}, today=TODAY) == Cleaned("4.0")


def test_a_value_mapped_to_an_invalid_value_is_still_warned() -> None:
    cleaned = clean_value("Man", GENDER, value_map={"Man": "Guy"}, today=TODAY)
    assert cleaned.value == ""
    assert cleaned.codes == ("gender_invalid",)


def test_a_mapped_value_is_truncated_to_the_width() -> None:
    field = ENROLLMENT.field("College")
    cleaned = clean_value(
        "ENG", field, value_map={"ENG": "College of Engineering and Applied Sciences"}, today=TODAY
    )
    assert cleaned.value == "College of Engineering and App"
    assert cleaned.codes == ("truncated",)


def test_a_value_map_keeps_leading_zeros() -> None:
    zip_field = ENROLLMENT.field("ZipCode")
    assert clean_value("Boston", zip_field, value_map={"Boston": "02134"}, today=TODAY) == Cleaned("02134")


def test_clean_value_rejects_a_rule_that_is_not_registered() -> None:
    with pytest.raises(KeyError):
        clean_value("x", LayoutField("Odd", 5, required=False, rule="nope"), today=TODAY)


def test_rules_are_pure() -> None:
    field = ENROLLMENT.field("BirthDate")
    assert [clean_value("3/5/05", field, today=TODAY) for _ in range(3)] == [Cleaned("2005/03/05")] * 3
