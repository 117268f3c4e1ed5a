"""The upload lifecycle: one set of statuses and moves for the service, pipeline, pages and client."""

from __future__ import annotations

import itertools

import pytest

from datalab.client.models import TERMINAL_STATUSES
from datalab.lifecycle import (
    CANCELABLE,
    LIVE,
    SETTLED,
    TERMINAL,
    InvalidTransitionError,
    UploadStatus,
    can_move,
    transition,
)
from datalab.uploads.models import UPLOAD_STATUSES

PIPELINE = [
    "uploading",
    "analyzing",
    "fields_mapping_required",
    "enqueued",
    "cleansing",
    "ingesting",
    "processing",
    "done",
]


def test_the_statuses_are_the_apis_strings_in_lifecycle_order() -> None:
    assert (*PIPELINE, "failure", "canceled") == UPLOAD_STATUSES
    assert [status.value for status in UploadStatus] == list(UPLOAD_STATUSES)
    assert UploadStatus("done") == "done"


def test_every_step_of_the_pipeline_is_a_move_and_nothing_leaves_done_or_canceled() -> None:
    for current, new in itertools.pairwise(PIPELINE):
        if new == "fields_mapping_required":
            assert can_move(current, new) and can_move(new, "enqueued")
            continue
        if current == "fields_mapping_required":
            continue
        assert transition(current, new) is UploadStatus(new)
    assert can_move("analyzing", "enqueued")
    for status in UploadStatus:
        assert not can_move("done", status)
        assert not can_move("canceled", status)
    # a file failed for want of a mapping can be mapped by hand
    assert can_move("failure", "enqueued")
    assert not can_move("failure", "done")


@pytest.mark.parametrize(
    ("current", "new"), [("done", "processing"), ("cleansing", "canceled"), ("enqueued", "done")]
)
def test_a_move_the_lifecycle_does_not_have_is_refused(current: str, new: str) -> None:
    with pytest.raises(InvalidTransitionError, match=f"from {current} to {new}"):
        transition(current, new)


def test_the_sets_callers_ask_about() -> None:
    assert {"uploading", "analyzing", "fields_mapping_required", "enqueued"} == CANCELABLE
    assert all(can_move(status, "canceled") for status in CANCELABLE)
    assert {"done", "failure", "canceled"} == TERMINAL
    assert LIVE.isdisjoint(TERMINAL) and "fields_mapping_required" not in LIVE
    assert set(UploadStatus) == LIVE | SETTLED
    # the campus client's `--wait` stops where the file waits for a person, too
    assert TERMINAL_STATUSES == SETTLED == TERMINAL | {"fields_mapping_required"}
