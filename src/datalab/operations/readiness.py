"""The readiness probe: can this process reach its database and its object store right now?

Each check runs in a thread of its own (one per check, so a hung store or database holds at most one
thread however often the probe is called) and gets `timeout` seconds. Probes that arrive while a check
runs wait for it and share its result: a burst of probes costs one query and one store call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: `error` is None when it passed, else a short reason (no internals)."""

    name: str
    error: str | None

    def as_detail(self) -> dict[str, str]:
        """The result as an entry of the error envelope's detail list."""
        if self.error is None:
            return {"check": self.name, "status": "ok"}
        return {"check": self.name, "status": "failed", "error": self.error}


class Readiness:
    """Named checks (callables that raise when something is wrong), run together with a deadline."""

    def __init__(self, checks: dict[str, Callable[[], None]], *, timeout: float) -> None:
        self.checks = checks
        self.timeout = timeout
        self._threads = {
            name: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"readiness-{name}") for name in checks
        }
        self._lock = asyncio.Lock()
        self._last: tuple[float, list[CheckResult]] | None = None

    async def run(self) -> list[CheckResult]:
        """Every check's result, from a run that started no earlier than this call (or a shared one)."""
        arrived = asyncio.get_running_loop().time()
        async with self._lock:
            if self._last is not None and self._last[0] >= arrived:
                return self._last[1]
            results = list(await asyncio.gather(*(self._run_one(name) for name in self.checks)))
            self._last = (asyncio.get_running_loop().time(), results)
            return results

    async def _run_one(self, name: str) -> CheckResult:
        future = self._threads[name].submit(self.checks[name])
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), timeout=self.timeout)
        except TimeoutError:
            future.cancel()  # when it has not started: a hung earlier check is still running
            log.warning("readiness check %s did not answer within %s s", name, self.timeout)
            return CheckResult(name, f"did not answer within {self.timeout:g} s")
        except Exception as exc:
            log.warning("readiness check %s failed", name, exc_info=exc)
            return CheckResult(name, f"failed ({type(exc).__name__})")
        return CheckResult(name, None)

    def close(self) -> None:
        """Stop the check threads (a check still running is left to finish on its own)."""
        for threads in self._threads.values():
            threads.shutdown(wait=False, cancel_futures=True)
