"""The worker process: APScheduler ticks that make the engine bill, reconcile and dispatch.

APScheduler (3.x, with its in-memory job store) only decides *when* to look for work; it keeps no
state. Which subscription gets billed, and that it is billed once, is decided by the database:
each run claims its work there (see :mod:`billing.services.billing_run`). So any number of
workers, on any number of machines, can run against one database, and a job store shared between
processes (which APScheduler 3 does not support) is never needed.

Four jobs, each coalesced and never overlapping itself:

* **billing** (every ``tick_seconds``): :meth:`Engine.run_due`;
* **notifications** (every ``tick_seconds``): :meth:`Engine.process_notifications`, the
  gateway notifications kept in the inbox and not processed yet;
* **reconcile** (every ``reconcile_after_seconds``): :meth:`Engine.reconcile`, which asks the
  gateways about unsettled payments and refunds and clears lapsed claims;
* **dispatch** (every ``dispatch_seconds``, when the host registered handlers):
  :meth:`Engine.dispatch`.

SIGTERM and SIGINT stop the worker gracefully: no new work is claimed, work already started
finishes, and the rest of a claimed batch is released for other workers.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType

from billing.engine import Engine
from billing.services.billing_run import RunReport
from billing.services.dispatch import DispatchReport, Handlers

log = logging.getLogger("billing.worker")


@dataclass
class PassReport:
    """What one pass of the worker did."""

    billing: RunReport
    reconcile: RunReport
    dispatch: DispatchReport = field(default_factory=DispatchReport)
    notifications: int = 0
    """Notifications from the inbox processed."""

    @property
    def did_nothing(self) -> bool:
        """Whether nothing was due: no subscription claimed, nothing checked or processed."""
        billing, reconcile = self.billing, self.reconcile
        return not (
            billing.claimed
            or billing.checks
            or reconcile.claimed
            or reconcile.checks
            or reconcile.refund_checks
            or reconcile.late_payment_checks
            or reconcile.link_cancellations
            or self.notifications
            or self.dispatch.delivered
            or self.dispatch.failed
        )


class Worker:
    """Runs an engine's billing, reconciliation and event dispatch on a schedule."""

    def __init__(self, engine: Engine, *, handlers: Handlers | None = None) -> None:
        self.engine = engine
        self.handlers = handlers or {}
        self._stopping = threading.Event()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Ask the worker to stop: it finishes the work it started and releases the rest."""
        self._stopping.set()

    def run_once(self) -> PassReport:
        """One pass: process waiting notifications, bill everything due, reconcile what is
        unsettled, deliver events. Logs one ``worker.pass`` line, even when nothing was due."""
        notifications = self.notifications()
        report = PassReport(
            billing=self.billing(), reconcile=self.reconcile(), notifications=notifications
        )
        if self.handlers:
            report.dispatch = self.dispatch()
        billing, reconcile = report.billing, report.reconcile
        log.info(
            "worker.pass worker=%s gateways=%s claimed=%s steps=%s payments=%s checks=%s "
            "refund_checks=%s late_payment_checks=%s link_cancellations=%s notifications=%s "
            "delivered=%s failed=%s nothing_due=%s",
            self.engine.worker,
            ",".join(sorted(self.engine.gateways)) or "none",
            billing.claimed,
            billing.steps,
            billing.payments,
            billing.checks + reconcile.checks,
            reconcile.refund_checks,
            reconcile.late_payment_checks,
            reconcile.link_cancellations,
            report.notifications,
            report.dispatch.delivered,
            len(billing.failed) + len(reconcile.failed),
            report.did_nothing,
        )
        return report

    def notifications(self) -> int:
        processed = self.engine.process_notifications(stop=self._stopping.is_set)
        if processed:
            log.info("notifications.pass processed=%s", processed)
        return processed

    def billing(self) -> RunReport:
        report = self.engine.run_due(stop=self._stopping.is_set)
        _log_run("billing", report)
        return report

    def reconcile(self) -> RunReport:
        report = self.engine.reconcile(stop=self._stopping.is_set)
        _log_run("reconcile", report)
        return report

    def dispatch(self) -> DispatchReport:
        report = self.engine.dispatch(self.handlers)
        if report.delivered or report.failed:
            log.info("dispatch.pass delivered=%s failed=%s", report.delivered, report.failed)
        return report

    def run(self) -> None:
        """Run until SIGTERM or SIGINT (or :meth:`stop`), then stop gracefully."""
        # imported here: every billing command imports this module, only this one schedules
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.memory import MemoryJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        settings = self.engine.settings
        scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        now = datetime.now(UTC)
        scheduler.add_job(
            self.billing, "interval", seconds=settings.tick_seconds, id="billing", next_run_time=now
        )
        scheduler.add_job(
            self.reconcile, "interval", seconds=settings.reconcile_after_seconds, id="reconcile"
        )
        scheduler.add_job(
            self.notifications,
            "interval",
            seconds=settings.tick_seconds,
            id="notifications",
            next_run_time=now,
        )
        if self.handlers:
            scheduler.add_job(
                self.dispatch,
                "interval",
                seconds=settings.dispatch_seconds,
                id="dispatch",
                next_run_time=now,
            )
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        log.info(
            "worker.started worker=%s tick=%ss threads=%s batch=%s lease=%ss",
            self.engine.worker,
            settings.tick_seconds,
            settings.threads,
            settings.batch_size,
            settings.lease_seconds,
        )
        scheduler.start()
        try:
            self._stopping.wait()
        finally:
            log.info("worker.stopping worker=%s", self.engine.worker)
            scheduler.shutdown(wait=True)  # running jobs see the stop flag and finish
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            log.info("worker.stopped worker=%s", self.engine.worker)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("worker.signal signal=%s", signal.Signals(signum).name)
        self.stop()


def freeze_startup_objects() -> None:
    """Move everything alive now (modules, the engine, its pools) out of the garbage
    collector's sight: a worker process keeps them until it exits, and a billing run allocates
    enough objects that full collections scanning them again and again cost about a tenth of
    its time. Call it once a worker process has opened its engine."""
    gc.collect()
    gc.freeze()


def _log_run(job: str, report: RunReport) -> None:
    if (
        report.claimed
        or report.failed
        or report.refund_checks
        or report.late_payment_checks
        or report.link_cancellations
    ):
        log.info(
            "%s.run claimed=%s steps=%s payments=%s checks=%s refund_checks=%s "
            "late_payment_checks=%s link_cancellations=%s contended=%s failed=%s",
            job,
            report.claimed,
            report.steps,
            report.payments,
            report.checks,
            report.refund_checks,
            report.late_payment_checks,
            report.link_cancellations,
            len(report.contended),
            len(report.failed),
        )


class LogfmtFormatter(logging.Formatter):
    """Structured log lines: ``ts=... level=... logger=... event key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        level = record.levelname.lower()
        line = f"ts={stamp} level={level} logger={record.name} event={record.getMessage()}"
        if record.exc_info:
            line += " error=" + repr(self.formatException(record.exc_info))
        return line


def configure_logging(level: str = "INFO") -> None:
    """Send the engine's logs, and APScheduler's, to standard error as structured lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(LogfmtFormatter())
    for name, threshold in (("billing", level.upper()), ("apscheduler", "WARNING")):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(threshold)
        logger.propagate = False
