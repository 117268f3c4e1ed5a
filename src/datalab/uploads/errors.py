"""What the uploads service reports when a request about an upload or a mapping cannot be served."""

from __future__ import annotations

from typing import Any

from datalab.domain_errors import InvalidInput, NotFound, Unprocessable
from datalab.storage.errors import FormTokenExpired, FormTokenUnknown, LinkRefused


class UploadNotFound(NotFound):
    """No upload with this uid in the caller's organization."""

    code = "file_not_found"

    def __init__(self, uid: str) -> None:
        super().__init__(f"File with id: {uid} is NOT found.")
        self.uid = uid


class ReportNotFound(NotFound):
    """An upload with no row report: not written yet, or removed with the upload's files."""

    code = "report_not_found"


class InvalidListParameter(InvalidInput):
    """A filter or sort parameter of the upload list that is not one of its values (code names which)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)


class InvalidField(Unprocessable):
    """One field of an announced upload or a mapping that cannot be used, in upstream's validation shape."""

    code = "validation_error"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(
            f"{field}: {message}", detail=[{"loc": ["body", field], "msg": message, "type": "value_error"}]
        )
        self.field = field


class MappingProblems(Unprocessable):
    """A mapping that does not fit the file or its layout; ``detail`` lists every problem."""

    code = "validation_error"

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(str(problems[0]["msg"]), detail=problems)
        self.problems = problems


class UploadStatusConflict(Unprocessable):
    """An action the upload's status does not allow (answered 422, as upstream does)."""

    code = "invalid_status"

    def __init__(self, status: str, action: str) -> None:
        super().__init__(f"This file status is [{status}] and cannot be {action}.")
        self.status = status


class MappingNotFound(NotFound):
    """No saved mapping with this uid in the caller's organization."""

    code = "mapping_not_found"

    def __init__(self, uid: str) -> None:
        super().__init__(f"Mapping with id: {uid} is NOT found.")
        self.uid = uid


class InvalidMappingName(Unprocessable):
    """A mapping name that is empty or too long."""

    code = "invalid_name"

    def __init__(self) -> None:
        super().__init__("A mapping's name must be 1 to 200 characters.")


class UnknownUploadForm(FormTokenUnknown):
    """A POST form whose token is no upload's."""


class UploadFormExpired(FormTokenExpired):
    """A POST form for an upload no longer waiting for its file, or past the form's life."""


class WrongUploadKey(LinkRefused):
    """A POST form whose key is not the one its upload was given."""
