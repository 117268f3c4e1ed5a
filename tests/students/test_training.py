"""Training samples the pairs DATALAB_EMATCH_TRAINING_PAIRS asks for, and a small sample still makes a model
that matches."""

from __future__ import annotations

from typing import Any

import pytest

from datalab.students.linkage import default_model
from datalab.students.matching import Person, ProbabilisticMatcher, current_model, matching_dir
from tests.conftest import AppFactory
from tests.support.accounts import unique
from tests.support.admin import call, make_operator
from tests.support.students import record_sampled_pairs


def _u_probabilities(model: dict[str, Any]) -> list[float | None]:
    return [
        level.get("u_probability")
        for comparison in model["comparisons"]
        for level in comparison["comparison_levels"]
    ]


def test_a_small_sample_trains_a_model_that_matches(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(ematch_training_pairs="1000")
    sampled = record_sampled_pairs(monkeypatch)
    key = unique("S")
    body = (
        f"StudentKey,FirstName,LastName,BirthDate,Email\r\n{key},Quinn,Sample,2008-04-01,qs@example.edu\r\n"
    )
    loaded = call(app, make_operator(app), "POST", "/v1/admin/students", content=body.encode())
    assert loaded.status_code == 200, loaded.text
    # The operator API trains with the setting (the commands' tests show the commands do).
    assert sampled == [1000]
    with app.db() as db:
        model_id, model = current_model(db)
        assert model_id == loaded.json()["model"]["id"]
        # The u probabilities were estimated on the sample, not kept from the shipped model.
        assert _u_probabilities(model) != _u_probabilities(default_model())
        matcher = ProbabilisticMatcher(
            threshold=app.settings.ematch_threshold, snapshot_dir=matching_dir(app.settings)
        )
        try:
            (match,) = matcher.match(
                db=db,
                people=[
                    Person(
                        first_name="Quinn",
                        last_name="Sample",
                        birth_date="2008/04/01",
                        email="qs@example.edu",
                    )
                ],
            )
        finally:
            matcher.close()
    assert match is not None and match.student_key == key
