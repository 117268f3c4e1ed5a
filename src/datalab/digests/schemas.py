"""Request and response shapes of the e-mail digest API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DigestSubscription(BaseModel):
    """Whether the signed-in user gets e-mail digests of new exports."""

    model_config = ConfigDict(extra="forbid")

    subscribed: bool = Field(description="true: one e-mail per digest period listing new exports")
