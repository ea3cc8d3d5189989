"""A worker that kills itself with SIGKILL the nth time a hook point fires (run as a process).

Usage: ``python tests/e2e/crash_worker.py <point> <nth>``, with ``point`` one of ``claimed``,
``attempt_written``, ``gateway_answered`` and ``before_outcome_commit``. Everything else comes
from the environment, as for ``billing worker`` (``BILLING_DATABASE_URL``,
``BILLING_FAKE_GATEWAY_URL``, ``BILLING_LEASE_SECONDS``, ``BILLING_THREADS``...).

Just before it dies it prints one JSON line on standard output naming the point, the count and
what the hook was given (the payment's id, or the claimed subscriptions). If the point never
fires the nth time, it exits with :data:`NEVER_FIRED` after a whole pass instead, so a test can
tell a crash that did not happen from one that did.

This is not a test module: ``tests/e2e/test_worker_crash.py`` runs it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Sequence

from billing.bootstrap import open_engine
from billing.config import Settings
from billing.domain.payments import PaymentResult
from billing.services.hooks import Hooks
from billing.worker import Worker, configure_logging

POINTS = ("claimed", "attempt_written", "gateway_answered", "before_outcome_commit")
NEVER_FIRED = 3
USAGE = 2


class CrashHooks(Hooks):
    """Hooks that SIGKILL this process the ``nth`` time ``point`` fires."""

    def __init__(self, point: str, nth: int) -> None:
        self.point = point
        self.nth = nth
        self.fired = 0
        self._lock = threading.Lock()

    def _hit(self, point: str, payload: dict[str, object]) -> None:
        if point != self.point:
            return
        with self._lock:
            self.fired += 1
            if self.fired != self.nth:
                return
            line = json.dumps({"point": point, "nth": self.nth, **payload})
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def claimed(self, subscription_ids: Sequence[str]) -> None:
        self._hit("claimed", {"subscriptions": list(subscription_ids)})

    def attempt_written(self, payment_id: str) -> None:
        self._hit("attempt_written", {"payment": payment_id})

    def gateway_answered(self, payment_id: str, result: PaymentResult) -> None:
        self._hit(
            "gateway_answered",
            {"payment": payment_id, "status": str(result.status), "reference": result.reference},
        )

    def before_outcome_commit(self, payment_id: str) -> None:
        self._hit("before_outcome_commit", {"payment": payment_id})


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] not in POINTS or not argv[1].isdigit() or int(argv[1]) < 1:
        sys.stderr.write(f"usage: crash_worker.py {{{','.join(POINTS)}}} <nth >= 1>\n")
        return USAGE
    configure_logging("warning")
    hooks = CrashHooks(argv[0], int(argv[1]))
    with open_engine(settings=Settings.from_env(), hooks=hooks) as engine:
        Worker(engine).run_once()
    sys.stderr.write(f"crash_worker: {hooks.point} fired {hooks.fired} times, never {hooks.nth}\n")
    return NEVER_FIRED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
