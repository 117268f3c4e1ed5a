"""Probabilistic record linkage of people against the student database: splink on DuckDB, plus guards.

Both sides are first brought to comparable forms (``prepare``): accents and case folded, a first name's
first word (a middle initial or name is dropped), the nicknames of a first name (the ``nicknames``
package), a last name without its suffix (``Jr``, ``II``...) and with the parts of a compound surname,
the birth date as ``YYYY-MM-DD``, the email and its local part, the ZIP and its first three digits, a
folded street address and city, the last 10 digits of a phone, the high school code and the gender.

splink (Fellegi-Sunter) then scores the candidate pairs that the blocking rules produce, with a model
whose parameters were estimated on the student database (``train``) or the one shipped with the package.
The deterministic guards run last, on the scored pairs, where a rule knows better than the probabilities:

- twins and siblings: the same last name and birth date with a different first name is another child
  of the family, never the person;
- family emails: the same email with a different first name and a different birth date is a relative
  who shares the address, never the person;
- duplicate student records: several students that share email, birth date and ZIP are one person
  recorded twice; the match goes to the first key and the others are reported as duplicates, instead
  of dropping the row as ambiguous;
- ambiguity: two different students above the threshold whose scores are close match nobody (a wrong
  match is worse than none).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import duckdb
import pyarrow as pa
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from nicknames import NickNamer
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from datalab.settings import DEFAULT_EMATCH_TRAINING_PAIRS

__all__ = [
    "CERTAIN",
    "DEFAULT_THRESHOLD",
    "EMATCH_FIELDS",
    "LINK_COLUMNS",
    "STUDENT_FILE_FIELDS",
    "Decision",
    "StudentIndex",
    "default_model",
    "from_fields",
    "model_settings",
    "prepare",
    "train_model",
]

# The raw columns a person or a student may carry (all text; "" when unknown).
LINK_COLUMNS = (
    "first_name",
    "last_name",
    "birth_date",
    "email",
    "zip_code",
    "address",
    "city",
    "phone",
    "hs_code",
    "gender",
    "identifier",
)

# The match probability a pair needs to be a match (DATALAB_EMATCH_THRESHOLD); chosen by the quality
# tests: on both labelled sets F1 is flat between 0.5 and 0.99, and 0.9 keeps a margin on either side.
DEFAULT_THRESHOLD = 0.9
# Probability from which a match is "certain" (the band under it, down to the threshold, is "probable").
CERTAIN = 0.99
# How much stronger (in match weight, log2 of the Bayes factor) the best candidate must be than the next
# different student for the row to match it rather than be ambiguous.
AMBIGUITY_MARGIN = 4.0
# Pairs under this probability are not even returned by splink.
_FLOOR = 0.01

_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "v", "2nd", "3rd"})
_PARTICLES = frozenset(
    {"de", "la", "del", "van", "von", "der", "den", "st", "le", "da", "di", "du", "dos", "los"}
)
_NON_WORD = re.compile(r"[^0-9a-z]+")

_SCHEMA = pa.schema(
    [
        ("unique_id", pa.int64()),
        ("first_name", pa.string()),
        ("first_aliases", pa.list_(pa.string())),
        ("last_name", pa.string()),
        ("last_parts", pa.list_(pa.string())),
        ("dob", pa.string()),
        ("email", pa.string()),
        ("email_local", pa.string()),
        ("zip", pa.string()),
        ("zip3", pa.string()),
        ("address", pa.string()),
        ("city", pa.string()),
        ("phone", pa.string()),
        ("hs_code", pa.string()),
        ("gender", pa.string()),
        ("identifier", pa.string()),
    ]
)

# Where each link column comes from in an eMatch record (layout field names) and in a student file.
EMATCH_FIELDS = {
    "first_name": "FirstName",
    "last_name": "LastName",
    "birth_date": "BirthDate",
    "email": "Email",
    "zip_code": "ZipCode",
    "address": "Address1",
    "city": "City",
    "phone": "CellPhoneNumber",
    "hs_code": "HSCode",
    "gender": "Gender",
}
STUDENT_FILE_FIELDS = dict(EMATCH_FIELDS, phone="Phone")


def from_fields(record: Mapping[str, str], fields: Mapping[str, str]) -> dict[str, str]:
    """A record keyed by its own field names as link columns (``EMATCH_FIELDS``, ``STUDENT_FILE_FIELDS``)."""
    return {column: record.get(name, "") or "" for column, name in fields.items()}


# --- preparing records ---------------------------------------------------------------------------------


def _fold(text: str) -> str:
    """Lower case, accents removed, apostrophes dropped, any other punctuation a space."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(char for char in decomposed if not unicodedata.combining(char)).replace("'", "")
    return _NON_WORD.sub(" ", plain).strip()


