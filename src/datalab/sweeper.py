"""The server's periodic housekeeping: uploads and export files that arrived unannounced, files past their
retention, and the e-mail digests of new exports."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from datalab.db import utcnow
from datalab.digests.tasks import send_digests
from datalab.exports.forms import sweep_exports
from datalab.exports.tasks import expire_exports
from datalab.lifecycle import UploadStatus
from datalab.settings import Settings
from datalab.storage.base import ObjectStore
from datalab.uploads.tasks import purge_files, sweep_uploads

log = logging.getLogger(__name__)


class Sweeper:
    """A daemon thread that, every interval until stopped, does one round of `sweep_once`."""

    def __init__(
        self, *, session_factory: sessionmaker[Session], store: ObjectStore, settings: Settings
    ) -> None:
        self.session_factory = session_factory
        self.store = store
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweeper", daemon=True)

    def start(self) -> None:
        """Begin sweeping in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current round."""
        self._stop.set()
        self._thread.join(timeout=30)

    def sweep_once(self, *, now: datetime) -> None:
        """Find arrived uploads and operators' export files (on stores that do not report them), remove what
        retention says to, then mail the digests that are due."""
        settings, factory, store = self.settings, self.session_factory, self.store
        if not store.reports_uploads:
            sweep_uploads(
                session_factory=factory,
                store=store,
                bucket=settings.uploads_bucket,
                max_size=settings.max_upload_bytes,
                now=now,
            )
            sweep_exports(session_factory=factory, store=store, bucket=settings.exports_bucket, now=now)
        purge_files(
            session_factory=factory,
            store=store,
            bucket=settings.uploads_bucket,
            statuses=(UploadStatus.CANCELED,),
            cutoff=now - timedelta(hours=settings.canceled_retention_hours),
            now=now,
        )
        if settings.upload_retention_days:
            purge_files(
                session_factory=factory,
                store=store,
                bucket=settings.uploads_bucket,
                statuses=(UploadStatus.DONE, UploadStatus.FAILURE),
                cutoff=now - timedelta(days=settings.upload_retention_days),
                now=now,
            )
        if settings.export_retention_days:
            expire_exports(
                session_factory=factory,
                store=store,
                bucket=settings.exports_bucket,
                cutoff=now - timedelta(days=settings.export_retention_days),
                now=now,
            )
        send_digests(session_factory=factory, settings=settings, now=now)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.upload_sweep_interval_seconds):
            try:
                self.sweep_once(now=utcnow())
            except Exception:
                # A store or database hiccup must not end the sweeper; the next round retries.
                log.exception("sweep failed")
