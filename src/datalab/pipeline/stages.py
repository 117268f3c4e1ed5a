"""The pipeline's stages by name, and the context they run with, for every kind of runner."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from datalab.pipeline.analyze import analyze
from datalab.pipeline.cleanse import cleanse
from datalab.pipeline.ingest import ingest
from datalab.pipeline.process import process
from datalab.pipeline.runner import StageContext, StageFunction
from datalab.settings import Settings
from datalab.storage.base import ObjectStore
from datalab.students.matching import Matcher, ProbabilisticMatcher, RuleMatcher, matching_dir

STAGE_FUNCTIONS: dict[str, StageFunction] = {
    "analyze": analyze,
    "cleanse": cleanse,
    "ingest": ingest,
    "process": process,
}


def make_matcher(settings: Settings) -> Matcher:
    """The eMatch matcher these settings choose (one per process: it keeps the student snapshot)."""
    if settings.ematch_matcher == "rules":
        return RuleMatcher()
    return ProbabilisticMatcher(threshold=settings.ematch_threshold, snapshot_dir=matching_dir(settings))


def make_stage_context(
    *, settings: Settings, session_factory: sessionmaker[Session], store: ObjectStore
) -> StageContext:
    """The context stages run with under these settings."""
    return StageContext(
        session_factory=session_factory,
        store=store,
        uploads_bucket=settings.uploads_bucket,
        exports_bucket=settings.exports_bucket,
        temp_dir=settings.temp_dir,
        matcher=make_matcher(settings),
        max_rejected_percent=settings.pipeline_max_rejected_percent,
    )