@functools.cache
def _nicknamer() -> Any:
    return NickNamer()


@functools.lru_cache(maxsize=65536)
def _first(raw: str) -> tuple[str | None, tuple[str, ...] | None]:
    words = [word for word in _fold(raw).split() if word not in _SUFFIXES]
    # "J Michael" goes by Michael; "John A" is John.
    longer = [word for word in words if len(word) > 1]
    if not longer:
        return (words[0], (words[0],)) if words else (None, None)
    name = longer[0]
    aliases = {name} | set(_nicknamer().canonicals_of(name))
    return name, tuple(sorted(aliases))


@functools.lru_cache(maxsize=65536)
def _last(raw: str) -> tuple[str | None, tuple[str, ...] | None]:
    words = _fold(raw).split()
    while len(words) > 1 and words[-1] in _SUFFIXES:
        words.pop()
    if not words:
        return None, None
    parts = [word for word in words if len(word) > 2 and word not in _PARTICLES] or words
    return "".join(words), tuple(sorted(set(parts)))


_RAW_SCHEMA = pa.schema([("unique_id", pa.int64())] + [(name, pa.string()) for name in LINK_COLUMNS])

_FOLD_SQL = (
    "nullif(trim(regexp_replace(replace(strip_accents(lower({0})), chr(39), ''), "
    "'[^0-9a-z]+', ' ', 'g')), '')"
)

_PREPARE_SQL = f"""
WITH base AS (
    SELECT r.*, split_part(trim(zip_code), '-', 1) AS zip_text,
        right(regexp_replace(phone, '[^0-9]', '', 'g'), 10) AS phone_digits,
        replace(trim(birth_date), '/', '-') AS dob_text,
        lower(trim(email)) AS email_text
    FROM raw r
)
SELECT base.unique_id,
    f.first_name, f.first_aliases, l.last_name, l.last_parts,
    CASE
        WHEN regexp_full_match(dob_text, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') THEN dob_text
        WHEN regexp_full_match(dob_text, '[0-9]{{8}}')
            THEN substr(dob_text, 1, 4) || '-' || substr(dob_text, 5, 2) || '-' || substr(dob_text, 7, 2)
    END AS dob,
    nullif(email_text, '') AS email,
    CASE WHEN contains(email_text, '@') THEN split_part(email_text, '@', 1) END AS email_local,
    CASE WHEN regexp_full_match(zip_text, '[0-9]+') THEN zip_text END AS zip,
    CASE WHEN regexp_full_match(zip_text, '[0-9]{{3,}}') THEN substr(zip_text, 1, 3) END AS zip3,
    {_FOLD_SQL.format("address")} AS address,
    {_FOLD_SQL.format("city")} AS city,
    CASE WHEN length(phone_digits) >= 7 THEN phone_digits END AS phone,
    nullif(trim(hs_code), '') AS hs_code,
    CASE WHEN upper(left(trim(gender), 1)) IN ('M', 'F') THEN upper(left(trim(gender), 1)) END AS gender,
    nullif(replace({_FOLD_SQL.format("identifier")}, ' ', ''), '') AS identifier
FROM base
LEFT JOIN first_names f ON f.raw = base.first_name
LEFT JOIN last_names l ON l.raw = base.last_name
ORDER BY base.unique_id
"""


def _name_lookup(con: duckdb.DuckDBPyConnection, column: str, parse: Any) -> pa.Table:
    raws = [row[0] for row in con.execute(f"SELECT DISTINCT {column} FROM raw").fetchall()]
    parsed = [parse(raw or "") for raw in raws]
    return pa.table(
        {
            "raw": pa.array(raws, pa.string()),
            column: pa.array([name for name, _ in parsed], pa.string()),
            "first_aliases" if column == "first_name" else "last_parts": pa.array(
                [list(more) if more else None for _, more in parsed], pa.list_(pa.string())
            ),
        }
    )


