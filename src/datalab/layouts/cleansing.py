"""Cleansing rules of the Standard Import Layout: pure functions from a raw cell to a cleaned value.

Every rule has the signature ``(value, field, *, today) -> Cleaned``. The value is trimmed first; a blank
value stays blank without a warning. A value the rule cannot clean becomes ``""`` with a warning; a
cleaned value longer than the field's width is truncated (never rejected) with a ``truncated`` warning.
A warning is a ``FieldWarning(code, field, message)``; a value carries a tuple of them, in the order they
arose (a rule's own warning, then ``truncated``). Warnings never repeat the raw value (birth dates and
emails are personal data): callers already hold it.

Warning codes: ``truncated``, ``date_invalid``, ``date_out_of_range``, ``year_invalid``,
``year_out_of_range``, ``term_invalid``, ``gender_invalid``, ``gpa_invalid``, ``state_unknown`` (value
kept), ``boolean_invalid``, ``athlete_invalid``, ``email_invalid``, ``phone_invalid``, ``score_invalid``,
``score_out_of_range``, ``hs_code_invalid``, ``zip_padded`` (value kept, zero-padded).

Choices where the reference is silent are listed on each rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import NamedTuple, Protocol

from datalab.layouts.model import LayoutField

__all__ = [
    "RULES",
    "Cleaned",
    "FieldWarning",
    "Rule",
    "RuleFunction",
    "clean_act_score",
    "clean_athlete",
    "clean_birth_date",
    "clean_boolean",
    "clean_date",
    "clean_email",
    "clean_gender",
    "clean_gpa",
    "clean_hs_code",
    "clean_phone",
    "clean_sat_score",
    "clean_state",
    "clean_term",
    "clean_text",
    "clean_value",
    "clean_year",
    "clean_zip",
]


@dataclass(frozen=True)
class FieldWarning:
    """What cleansing changed or dropped in one value: a code (``date_invalid``), the field and a message.

    The row report writes the code and the message in columns of their own; the message never repeats the
    raw value.
    """

    code: str
    field: str
    message: str


class Cleaned(NamedTuple):
    """A cleaned value and, when something was changed or dropped, its warnings (in order)."""

    value: str
    warnings: tuple[FieldWarning, ...] = ()

    @property
    def codes(self) -> tuple[str, ...]:
        """The warning codes, in order (empty when there is no warning)."""
        return tuple(warning.code for warning in self.warnings)


class RuleFunction(Protocol):
    """``(value, field, *, today) -> Cleaned``: one cleansing rule."""

    __name__: str

    def __call__(self, value: str, field: LayoutField, *, today: date) -> Cleaned: ...


_Core = Callable[[str, LayoutField, date], tuple[str, FieldWarning | None]]


def _warning(code: str, field: LayoutField, message: str) -> FieldWarning:
    return FieldWarning(code, field.name, message)


def _fit(value: str, warning: FieldWarning | None, field: LayoutField) -> Cleaned:
    warnings = () if warning is None else (warning,)
    if len(value) > field.width:
        value = value[: field.width].rstrip()
        cut = _warning("truncated", field, f"value longer than {field.width} characters was truncated")
        warnings = (*warnings, cut)
    return Cleaned(value, warnings)


def _rule(core: _Core) -> RuleFunction:
    """Wraps a rule body: trim, keep blanks blank, then fit the result to the field's width."""

    def apply(value: str, field: LayoutField, *, today: date) -> Cleaned:
        text = value.strip()
        if not text:
            return Cleaned("")
        cleaned, warning = core(text, field, today)
        return _fit(cleaned, warning, field)

    apply.__name__ = core.__name__
    apply.__qualname__ = core.__qualname__
    apply.__doc__ = core.__doc__
    return apply


# --- text ---------------------------------------------------------------------------------------------


@_rule
def clean_text(value: str, field: LayoutField, today: date) -> tuple[str, FieldWarning | None]:
    """Free text (names, identifiers, codes): trimmed, otherwise kept as is, leading zeros included."""
    return value, None


# --- dates --------------------------------------------------------------------------------------------

_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("JAN", "JANUARY"),
            ("FEB", "FEBRUARY"),
            ("MAR", "MARCH"),
            ("APR", "APRIL"),
            ("MAY",),
            ("JUN", "JUNE"),
            ("JUL", "JULY"),
            ("AUG", "AUGUST"),
            ("SEP", "SEPT", "SEPTEMBER"),
            ("OCT", "OCTOBER"),
            ("NOV", "NOVEMBER"),
            ("DEC", "DECEMBER"),
        ),
        start=1,
    )
    for name in names
}

