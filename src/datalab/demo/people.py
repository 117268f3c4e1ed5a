"""A seeded generator of student-shaped linkage data: a student database and an eMatch list against it.

The list mixes people who are in the database, written the way admissions offices receive them (typos,
nicknames, middle initials, suffixes, one part of a compound surname, swapped first and last names,
a missing or day-first birth date, a new email or ZIP), with people who are not but look like someone
who is: twins, siblings who share the family email, namesakes in the same ZIP, and strangers. Some
students are recorded twice under two keys. Every person carries the keys of the students they truly
are (empty when they are nobody in the database), so matchers can be scored.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass, field

from datalab.demo.synthetic import _FEMALE_NAMES, _LAST_NAMES, _MALE_NAMES

__all__ = ["KINDS", "LinkageSet", "Scores", "generate", "score"]

# Kinds of people in the list, with their share (in the database, then not in it).
KINDS: dict[str, float] = {
    "exact": 0.22,
    "first_typo": 0.06,
    "last_typo": 0.06,
    "nickname": 0.06,
    "middle_initial": 0.04,
    "suffix": 0.03,
    "compound_part": 0.03,
    "swapped": 0.03,
    "missing_dob": 0.04,
    "day_first_dob": 0.04,
    "dob_typo": 0.03,
    "new_email": 0.04,
    "moved": 0.04,
    "duplicate_student": 0.03,
    "accents_case": 0.03,
    "twin": 0.05,
    "sibling_email": 0.05,
    "namesake_zip": 0.05,
    "stranger": 0.07,
}
NOT_IN_DATABASE = frozenset({"twin", "sibling_email", "namesake_zip", "stranger"})

_NICKNAMES = {
    "William": ["Will", "Bill", "Billy", "Liam"],
    "Michael": ["Mike", "Mikey"],
    "James": ["Jim", "Jimmy", "Jamie"],
    "Robert": ["Rob", "Bob", "Bobby"],
    "Elizabeth": ["Liz", "Beth", "Lizzie", "Betsy"],
    "Katherine": ["Kate", "Katie", "Kathy"],
    "Alexander": ["Alex", "Xander"],
    "Benjamin": ["Ben", "Benny"],
    "Christopher": ["Chris"],
    "Daniel": ["Dan", "Danny"],
    "Matthew": ["Matt"],
    "Joseph": ["Joe", "Joey"],
    "Samuel": ["Sam", "Sammy"],
    "Nicholas": ["Nick"],
    "Jonathan": ["Jon"],
    "Anthony": ["Tony"],
    "Abigail": ["Abby"],
    "Victoria": ["Vicky", "Tori"],
    "Margaret": ["Maggie", "Peggy"],
    "Jennifer": ["Jenny", "Jen"],
    "Thomas": ["Tom", "Tommy"],
    "Andrew": ["Andy", "Drew"],
    "Isabella": ["Bella", "Izzy"],
    "Olivia": ["Liv"],
    "Charlotte": ["Charlie"],
    "Samantha": ["Sam"],
    "Jacob": ["Jake"],
    "Zachary": ["Zach"],
    "Joshua": ["Josh"],
    "Nathaniel": ["Nate", "Nathan"],
}
_ACCENTED = {"Jose": "José", "Sofia": "Sofía", "Chloe": "Chloé", "Zoe": "Zoë", "Renee": "Renée"}
_COMPOUND_SHARE = 0.06
_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "hotmail.com", "aol.com")
_STREETS = ("Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Lake", "Hill", "Park", "Washington", "River")
_STREET_TYPES = ("St", "Ave", "Rd", "Dr", "Ln", "Ct", "Way")
_CITIES = tuple(
    f"{a}{b}"
    for a in ("Spring", "Green", "Fair", "River", "Oak", "Mill")
    for b in ("field", "ville", "ton", "wood", "dale")
)


@dataclass
class LinkageSet:
    """The student database, the list of people, and for each person the keys of the students they are."""

    students: list[dict[str, str]]
    people: list[dict[str, str]]
    truth: list[frozenset[str]]
    kinds: list[str]


@dataclass
class Scores:
    """Precision, recall and F1 of a matcher's answers, overall and per kind of person."""

    true_positive: int = 0
    false_positive: int = 0
    false_negative: int = 0
    wrong_by_kind: dict[str, int] = field(default_factory=dict)
    total_by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def precision(self) -> float:
        made = self.true_positive + self.false_positive
        return self.true_positive / made if made else 1.0

    @property
    def recall(self) -> float:
        wanted = self.true_positive + self.false_negative
        return self.true_positive / wanted if wanted else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def score(answers: list[str | None], truth: list[frozenset[str]], kinds: list[str] | None = None) -> Scores:
    """Score answers (a student key or None per person) against the truth."""
    result = Scores()
    for index, (answer, keys) in enumerate(zip(answers, truth, strict=True)):
        kind = kinds[index] if kinds else "all"
        result.total_by_kind[kind] = result.total_by_kind.get(kind, 0) + 1
        right = (answer in keys) if answer is not None else not keys
        if answer is not None and answer in keys:
            result.true_positive += 1
        else:
            if answer is not None:
                result.false_positive += 1
            if keys:
                result.false_negative += 1
        if not right:
            result.wrong_by_kind[kind] = result.wrong_by_kind.get(kind, 0) + 1
    return result