def prepare_table(raw: pa.Table) -> pa.Table:
    """A table of raw link columns (all text, plus ``unique_id``) as the table the model compares."""
    con = duckdb.connect()
    try:
        con.register("raw", raw)
        first_names = _name_lookup(con, "first_name", _first)
        last_names = _name_lookup(con, "last_name", _last)
        con.register("first_names", first_names)
        con.register("last_names", last_names)
        prepared: pa.Table = con.sql(_PREPARE_SQL).to_arrow_table()
    finally:
        con.close()
    return prepared.cast(_SCHEMA)


def raw_table(records: Iterable[Mapping[str, Any]], *, first_id: int = 0) -> pa.Table:
    """Records with ``LINK_COLUMNS`` keys (missing ones blank) as a raw table; ``unique_id`` numbers them
    from ``first_id`` unless a record carries its own."""
    columns: dict[str, list[Any]] = {name: [] for name in _RAW_SCHEMA.names}
    for number, record in enumerate(records, start=first_id):
        columns["unique_id"].append(int(record.get("unique_id", number)))
        for name in LINK_COLUMNS:
            columns[name].append(str(record.get(name, "") or ""))
    return pa.table(columns, schema=_RAW_SCHEMA)


def prepare(records: Iterable[Mapping[str, Any]], *, first_id: int = 0) -> pa.Table:
    """Records (``LINK_COLUMNS`` keys, missing ones blank) as the table the model compares."""
    return prepare_table(raw_table(records, first_id=first_id))


# --- the model -----------------------------------------------------------------------------------------

# Output column name of each comparison -> the eMatch field it explains.
EVIDENCE_FIELDS = {
    "first_name": "FirstName",
    "last_name": "LastName",
    "dob": "BirthDate",
    "email": "Email",
    "zip": "ZipCode",
    "address": "Address1",
    "city": "City",
    "phone": "CellPhoneNumber",
    "hs_code": "HSCode",
    "gender": "Gender",
    "identifier": "StudentID",
}

_SWAPPED = '"first_name_l" = "last_name_r" AND "last_name_l" = "first_name_r"'


def _comparison(column: str, description: str, *levels: Any) -> Any:
    """A comparison of ``column``: unknown on either side, then ``levels`` from the strongest, else none."""
    return cl.CustomComparison(
        output_column_name=column,
        comparison_description=description,
        comparison_levels=[cll.NullLevel(column), *levels, cll.ElseLevel()],
    )


def _exact(column: str, label: str = "exact") -> Any:
    return cll.ExactMatchLevel(column).configure(label_for_charts=label)


def _similar(column: str) -> Any:
    return cll.JaroWinklerLevel(column, 0.9).configure(label_for_charts="similar")


def _one_edit(column: str) -> Any:
    return cll.DamerauLevenshteinLevel(column, 1).configure(label_for_charts="one edit")


def _name_comparison(column: str, description: str, other: str, aliases: str, alias_label: str) -> Any:
    return _comparison(
        column,
        description,
        cll.ExactMatchLevel(column, term_frequency_adjustments=True).configure(label_for_charts="exact"),
        cll.CustomLevel(_SWAPPED, f"swapped with {other}"),
        cll.ArrayIntersectLevel(aliases, 1).configure(label_for_charts=alias_label),
        _one_edit(column),
        _similar(column),
        cll.JaroWinklerLevel(column, 0.8).configure(label_for_charts="alike"),
    )


def _birth_date_comparison() -> Any:
    return _comparison(
        "dob",
        "birth date",
        _exact("dob"),
        cll.CustomLevel(
            'substr("dob_l", 1, 4) = substr("dob_r", 1, 4) '
            'AND substr("dob_l", 6, 2) = substr("dob_r", 9, 2) '
            'AND substr("dob_l", 9, 2) = substr("dob_r", 6, 2)',
            "day and month swapped",
        ),
        _one_edit("dob"),
        cll.CustomLevel('substr("dob_l", 1, 4) = substr("dob_r", 1, 4)', "same year"),
    )


