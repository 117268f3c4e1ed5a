"""The pipeline's entry point: stages are queued in the same transaction as the status change."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from datalab.pipeline.models import STAGES, PipelineJob


def enqueue_stage(*, db: Session, upload_id: int, stage: str, now: datetime) -> PipelineJob:
    """Queue a stage for an upload; queuing a stage twice keeps the first job (stages are idempotent)."""
    if stage not in STAGES:
        raise ValueError(f"unknown pipeline stage {stage!r}")
    existing = db.scalar(
        select(PipelineJob).where(PipelineJob.upload_id == upload_id, PipelineJob.stage == stage)
    )
    if existing is not None:
        return existing
    job = PipelineJob(upload_id=upload_id, stage=stage, created_at=now, run_after=now)
    db.add(job)
    db.flush()
    return job
