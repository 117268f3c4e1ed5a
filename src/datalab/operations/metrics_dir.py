"""The directory in which prometheus-client's multiprocess mode keeps the values of a server's processes.

prometheus-client chooses where values live (in memory, or in files under PROMETHEUS_MULTIPROC_DIR)
once, when it is first imported: the directory must be set before that, so this module imports
nothing of it and `datalab serve` calls `prepare_metrics_dir` before it imports the app.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_dir(home: Path) -> None:
    """Empty `<home>/metrics` and have this process and the workers it starts keep their values there.

    An earlier run's files are removed: its counts must not add up with this run's. When
    prometheus-client was already imported here (`datalab demo --serve` seeds data first), nothing is
    changed: this single server process keeps its values in memory.
    """
    if "prometheus_client" in sys.modules:
        return
    directory = home / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[METRICS_DIR_ENV] = str(directory)


def metrics_dir() -> str | None:
    """The shared directory of this server's processes, or None when this process counts in memory."""
    return os.environ.get(METRICS_DIR_ENV) or None