def _comparisons() -> list[Any]:
    return [
        _name_comparison("first_name", "first name", "last name", "first_aliases", "nickname"),
        _name_comparison("last_name", "last name", "first name", "last_parts", "part of compound"),
        _birth_date_comparison(),
        _comparison("email", "email", _exact("email"), _exact("email_local", "same local part")),
        _comparison("zip", "ZIP code", _exact("zip"), _exact("zip3", "first 3 digits")),
        _comparison("address", "street address", _exact("address"), _similar("address")),
        _comparison("city", "city", _exact("city"), _similar("city")),
        _comparison("phone", "phone", _exact("phone")),
        _comparison("hs_code", "high school code", _exact("hs_code")),
        _comparison("gender", "gender", _exact("gender")),
        _comparison(
            "identifier",
            "a personal identifier both sides know",
            _exact("identifier"),
            _one_edit("identifier"),
        ),
    ]


def _blocking_rules() -> list[Any]:
    return [
        block_on("email"),
        block_on("dob", "first_name"),
        block_on("dob", "last_name"),
        block_on("dob", "zip"),
        block_on("first_name", "last_name"),
        block_on("last_name", "zip"),
        block_on("first_name", "zip"),
        "l.first_name = r.last_name AND l.last_name = r.first_name",
        block_on("address", "zip3"),
        block_on("phone"),
        block_on("identifier"),
    ]


def model_settings() -> dict[str, Any]:
    """The untrained model: comparisons and blocking rules as splink settings (a JSON-able dict)."""
    creator = SettingsCreator(
        link_type="link_only",
        unique_id_column_name="unique_id",
        comparisons=_comparisons(),
        blocking_rules_to_generate_predictions=_blocking_rules(),
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )
    settings: dict[str, Any] = creator.get_settings("duckdb").as_dict()  # type: ignore[no-untyped-call]
    return settings


@functools.cache
def _default_model_text() -> str:
    return (resources.files("datalab.students") / "default_model.json").read_text(encoding="utf-8")


def default_model() -> dict[str, Any]:
    """The model shipped with the package (trained with EM on synthetic student-shaped data)."""
    model: dict[str, Any] = json.loads(_default_model_text())
    return model


def _quiet() -> None:
    # splink reports levels it could not train (expected: most pairs agree on nothing) as warnings.
    logging.getLogger("splink").setLevel(logging.ERROR)


def train_model(
    students: pa.Table,
    *,
    people: pa.Table | None = None,
    base: Mapping[str, Any] | None = None,
    seed: int = 1,
    pairs: int = DEFAULT_EMATCH_TRAINING_PAIRS,
) -> dict[str, Any]:
    """Estimate the model's parameters, as splink settings.

    The u probabilities (how often two different people agree by chance) are sampled from at most
    ``pairs`` random pairs (``DATALAB_EMATCH_TRAINING_PAIRS``); the prior is one match per person
    (``1 / number of students``). With a file of ``people`` the m probabilities are estimated by EM on
    the pairs it forms with the students; otherwise they are those of ``base`` (the shipped model by
    default, itself so estimated). A database too small to sample keeps the u probabilities of ``base``.
    """
    _quiet()
    con = duckdb.connect()
    try:
        db_api = DuckDBAPI(con)
        if people is None:
            settings = dict(base or default_model())
            settings["link_type"] = "dedupe_only"
            linker = Linker(
                db_api.register(students, dataset_display_name="students"), settings, log_level=None
            )
            if students.num_rows >= 2:
                linker.training.estimate_u_using_random_sampling(max_pairs=pairs, seed=seed)
        else:
            left = db_api.register(students, dataset_display_name="students")
            right = db_api.register(people, dataset_display_name="people")
            linker = Linker([left, right], model_settings(), log_level=None)
            linker.training.estimate_u_using_random_sampling(max_pairs=pairs, seed=seed)
            # Each session estimates the m probabilities of the comparisons outside its blocking rule.
            for rule in (block_on("dob"), block_on("first_name", "last_name")):
                linker.training.estimate_parameters_using_expectation_maximisation(rule)
        trained: dict[str, Any] = linker.misc.save_model_to_json()
    finally:
        con.close()
    trained.pop("linker_uid", None)
    trained["link_type"] = "link_only"
    trained["probability_two_random_records_match"] = 1.0 / max(students.num_rows, 2)
    return trained


# --- matching ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What the matcher decided for one person: the student (by ``unique_id``) or none, and why."""

    student: int | None
    probability: float = 0.0
    evidence: str = ""
    duplicates: tuple[int, ...] = ()
    reason: str = ""