def _typo(rng: random.Random, text: str) -> str:
    if len(text) < 3:
        return text + rng.choice(string.ascii_lowercase)
    position = rng.randrange(1, len(text))
    operation = rng.randrange(4)
    letter = rng.choice(string.ascii_lowercase)
    if operation == 0:  # substitution
        return text[:position] + letter + text[position + 1 :]
    if operation == 1:  # deletion
        return text[:position] + text[position + 1 :]
    if operation == 2:  # insertion
        return text[:position] + letter + text[position:]
    if position < len(text) - 1:  # transposition
        return text[:position] + text[position + 1] + text[position] + text[position + 2 :]
    return text[:position] + letter + text[position + 1 :]


def _dob(rng: random.Random) -> tuple[int, int, int]:
    return rng.randint(2005, 2010), rng.randint(1, 12), rng.randint(1, 28)


def _iso(year: int, month: int, day: int) -> str:
    return f"{year:04d}/{month:02d}/{day:02d}"


def _address(rng: random.Random) -> str:
    return f"{rng.randint(1, 9999)} {rng.choice(_STREETS)} {rng.choice(_STREET_TYPES)}"


class _Maker:
    def __init__(self, rng: random.Random, zips: int) -> None:
        self.rng = rng
        self.zips = [f"{rng.randint(1000, 99999):05d}" for _ in range(zips)]
        self.schools = [f"{rng.randint(100000, 999999)}" for _ in range(max(zips // 4, 10))]
        self.serial = 0

    def last(self) -> str:
        rng = self.rng
        if rng.random() < _COMPOUND_SHARE:
            first, second = rng.sample(_LAST_NAMES, 2)
            return f"{first}{rng.choice((' ', '-'))}{second}"
        return rng.choice(_LAST_NAMES)

    def first(self) -> tuple[str, str]:
        gender = self.rng.choice("FM")
        return self.rng.choice(_FEMALE_NAMES if gender == "F" else _MALE_NAMES), gender

    def email(self, first: str, last: str) -> str:
        self.serial += 1
        local = f"{first}.{last}".lower().replace(" ", "").replace("'", "")
        return f"{local}{self.serial}@{self.rng.choice(_DOMAINS)}"

    def student(
        self, key: str, *, last: str | None = None, home: dict[str, str] | None = None
    ) -> dict[str, str]:
        rng = self.rng
        first, gender = self.first()
        last = last or self.last()
        dob = _iso(*_dob(rng))
        zip_code = home["zip_code"] if home else rng.choice(self.zips)
        return {
            "StudentKey": key,
            "FirstName": first,
            "LastName": last,
            "BirthDate": dob,
            "Email": self.email(first, last),
            "ZipCode": zip_code,
            "Address1": home["address"] if home else _address(rng),
            "City": home["city"] if home else rng.choice(_CITIES),
            "Phone": f"{rng.randint(200, 999)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}",
            "HSCode": rng.choice(self.schools),
            "Gender": gender,
        }


def _person(student: dict[str, str], unique_id: str) -> dict[str, str]:
    return {
        "UniqueID": unique_id,
        "FirstName": student["FirstName"],
        "LastName": student["LastName"],
        "BirthDate": student["BirthDate"],
        "Email": student["Email"],
        "ZipCode": student["ZipCode"],
        "Address1": student["Address1"],
        "City": student["City"],
        "CellPhoneNumber": student["Phone"],
        "HSCode": student["HSCode"],
        "Gender": student["Gender"],
    }


def _students(maker: _Maker, count: int) -> Iterator[dict[str, str]]:
    for number in range(count):
        yield maker.student(f"{number + 1:09d}")


@dataclass
class _Listed:
    """One person of the list: the record, the keys of the students they truly are, and their kind."""

    person: dict[str, str]
    keys: frozenset[str]
    kind: str


class _Lister:
    """Writes the people of the list from students of the database, each changed the way its kind says.

    Each step handles its own kinds and leaves the others alone.
    """

    def __init__(self, maker: _Maker, database: list[dict[str, str]]) -> None:
        self.maker = maker
        self.rng = maker.rng
        self.database = database
        self.extra_key = len(database)

    def listed(self, kind: str, student: dict[str, str], unique_id: str) -> _Listed:
        listed = _Listed(_person(student, unique_id), frozenset({student["StudentKey"]}), kind)
        self._vary_name(listed, student)
        self._vary_birth_date(listed, student)
        self._vary_contact(listed, student)
        self._record_twice(listed, student)
        self._vary_relative(listed, student)
        self._drop_optional(listed)
        return listed

    def _vary_name(self, listed: _Listed, student: dict[str, str]) -> None:
        rng, person = self.rng, listed.person
        first, last = student["FirstName"], student["LastName"]
        if listed.kind == "first_typo":
            person["FirstName"] = _typo(rng, first)
        elif listed.kind == "last_typo":
            person["LastName"] = _typo(rng, last)
        elif listed.kind == "nickname":
            if first in _NICKNAMES:
                person["FirstName"] = rng.choice(_NICKNAMES[first])
            else:
                listed.kind = "exact"
        elif listed.kind == "middle_initial":
            person["FirstName"] = f"{first} {rng.choice(string.ascii_uppercase)}{rng.choice(('', '.'))}"
        elif listed.kind == "suffix":
            person["LastName"] = f"{last} {rng.choice(('Jr', 'Jr.', 'II', 'III'))}"
        elif listed.kind == "compound_part":
            if " " in last or "-" in last:
                parts = last.replace("-", " ").split()
                person["LastName"] = rng.choice(parts)
            else:
                person["LastName"] = f"{last}-{rng.choice(_LAST_NAMES)}"
        elif listed.kind == "swapped":
            person["FirstName"], person["LastName"] = last, first
        elif listed.kind == "accents_case":
            person["FirstName"] = _ACCENTED.get(first, first).upper()
            person["LastName"] = last.lower()

    def _vary_birth_date(self, listed: _Listed, student: dict[str, str]) -> None:
        rng, person = self.rng, listed.person
        year, month, day = (int(part) for part in student["BirthDate"].split("/"))
        if listed.kind == "missing_dob":
            person["BirthDate"] = ""
        elif listed.kind == "day_first_dob":
            if day <= 12 and day != month:
                # An ambiguous day-first date is read month-first: the day and month come out swapped.
                person["BirthDate"] = _iso(year, day, month)
            # An unambiguous one (31/07/2008) is read as written: the same date.
        elif listed.kind == "dob_typo":
            person["BirthDate"] = (
                _iso(year, month, day % 28 + 1)
                if rng.random() < 0.5
                else _iso(year + rng.choice((-1, 1)), month, day)
            )

    def _vary_contact(self, listed: _Listed, student: dict[str, str]) -> None:
        rng, person = self.rng, listed.person
        if listed.kind == "new_email":
            person["Email"] = rng.choice(
                ("", self.maker.email(student["FirstName"], student["LastName"]).replace("@", "x@"))
            )
        elif listed.kind == "moved":
            person["ZipCode"] = rng.choice(self.maker.zips)
            person["Address1"] = _address(rng)
            person["City"] = rng.choice(_CITIES)

    def _record_twice(self, listed: _Listed, student: dict[str, str]) -> None:
        """A student recorded again under a new key: the person is both."""
        if listed.kind != "duplicate_student":
            return
        self.extra_key += 1
        twin_record = dict(student, StudentKey=f"{self.extra_key:09d}")
        self.database.append(twin_record)
        listed.keys = frozenset({student["StudentKey"], twin_record["StudentKey"]})

    def _other_first(self, first: str) -> str:
        other_first = first
        while other_first == first:
            other_first, _ = self.maker.first()
        return other_first

    def _vary_relative(self, listed: _Listed, student: dict[str, str]) -> None:
        """The kinds not in the database: a relative, a namesake or a stranger in place of the student."""
        if listed.kind not in NOT_IN_DATABASE:
            return
        rng, maker, person = self.rng, self.maker, listed.person
        first, last = student["FirstName"], student["LastName"]
        listed.keys = frozenset()
        if listed.kind == "twin":
            # The twin in the list is not in the database; the sibling born the same day is.
            person["FirstName"] = self._other_first(first)
            person["Email"] = rng.choice(("", maker.email(person["FirstName"], last), student["Email"]))
        elif listed.kind == "sibling_email":
            person["FirstName"] = self._other_first(first)
            year = int(student["BirthDate"].split("/")[0])
            person["BirthDate"] = _iso(year - rng.randint(1, 3), rng.randint(1, 12), rng.randint(1, 28))
        elif listed.kind == "namesake_zip":
            person["BirthDate"] = _iso(*_dob(rng))
            while person["BirthDate"] == student["BirthDate"]:
                person["BirthDate"] = _iso(*_dob(rng))
            person["Email"] = rng.choice(("", maker.email(first, last)))
            person["Address1"] = _address(rng)
            person["CellPhoneNumber"] = ""
            person["HSCode"] = rng.choice(maker.schools)
        elif listed.kind == "stranger":
            listed.person = _person(maker.student(""), person["UniqueID"])

    def _drop_optional(self, listed: _Listed) -> None:
        # Files rarely carry every field: drop the optional ones now and then.
        rng, person = self.rng, listed.person
        for name in ("Address1", "City", "CellPhoneNumber", "HSCode", "Gender"):
            if rng.random() < 0.4:
                person[name] = ""
        if listed.kind not in ("new_email", "sibling_email") and rng.random() < 0.15:
            person["Email"] = ""


def _database(maker: _Maker, count: int) -> list[dict[str, str]]:
    database = list(_students(maker, count))
    # Some phones and high school codes are unknown, as in real files.
    for record in database:
        if maker.rng.random() < 0.3:
            record["Phone"] = ""
        if maker.rng.random() < 0.3:
            record["HSCode"] = ""
    return database


def generate(*, seed: int, students: int = 20_000, people: int = 5_000) -> LinkageSet:
    """A seeded student database of ``students`` records and a list of ``people`` scored against it."""
    rng = random.Random(seed)
    maker = _Maker(rng, zips=max(students // 10, 50))
    database = _database(maker, students)
    kinds_list = list(KINDS)
    weights = [KINDS[kind] for kind in kinds_list]
    chosen = rng.sample(range(students), min(people, students))
    lister = _Lister(maker, database)
    linkage = LinkageSet(students=database, people=[], truth=[], kinds=[])
    for index, student_index in enumerate(chosen):
        kind = rng.choices(kinds_list, weights)[0]
        listed = lister.listed(kind, database[student_index], f"U{index:07d}")
        linkage.people.append(listed.person)
        linkage.truth.append(listed.keys)
        linkage.kinds.append(listed.kind)
    return linkage