_Y2_OR_Y4 = r"(?P<y>\d{2}|\d{4})"
_DATE_FORMATS = tuple(
    re.compile(pattern)
    for pattern in (
        rf"(?P<m>\d{{1,2}})/(?P<d>\d{{1,2}})/{_Y2_OR_Y4}",  # m/d/yy, m/d/yyyy
        r"(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})",  # yyyy-mm-dd
        r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})",  # yyyymmdd
        rf"(?P<d>\d{{1,2}})-(?P<mon>[A-Za-z]{{3,9}})-{_Y2_OR_Y4}",  # dd-Mon-yyyy, dd-Mon-yy
        rf"(?P<m>\d{{1,2}})-(?P<d>\d{{1,2}})-{_Y2_OR_Y4}",  # mm-dd-yy, mm-dd-yyyy
        # ISO date-time: the date as written (no time-zone conversion)
        r"(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})T\d{2}(?::\d{2}(?::\d{2}(?:[.,]\d+)?)?)?"
        r"(?:Z|[+-]\d{2}(?::?\d{2})?)?",
        r"(?P<y>\d{4})/(?P<m>\d{1,2})/(?P<d>\d{1,2})",  # yyyy/mm/dd
    )
)


def shift_years(day: date, years: int) -> date:
    """The same day `years` later (earlier when negative); 29 February becomes the 28th where needed."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February in a year without one
        return day.replace(year=day.year + years, day=28)


def _date_candidates(text: str) -> list[date] | None:
    """Possible dates for a value in one of the formats (several centuries for a 2-digit year)."""
    for pattern in _DATE_FORMATS:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        parts = match.groupdict()
        if parts.get("mon") is not None:
            month = _MONTHS.get(parts["mon"].upper())
            if month is None:
                return None
        else:
            month = int(parts["m"])
        day = int(parts["d"])
        if month > 12 and 1 <= day <= 12 and not pattern.pattern.startswith("(?P<y>"):
            # Day first, and unambiguously so (31/07/2008): read as written.
            month, day = day, month
        year_text = parts["y"]
        years = [int(year_text)] if len(year_text) == 4 else [c + int(year_text) for c in (1900, 2000, 2100)]
        found = []
        for year in years:
            try:
                found.append(date(year, month, day))
            except ValueError:
                continue
        return found or None
    return None


def _clean_date_between(
    value: str, field: LayoutField, low: date, high: date
) -> tuple[str, FieldWarning | None]:
    candidates = _date_candidates(value.split(" ", 1)[0])
    if candidates is None:
        return "", _warning("date_invalid", field, "not a valid date in a supported format")
    for candidate in candidates:
        if low <= candidate <= high:
            return f"{candidate.year:04d}/{candidate.month:02d}/{candidate.day:02d}", None
    return "", _warning("date_out_of_range", field, f"must fall between {low:%Y/%m/%d} and {high:%Y/%m/%d}")


@_rule
def clean_date(value: str, field: LayoutField, today: date) -> tuple[str, FieldWarning | None]:
    """A date within the last 50 years up to one year ahead, as ``YYYY/MM/DD``.

    Text after the first space (a time) is dropped, then the value is parsed as ``m/d/yy``,
    ``m/d/yyyy``, ``yyyy-mm-dd``, ``yyyymmdd``, ``dd-Mon-yyyy``, ``dd-Mon-yy``, ``mm-dd-yy``,
    ``mm-dd-yyyy``, an ISO date-time (its calendar date as written, no time-zone conversion) or
    ``yyyy/mm/dd``. Month names may be abbreviated or spelled out, in any case. A month-first form whose
    first number cannot be a month but whose second can (``31/07/2008``) is read day first: the date is
    unambiguous (an ambiguous one, ``05/07/2008``, stays month first). Choice: a 2-digit year
    takes the century that puts the date inside the allowed window (it cannot fit two, the window is
    shorter than a century); when no century fits, the value is out of range.
    """
    return _clean_date_between(value, field, shift_years(today, -50), shift_years(today, 1))


@_rule
def clean_birth_date(value: str, field: LayoutField, today: date) -> tuple[str, FieldWarning | None]:
    """A birth date between 80 and 10 years before ``today`` (inclusive); same formats as ``date``."""
    return _clean_date_between(value, field, shift_years(today, -80), shift_years(today, -10))


# --- years and terms ----------------------------------------------------------------------------------

_YEAR = re.compile(r"(\d{2}|\d{4})(?:\.0+)?")


def _resolve_year(digits: str, today: date) -> int | None:
    low, high = today.year - 50, today.year + 10
    if len(digits) == 4:
        year = int(digits)
        return year if low <= year <= high else None
    for century in (1900, 2000, 2100):
        if low <= century + int(digits) <= high:
            return century + int(digits)
    return None


@_rule
def clean_year(value: str, field: LayoutField, today: date) -> tuple[str, FieldWarning | None]:
    """A year of 2 or 4 digits within 50 years before .. 10 years after ``today``'s year, as 4 digits.

    Choice: a 2-digit year takes the century that puts it in that window (with today in 2025, ``24`` is
    2024, ``35`` is 2035, ``80`` is 1980 and ``50`` fits no century and is out of range). A spreadsheet
    float such as ``2024.0`` is accepted.
    """
    match = _YEAR.fullmatch(value)
    if match is None:
        return "", _warning("year_invalid", field, "not a 2- or 4-digit year")
    year = _resolve_year(match.group(1), today)
    if year is None:
        return "", _warning(
            "year_out_of_range", field, f"must fall between {today.year - 50} and {today.year + 10}"
        )
    return f"{year:04d}", None


_SEASONS = {
    "SPRING": "SPRING",
    "SPR": "SPRING",
    "SP": "SPRING",
    "SUMMER": "SUMMER",
    "SUM": "SUMMER",
    "SU": "SUMMER",
    "FALL": "FALL",
    "AUTUMN": "FALL",
    "FA": "FALL",
    "WINTER": "WINTER",
    "WIN": "WINTER",
    "WI": "WINTER",
}


@_rule
def clean_term(value: str, field: LayoutField, today: date) -> tuple[str, FieldWarning | None]:
    """The entry term's season: ``SPRING``, ``SUMMER``, ``FALL`` or ``WINTER``.

    The season comes from a word (``Fall 2024``, ``Summer II``, ``AUTUMN`` = FALL, ``SPR``/``SUM``/``WIN``)
    or a code (``FA24``, ``24FA``, ``FA2024``, bare ``FA``); other words (``Semester``) are ignored.
    Choice: only the season is kept, the year belongs in EntryYear; a value naming two different
    seasons, or none (e.g. a numeric term code such as ``202408``), is blanked with a warning.
    """
    seasons = {_SEASONS[word] for word in re.findall(r"[A-Z]+", value.upper()) if word in _SEASONS}
    if len(seasons) != 1:
        reason = "names more than one season" if seasons else "names no season (spring, summer, fall, winter)"
        return "", _warning("term_invalid", field, reason)
    return seasons.pop(), None


# --- demographic --------------------------------------------------------------------------------------

_GENDERS = {"MALE": "M", "MAN": "M", "M": "M", "FEMALE": "F", "WOMAN": "F", "F": "F"}


@_rule
def clean_gender(value: str, field: LayoutField, today: date) -> tuple[str, FieldWarning | None]:
    """MALE/MAN/M -> ``M``, FEMALE/WOMAN/F -> ``F`` (any case); anything else is blanked with a warning."""
    gender = _GENDERS.get(value.upper())
    if gender is None:
        return "", _warning("gender_invalid", field, "expected male/man/M or female/woman/F")
    return gender, None


_BOOLEANS = {"YES": "Y", "Y": "Y", "TRUE": "Y", "1": "Y", "NO": "N", "N": "N", "FALSE": "N", "0": "N"}


@_rule
def clean_boolean(value: str, field: LayoutField, today: date) -> tuple[str, FieldWarning | None]:
    """YES/NO/Y/N/TRUE/FALSE/1/0 (any case) -> ``Y``/``N``; anything else is blanked with a warning."""
    flag = _BOOLEANS.get(value.upper())
    if flag is None:
        return "", _warning("boolean_invalid", field, "expected yes/no, y/n, true/false or 1/0")
    return flag, None


_SPORT_WORDS = frozenset(
    {
        "ACROBATICS",
        "ATHLETE",
        "ATHLETICS",
        "BASEBALL",
        "BASKETBALL",
        "BOWLING",
        "CHEER",
        "CHEERLEADING",
        "CREW",
        "CYCLING",
        "DANCE",
        "DIVE",
        "DIVING",
        "EQUESTRIAN",
        "ESPORTS",
        "FENCING",
        "FOOTBALL",
        "GOLF",
        "GYMNASTICS",
        "HOCKEY",
        "LACROSSE",
        "POLO",
        "RIFLE",
        "RODEO",
        "ROWING",
        "RUGBY",
        "SAILING",
        "SKI",
        "SKIING",
        "SOCCER",
        "SOFTBALL",
        "SQUASH",
        "SWIM",
        "SWIMMING",
        "TENNIS",
        "TRACK",
        "TRIATHLON",
        "TUMBLING",
        "VOLLEYBALL",
        "WRESTLING",
        "XC",
    }
)
_SPORT_PHRASES = ("CROSSCOUNTRY", "ESPORTS", "WATERPOLO")
_NOT_ATHLETE = frozenset({"NONE", "NONATHLETE", "NOTATHLETE", "NOTANATHLETE"})


@_rule
def clean_athlete(value: str, field: LayoutField, today: date) -> tuple[str, FieldWarning | None]:
    """StudentAthlete: a boolean, or a sport name (``Men's Soccer``, ``Track & Field``, ``XC``) -> ``Y``.

    Choice: ``None``/``Non-athlete``/``Not an athlete`` -> ``N``; sports are recognised from a fixed
    vocabulary of sport words; any other text is blanked with a warning.
    """
    flag = _BOOLEANS.get(value.upper())
    if flag is not None:
        return flag, None
    words = re.findall(r"[A-Z]+", value.upper())
    compact = "".join(words)
    if compact in _NOT_ATHLETE:
        return "N", None
    if any(word in _SPORT_WORDS for word in words) or any(phrase in compact for phrase in _SPORT_PHRASES):
        return "Y", None
    return "", _warning("athlete_invalid", field, "expected yes/no or a sport name")


# --- academic -----------------------------------------------------------------------------------------

_LETTER_GRADES = {
    "A+": "4.0",
    "A": "4.0",
    "A-": "3.667",
    "B+": "3.333",
    "B": "3.0",
    "B-": "2.667",
    "C+": "2.333",
    "C": "2.0",
    "C-": "1.667",
    "D+": "1.333",
    "D": "1.0",
    "D-": "0.667",
    "F": "0.0",
}
_DECIMAL = re.compile(r"\d+(?:\.\d*)?|\.\d+")


@_rule
def clean_gpa(value: str, field: LayoutField, today: date) -> tuple[str, FieldWarning | None]:
    """A GPA: a non-negative number, or a letter grade on the 4.0 scale (A+ and A = 4.0, A- = 3.667, ...).

    Choice: numbers keep their written precision but are normalised (``03.50`` -> ``3.50``, ``.5`` ->
    ``0.5``, ``4.`` -> ``4``); no upper bound (weighted and 100-point scales exist); signs, exponents and
    decimal commas are not numbers here. Letter grades are A+..D-, and F = 0.0, in any case.
    """
    letter = _LETTER_GRADES.get(value.upper().replace(" ", ""))
    if letter is not None:
        return letter, None
    if _DECIMAL.fullmatch(value) is None:
        return "", _warning("gpa_invalid", field, "not a number or a letter grade")
    try:
        number = Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern only lets decimals through
        return "", _warning("gpa_invalid", field, "not a number or a letter grade")
    return format(number, "f"), None


_WHOLE_NUMBER = re.compile(r"(\d+)(?:\.0+)?")


def _score(value: str, field: LayoutField, low: int, high: int) -> tuple[str, FieldWarning | None]:
    match = _WHOLE_NUMBER.fullmatch(value)
    if match is None:
        return "", _warning("score_invalid", field, "not a whole number")
    score = int(match.group(1))
    if not low <= score <= high:
        return "", _warning("score_out_of_range", field, f"must be between {low} and {high}")
    return str(score), None


@_rule
def clean_act_score(value: str, field: LayoutField, today: date) -> tuple[str, FieldWarning | None]:
    """An ACT composite, a whole number 1-36 (``07`` -> ``7``, ``32.0`` accepted)."""
    return _score(value, field, 1, 36)


@_rule
def clean_sat_score(value: str, field: LayoutField, today: date) -> tuple[str, FieldWarning | None]:
    """An SAT total, a whole number 400-1600 (choice: multiples of 10 are not enforced)."""
    return _score(value, field, 400, 1600)


@_rule
def clean_hs_code(value: str, field: LayoutField, today: date) -> tuple[str, FieldWarning | None]:
    """A high-school (CEEB) code: exactly 6 digits, leading zeros kept.

    Choice: a shorter code is not zero-padded (it is blanked with a warning, as upstream does), because
    padding would invent a code; the warning hints at lost leading zeros for a 5-digit value.
    """
    if re.fullmatch(r"\d{6}", value):
        return value, None
    hint = " (leading zero lost in a spreadsheet?)" if re.fullmatch(r"\d{5}", value) else ""
    return "", _warning("hs_code_invalid", field, f"must be exactly 6 digits{hint}")


# --- contact and address ------------------------------------------------------------------------------


@_rule
def clean_email(value: str, field: LayoutField, today: date) -> tuple[str, FieldWarning | None]:
    """An email address, kept only when it has an ``@`` with text on both sides and no spaces.

    Choice: lower-cased (addresses are matched case-insensitively in practice); no further syntax check.
    """
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or any(ch.isspace() for ch in value):
        return "", _warning("email_invalid", field, "not an email address")
    return value.lower(), None


_EXTENSION = re.compile(r"(?i)\s*(?:ext\.?|extension|x|#).*$")


@_rule
def clean_phone(value: str, field: LayoutField, today: date) -> tuple[str, FieldWarning | None]:
    """A phone number: digits only, the last 10 kept (a leading country code ``1`` falls off).

    Choice: an extension (``x12``, ``ext. 12``, ``#12``) is dropped before taking the digits, and fewer
    than 10 digits is not a usable (cell) number: blanked with a warning.
    """
    digits = re.sub(r"\D", "", _EXTENSION.sub("", value))
    if len(digits) < 10:
        return "", _warning("phone_invalid", field, "fewer than 10 digits")
    return digits[-10:], None


_STATE_CODES = {
    "ALABAMA": "AL",
    "ALASKA": "AK",
    "ARIZONA": "AZ",
    "ARKANSAS": "AR",
    "CALIFORNIA": "CA",
    "COLORADO": "CO",
    "CONNECTICUT": "CT",
    "DELAWARE": "DE",
    "DISTRICT OF COLUMBIA": "DC",
    "WASHINGTON DC": "DC",
    "FLORIDA": "FL",
    "GEORGIA": "GA",
    "HAWAII": "HI",
    "IDAHO": "ID",
    "ILLINOIS": "IL",
    "INDIANA": "IN",
    "IOWA": "IA",
    "KANSAS": "KS",
    "KENTUCKY": "KY",
    "LOUISIANA": "LA",
    "MAINE": "ME",
    "MARYLAND": "MD",
    "MASSACHUSETTS": "MA",
    "MICHIGAN": "MI",
    "MINNESOTA": "MN",
    "MISSISSIPPI": "MS",
    "MISSOURI": "MO",
    "MONTANA": "MT",
    "NEBRASKA": "NE",
    "NEVADA": "NV",
    "NEW HAMPSHIRE": "NH",
    "NEW JERSEY": "NJ",
    "NEW MEXICO": "NM",
    "NEW YORK": "NY",
    "NORTH CAROLINA": "NC",
    "NORTH DAKOTA": "ND",
    "OHIO": "OH",
    "OKLAHOMA": "OK",
    "OREGON": "OR",
    "PENNSYLVANIA": "PA",
    "RHODE ISLAND": "RI",
    "SOUTH CAROLINA": "SC",
    "SOUTH DAKOTA": "SD",
    "TENNESSEE": "TN",
    "TEXAS": "TX",
    "UTAH": "UT",
    "VERMONT": "VT",
    "VIRGINIA": "VA",
    "WASHINGTON": "WA",
    "WEST VIRGINIA": "WV",
    "WISCONSIN": "WI",
    "WYOMING": "WY",
    # territories and freely associated states with USPS codes
    "AMERICAN SAMOA": "AS",
    "GUAM": "GU",
    "NORTHERN MARIANA ISLANDS": "MP",
    "PUERTO RICO": "PR",
    "VIRGIN ISLANDS": "VI",
    "US VIRGIN ISLANDS": "VI",
    "UNITED STATES VIRGIN ISLANDS": "VI",
    "FEDERATED STATES OF MICRONESIA": "FM",
    "MICRONESIA": "FM",
    "MARSHALL ISLANDS": "MH",
    "PALAU": "PW",
    # military mail
    "ARMED FORCES AMERICAS": "AA",
    "ARMED FORCES EUROPE": "AE",
    "ARMED FORCES PACIFIC": "AP",
}
_VALID_CODES = frozenset(_STATE_CODES.values())


@_rule
def clean_state(value: str, field: LayoutField, today: date) -> tuple[str, FieldWarning | None]:
    """A US state, DC, territory or military (AA/AE/AP) code; full names become two-letter codes.

    Names and codes match in any case, ignoring dots, commas and hyphens (``N.Y.``, ``new york``,
    ``Washington, D.C.``, ``U.S. Virgin Islands``). Choice: any other value (a Canadian province, a
    foreign region: StateCode is 50 wide) is kept as written with a ``state_unknown`` warning.
    """
    key = " ".join(re.sub(r"[.,]", "", value.upper()).replace("-", " ").replace("_", " ").split())
    if key in _VALID_CODES:
        return key, None
    code = _STATE_CODES.get(key)
    if code is not None:
        return code, None
    return value, _warning("state_unknown", field, "not a US state or territory, kept as written")


@_rule
def clean_zip(value: str, field: LayoutField, today: date) -> tuple[str, FieldWarning | None]:
    """A postal code, kept as text with its leading zeros; inner runs of spaces become one space.

    Choice: an all-digit value of 3 or 4 digits (optionally followed by ``-dddd``) is a US ZIP that lost
    its leading zeros in a spreadsheet (New England, New Jersey, Puerto Rico...): it is zero-padded to 5
    digits with a ``zip_padded`` warning. Anything else (ZIP+4, foreign postal codes) is kept as written.
    """
    text = " ".join(value.split())
    match = re.fullmatch(r"(\d{3,4})(-\d{4})?", text)
    if match is None:
        return text, None
    padded = match.group(1).zfill(5) + (match.group(2) or "")
    return padded, _warning("zip_padded", field, "leading zeros restored to make a 5-digit ZIP")


# --- registry -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A named cleansing rule and the smallest field width that can hold its cleaned output."""

    name: str
    min_width: int
    function: RuleFunction

    def __call__(self, value: str, field: LayoutField, *, today: date) -> Cleaned:
        return self.function(value, field, today=today)


RULES: Mapping[str, Rule] = {
    rule.name: rule
    for rule in (
        Rule("text", 1, clean_text),
        Rule("date", 10, clean_date),
        Rule("birth_date", 10, clean_birth_date),
        Rule("year", 4, clean_year),
        Rule("term", 6, clean_term),
        Rule("gender", 1, clean_gender),
        Rule("gpa", 5, clean_gpa),
        Rule("state", 2, clean_state),
        Rule("boolean", 1, clean_boolean),
        Rule("athlete", 1, clean_athlete),
        Rule("email", 3, clean_email),
        Rule("phone", 10, clean_phone),
        Rule("act_score", 2, clean_act_score),
        Rule("sat_score", 4, clean_sat_score),
        Rule("hs_code", 6, clean_hs_code),
        Rule("zip", 5, clean_zip),
    )
}


def _apply_value_map(raw: str, value_map: Mapping[str, str]) -> str:
    key = raw.strip()
    if key in value_map:
        return value_map[key]
    folded = key.casefold()
    for source, target in value_map.items():
        if source.strip().casefold() == folded:
            return target
    return raw


def clean_value(
    raw: str, field: LayoutField, *, value_map: Mapping[str, str] | None = None, today: date
) -> Cleaned:
    """Clean one cell: the organization's saved value mapping for this field first, then the field's rule.

    ``value_map`` is one field's entry of an organization's mapping (``{"Man": "M"}`` from
    ``{"Gender": {"Man": "M"}}``); keys match the trimmed raw value exactly, else case-insensitively.
    A mapped value still goes through the rule (and may still be truncated); mapping to ``""`` blanks the
    value without a warning. KeyError for a rule name not in RULES (load_layout rejects those).
    """
    value = _apply_value_map(raw, value_map) if value_map else raw
    return RULES[field.rule](value, field, today=today)