@dataclass
class _Candidate:
    student: int
    probability: float
    weight: float
    evidence: str
    levels: dict[str, str] = field(default_factory=dict)


def _levels_by_weight(settings: Mapping[str, Any]) -> dict[str, list[tuple[float, str]]]:
    """For each comparison, the match weight of each agreeing level and its label.

    splink reports each comparison's weight (``mw_<name>``, before any term frequency adjustment); the
    level is the one with that weight.
    """
    levels: dict[str, list[tuple[float, str]]] = {}
    for comparison in settings["comparisons"]:
        name = comparison["output_column_name"]
        real = [level for level in comparison["comparison_levels"] if not level.get("is_null_level")]
        found = []
        for level in real[:-1]:  # the else level explains nothing
            m, u = level.get("m_probability"), level.get("u_probability")
            if m and u:
                found.append((math.log2(m / u), str(level.get("label_for_charts") or "")))
        levels[name] = found
    return levels


def _level(levels: Sequence[tuple[float, str]], weight: float | None) -> str:
    if weight is None or math.isnan(weight) or weight <= 0:
        return ""
    for level_weight, label in levels:
        if abs(level_weight - weight) < 1e-6:
            return label
    return ""


_SAME_FIRST = frozenset({"exact", "swapped with last name", "nickname", "one edit", "similar"})


def _same_first(level: str, a: str | None, b: str | None) -> bool:
    """Whether two first names may be the same person's: exact, nickname, a typo, or an initial of it."""
    if not a or not b or level in _SAME_FIRST:
        return True
    return a.startswith(b) or b.startswith(a)


def _guard(person: Mapping[str, Any], student: Mapping[str, Any], levels: Mapping[str, str]) -> str:
    """Why a pair scored above the threshold is still not the same person ("" when nothing says so)."""
    both_dobs = bool(person["dob"] and student["dob"])
    # Birth dates that disagree beyond a typo or a day/month swap, with no email to vouch for the pair.
    vouched = any(levels.get(name) for name in ("email", "address", "phone"))
    other_birth = both_dobs and levels.get("dob", "") in ("", "same year") and not vouched
    if _same_first(levels.get("first_name", ""), person["first_name"], student["first_name"]):
        return "namesake" if other_birth else ""
    # Twins share a home, a family email and often a phone line: only a personal identifier vouches.
    if (
        levels.get("last_name")
        and both_dobs
        and person["dob"] == student["dob"]
        and not levels.get("first_name")
        and not levels.get("identifier")
    ):
        return "twin or sibling"
    if person["email"] and person["email"] == student["email"] and person["dob"] != student["dob"]:
        return "family email"
    return "namesake" if other_birth else ""


