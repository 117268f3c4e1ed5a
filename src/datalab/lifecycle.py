"""The lifecycle of an upload: its statuses, the moves between them, and the sets callers ask about.

One definition for the uploads service, the pipeline, the Data Center pages and the campus client (this
module imports nothing from the server, so the client uses it too).

    uploading -> analyzing -> (fields_mapping_required) -> enqueued -> cleansing -> ingesting
              -> processing -> done,  or failure / canceled
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "CANCELABLE",
    "LIVE",
    "SETTLED",
    "TERMINAL",
    "InvalidTransitionError",
    "UploadStatus",
    "can_move",
    "status_values",
    "transition",
]


class UploadStatus(StrEnum):
    """Where an upload is; the values are the API's `status` strings."""

    UPLOADING = "uploading"
    ANALYZING = "analyzing"
    FIELDS_MAPPING_REQUIRED = "fields_mapping_required"
    ENQUEUED = "enqueued"
    CLEANSING = "cleansing"
    INGESTING = "ingesting"
    PROCESSING = "processing"
    DONE = "done"
    FAILURE = "failure"
    CANCELED = "canceled"


S = UploadStatus

# A person (or the API) may cancel a file that has not gone past `enqueued`.
CANCELABLE = frozenset({S.UPLOADING, S.ANALYZING, S.FIELDS_MAPPING_REQUIRED, S.ENQUEUED})
# The file is moving by itself: a page following it refreshes.
LIVE = frozenset({S.UPLOADING, S.ANALYZING, S.ENQUEUED, S.CLEANSING, S.INGESTING, S.PROCESSING})
# Nothing happens to the file any more.
TERMINAL = frozenset({S.DONE, S.FAILURE, S.CANCELED})
# Nothing happens to the file until someone acts: a client waiting for it stops here.
SETTLED = TERMINAL | {S.FIELDS_MAPPING_REQUIRED}

_MOVES: dict[UploadStatus, frozenset[UploadStatus]] = {
    S.UPLOADING: frozenset({S.ANALYZING, S.FAILURE, S.CANCELED}),
    S.ANALYZING: frozenset({S.ENQUEUED, S.FIELDS_MAPPING_REQUIRED, S.FAILURE, S.CANCELED}),
    S.FIELDS_MAPPING_REQUIRED: frozenset({S.ENQUEUED, S.FAILURE, S.CANCELED}),
    S.ENQUEUED: frozenset({S.CLEANSING, S.FAILURE, S.CANCELED}),
    S.CLEANSING: frozenset({S.INGESTING, S.FAILURE}),
    S.INGESTING: frozenset({S.PROCESSING, S.FAILURE}),
    S.PROCESSING: frozenset({S.DONE, S.FAILURE}),
    S.DONE: frozenset(),
    # an API upload that failed for want of a mapping can be mapped by hand and queued
    S.FAILURE: frozenset({S.ENQUEUED}),
    S.CANCELED: frozenset(),
}


class InvalidTransitionError(ValueError):
    """A status change the lifecycle does not have (a programming error, never a user's)."""


def status_values(statuses: frozenset[UploadStatus]) -> list[str]:
    """The statuses as plain strings, sorted (for SQL `IN` lists)."""
    return sorted(status.value for status in statuses)


def can_move(current: str, new: str) -> bool:
    """Whether an upload in `current` may move to `new`."""
    return UploadStatus(new) in _MOVES[UploadStatus(current)]


def transition(current: str, new: str) -> UploadStatus:
    """The new status, checked against the lifecycle; InvalidTransitionError when it has no such move."""
    if not can_move(current, new):
        raise InvalidTransitionError(f"an upload cannot go from {current} to {new}")
    return UploadStatus(new)