class StudentIndex:
    """The student snapshot the matcher reads: prepared students and their term frequencies, in DuckDB.

    Built once per student database state and reused for every file; ``link`` matches a batch of people.
    """

    def __init__(
        self,
        students: pa.Table,
        settings: Mapping[str, Any],
        *,
        threshold: float,
        guards: bool = True,
    ) -> None:
        _quiet()
        self.settings = dict(settings)
        # Each comparison's match weight (mw_<name>) explains a match.
        self.settings["retain_intermediate_calculation_columns"] = True
        self.threshold = threshold
        self.guards = guards
        self.student_count = students.num_rows
        self._levels = _levels_by_weight(self.settings)
        self._con = duckdb.connect()
        self._con.register("students_arrow", students)
        self._con.execute("CREATE TABLE students AS SELECT * FROM students_arrow")
        self._con.unregister("students_arrow")
        self._tf: dict[str, str] = {}
        for column in ("first_name", "last_name"):
            table = f"tf_{column}"
            self._con.execute(
                f"CREATE TABLE {table} AS SELECT {column}, count(*)::DOUBLE / "
                f"(SELECT count(*) FROM students WHERE {column} IS NOT NULL) AS tf_{column} "
                f"FROM students WHERE {column} IS NOT NULL GROUP BY {column}"
            )
            self._tf[column] = table
        self._db_api = DuckDBAPI(self._con)
        self._students = self._db_api.register("students", dataset_display_name="students")
        self._calls = 0
        self._students_by_id: dict[int, dict[str, Any]] | None = None

    def close(self) -> None:
        """Release the DuckDB connection."""
        self._con.close()

    def _student_rows(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        rows = self._con.execute(
            "SELECT unique_id, first_name, first_aliases, last_name, dob, email, zip "
            "FROM students WHERE unique_id IN (SELECT unnest($ids))",
            {"ids": wanted},
        ).fetchall()
        keys = ("unique_id", "first_name", "first_aliases", "last_name", "dob", "email", "zip")
        return {row[0]: dict(zip(keys, row, strict=True)) for row in rows}

    def link(self, people: pa.Table) -> list[Decision]:
        """One decision per person, in the order of ``people``."""
        if people.num_rows == 0:
            return []
        if self.student_count == 0:
            return [Decision(None, reason="no students") for _ in range(people.num_rows)]
        self._calls += 1
        people_sdf = self._db_api.register(
            people, dataset_display_name="people", table_name=f"people_{self._calls}"
        )
        linker = Linker([self._students, people_sdf], self.settings, log_level=None)
        for column, table in self._tf.items():
            linker.table_management.register_term_frequency_lookup(self._db_api.register(table), column)
        predictions = linker.inference.predict_between(
            self._students, people_sdf, threshold_match_probability=_FLOOR, warning_mode="never"
        )
        frame = predictions.as_pyarrow_table()  # type: ignore[no-untyped-call]
        columns = frame.to_pydict()
        predictions.drop_table_from_database_and_remove_from_cache()
        by_person: dict[int, list[_Candidate]] = {}
        left_is_student = columns["source_dataset_l"][0] == "students" if frame.num_rows else True
        for index in range(frame.num_rows):
            student = columns["unique_id_l" if left_is_student else "unique_id_r"][index]
            person = columns["unique_id_r" if left_is_student else "unique_id_l"][index]
            levels = {}
            for name, choices in self._levels.items():
                label = _level(choices, columns[f"mw_{name}"][index])
                if label:
                    levels[name] = label
            evidence = ", ".join(f"{EVIDENCE_FIELDS[name]} {label}" for name, label in levels.items())
            by_person.setdefault(int(person), []).append(
                _Candidate(
                    student=int(student),
                    probability=float(columns["match_probability"][index]),
                    weight=float(columns["match_weight"][index]),
                    evidence=evidence,
                    levels=levels,
                )
            )
        people_rows = people.select(["unique_id", "first_name", "first_aliases", "dob", "email"]).to_pylist()
        students = (
            self._student_rows(
                c.student
                for candidates in by_person.values()
                for c in candidates
                if c.probability >= self.threshold
            )
            if self.guards
            else {}
        )
        return [
            self._decide(person, by_person.get(person["unique_id"], []), students) for person in people_rows
        ]

    def _decide(
        self,
        person: Mapping[str, Any],
        candidates: list[_Candidate],
        students: Mapping[int, Mapping[str, Any]],
    ) -> Decision:
        above = sorted((c for c in candidates if c.probability >= self.threshold), key=lambda c: -c.weight)
        if not above:
            best = max(candidates, key=lambda c: c.weight, default=None)
            return Decision(None, best.probability if best else 0.0, reason="below threshold")
        if not self.guards:
            top = above[0]
            return Decision(top.student, top.probability, top.evidence)
        kept: list[_Candidate] = []
        reasons = []
        for candidate in above:
            reason = _guard(person, students[candidate.student], candidate.levels)
            if reason:
                reasons.append(reason)
            else:
                kept.append(candidate)
        if not kept:
            return Decision(None, above[0].probability, reason=reasons[0] if reasons else "guarded")
        top = kept[0]
        chosen = students[top.student]
        duplicates = []
        rivals = []
        for other in kept[1:]:
            record = students[other.student]
            if (
                chosen["email"]
                and chosen["dob"]
                and chosen["zip"]
                and (record["email"], record["dob"], record["zip"])
                == (chosen["email"], chosen["dob"], chosen["zip"])
            ):
                duplicates.append(other.student)
            else:
                rivals.append(other)
        if rivals and top.weight - rivals[0].weight < AMBIGUITY_MARGIN:
            return Decision(None, top.probability, reason="ambiguous")
        return Decision(top.student, top.probability, top.evidence, tuple(duplicates))
