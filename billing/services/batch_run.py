"""The billing run: due subscriptions claimed, billed and collected a batch at a time.

A run claims a batch (``batch_size`` subscriptions) and works on it in rounds. In a round, every
subscription of the batch does its next piece of work, the earliest due: a billing step or a
check of an unsettled payment, so each subscription's history is still made in time order.

* The steps of a round are one :class:`~billing.store.batch.BatchTx`: the batch's rows are read
  in a few set-based queries, every step is worked out by the same rules as a single
  subscription's (:func:`~billing.services.billing_run.apply`), and everything they write
  (subscriptions, debts, invoices and lines, attempts with their idempotency keys, events,
  credit, the block of invoice numbers) goes out in one bulk statement per table, then commits.
* Then the attempts go to their gateways, up to ``threads`` calls at once, never after the
  claim's lease; their answers are recorded together, in one more batch transaction.
* Checks of unsettled payments (rare) are reconciled one by one, as before.
* A subscription whose step left it nothing due by the run's instant (what the transactions
  that wrote it computed as its next run) is done: only the others go on to another round.

A subscription whose step raises is set aside and worked on alone, which reports it as failed
or contended, and the round is done again for the rest; a batch whose write fails (another
process changed a row first) falls back to working on its subscriptions one at a time. Either
way no subscription's work is lost and none is done twice.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal, TypeVar

from billing.domain.errors import AlreadyExists, BillingError, ConcurrentUpdate
from billing.domain.payments import PaymentResult, PaymentStatus
from billing.services.billing_run import (
    PendingCharge,
    RunReport,
    _charge,
    _save_answer,
    _step,
    reconcile,
    record,
    run_subscription,
)
from billing.services.context import Context, log
from billing.store.batch import BatchTx

T = TypeVar("T")
_CHECKS_AT_ONCE = 8
"""Payment checks made at once: each holds a database connection while it asks its gateway."""
_MAX_SET_ASIDE = 3
"""Steps that may raise in one round before the rest of it is worked on one at a time."""


class _SetAside(Exception):
    def __init__(self, subscription_id: str) -> None:
        super().__init__(subscription_id)
        self.subscription_id = subscription_id


_Send = tuple[PendingCharge, datetime]


def run_due(
    ctx: Context,
    now: datetime,
    *,
    stop: Callable[[], bool] = lambda: False,
    checks_only: bool = False,
) -> RunReport:
    """Do all the work due by ``now``: claim a batch, bill it in rounds, release it, repeat.

    Memory stays bounded by the batch size whatever the number of subscriptions. When ``stop``
    turns true, the round under way finishes and the rest of the batch is released. With one
    thread the gateway calls are made one at a time, in the calling thread.
    """
    report = RunReport()
    settings = ctx.settings
    with _pool(settings.threads) as pool:
        while not stop():
            wall = ctx.clock.now()
            deadline = wall + settings.lease
            with ctx.store.transaction() as tx:
                claimed = tx.claim_due(
                    ctx.worker,
                    now=now,
                    wall_now=wall,
                    lease_until=deadline,
                    limit=settings.batch_size,
                    skip=[*report.failed, *report.contended],
                    checks_only=checks_only,
                )
            if not claimed:
                break
            report.count("claimed", len(claimed))
            ctx.hooks.claimed(claimed)
            try:
                _work_batch(ctx, claimed, now, deadline, report, checks_only, stop, pool)
            finally:
                release(ctx, claimed)
    return report


def _work_batch(
    ctx: Context,
    claimed: list[str],
    now: datetime,
    deadline: datetime,
    report: RunReport,
    checks_only: bool,
    stop: Callable[[], bool],
    pool: Executor,
) -> None:
    active = list(claimed)
    while active and not stop():
        if ctx.clock.now() >= deadline:
            # the claims lapsed: other workers may hold these subscriptions now
            log.warning("billing.claim_lapsed subscriptions=%s", len(active))
            return
        active = _round(ctx, active, now, deadline, report, checks_only, pool)


def _round(
    ctx: Context,
    active: list[str],
    now: datetime,
    deadline: datetime,
    report: RunReport,
    checks_only: bool,
    pool: Executor,
) -> list[str]:
    """Each subscription's next piece of work; returns those that may have more."""
    alone: list[str] = []
    tx: BatchTx | None = None
    while True:
        try:
            steps, checks, sends, tx = _steps(ctx, active, now, checks_only)
            break
        except _SetAside as exc:
            log.warning("billing.set_aside subscription=%s", exc.subscription_id)
            alone.append(exc.subscription_id)
            active = [sid for sid in active if sid != exc.subscription_id]
            if len(alone) >= _MAX_SET_ASIDE:
                alone.extend(active)
                active, steps, checks, sends = [], [], [], []
                break
        except Exception as exc:  # a write another process beat, a lost database...
            log.warning(
                "billing.batch_fallback subscriptions=%s error=%s",
                len(active),
                exc,
                exc_info=not isinstance(exc, ConcurrentUpdate | AlreadyExists),
            )
            alone.extend(active)
            active, steps, checks, sends = [], [], [], []
            break
    for subscription_id in alone:
        _alone(ctx, subscription_id, now, deadline, report, checks_only)
    report.count("steps", len(steps))
    finished = set(alone)
    for start in range(0, len(checks), _CHECKS_AT_ONCE):  # each holds a connection
        chunk = checks[start : start + _CHECKS_AT_ONCE]
        for (subscription_id, _, _), ok in zip(
            chunk,
            _map(pool, lambda check: _check(ctx, check, deadline, report), chunk),
            strict=True,
        ):
            if not ok:
                finished.add(subscription_id)
    if sends and tx is not None:
        sends = [(replace(p, request=tx.resolve(p.request)), at) for p, at in sends]
        failed, tx = _send_all(ctx, sends, deadline, report, pool, tx)
        finished.update(failed)
    if tx is not None:  # a step that left nothing due by now needs no other round to learn it
        finished.update(sid for sid in steps if not tx.has_work(sid, now))
    working = {*steps, *(sid for sid, _, _ in checks)}
    return [sid for sid in active if sid in working and sid not in finished]


def _steps(
    ctx: Context, active: list[str], now: datetime, checks_only: bool
) -> tuple[list[str], list[tuple[str, str, datetime]], list[_Send], BatchTx]:
    """Work out and write, in one transaction, the due step of every subscription whose next
    work is a step; returns the subscriptions stepped, the checks to make, and the sends."""
    steps: list[tuple[datetime, str]] = []
    checks: list[tuple[str, str, datetime]] = []
    sends: list[_Send] = []
    with ctx.store.batch() as tx:
        for loaded in tx.load(active):
            subscription = loaded.subscription
            due = None if checks_only else subscription.due_at
            check = tx.due_check(subscription.id, now)
            if check is not None and (due is None or due > now or check[1] <= due):
                checks.append((subscription.id, *check))
            elif due is not None and due <= now:
                steps.append((due, subscription.id))
            elif loaded.next_run_at is None or loaded.next_run_at <= now:
                tx.refresh_next_run(subscription.id)  # heal a stale one
        for at, subscription_id in sorted(steps):
            try:
                _, more = _step(ctx, tx, tx.subscription(subscription_id), now)
            except Exception as exc:
                log.warning("billing.step_failed subscription=%s error=%s", subscription_id, exc)
                raise _SetAside(subscription_id) from exc
            sends.extend((pending, at) for pending in more)
    return [sid for _, sid in steps], checks, sends, tx


def _check(
    ctx: Context, check: tuple[str, str, datetime], deadline: datetime, report: RunReport
) -> bool:
    """Reconcile an unsettled payment; ``False`` if its subscription must be left alone."""
    subscription_id, payment_id, at = check
    report.count("checks")
    done = _guarded(
        ctx, subscription_id, reconcile, ctx, payment_id, at, deadline=deadline, report_to=report
    )
    return done is not False


def _send_all(
    ctx: Context,
    sends: list[_Send],
    deadline: datetime,
    report: RunReport,
    pool: Executor,
    written: BatchTx,
) -> tuple[set[str], BatchTx]:
    """Send attempts, concurrently, and record their answers together; follow-up attempts
    (a reactivation billing the rest of a period) go out the same way. Returns subscriptions
    whose answers could not be recorded, and the last transaction that recorded answers."""
    failed: set[str] = set()
    while sends:
        answers = _map(pool, lambda send: _call(ctx, send[0], deadline), sends)
        answered = []
        for (pending, at), result in zip(sends, answers, strict=True):
            if result is False:  # the call raised (a hook): the attempt is reconciled later
                subscription_id = pending.subscription_id or pending.payment_id
                report.note("failed", subscription_id)
                failed.add(subscription_id)
            elif result is not None:
                answered.append((pending, at, result))
        report.count("payments", len(answered))
        sends, written = _record_all(ctx, answered, report, failed, written)
    return failed, written


def _call(
    ctx: Context, pending: PendingCharge, deadline: datetime
) -> PaymentResult | Literal[False] | None:
    """The gateway's answer; ``None`` if the claim lapsed first, ``False`` if a hook raised."""
    if ctx.clock.now() >= deadline:
        log.warning("billing.claim_lapsed payment=%s", pending.payment_id)
        return None
    try:
        ctx.hooks.attempt_written(pending.payment_id)
        result = _charge(ctx.gateways[pending.gateway], pending.request)
        ctx.hooks.gateway_answered(pending.payment_id, result)
    except Exception:
        log.exception("billing.failed payment=%s", pending.payment_id)
        return False
    return result


def _record_all(
    ctx: Context,
    answered: list[tuple[PendingCharge, datetime, PaymentResult]],
    report: RunReport,
    failed: set[str],
    written: BatchTx,
) -> tuple[list[_Send], BatchTx]:
    """Record gateway answers in one transaction, starting from what the transaction that
    ``written`` the attempts knew (each answer alone if that fails)."""
    if not answered:
        return [], written
    follow: list[_Send] = []
    try:
        with ctx.store.batch() as tx:
            tx.carry(written)
            rows = tx.lock_payments([pending.payment_id for pending, _, _ in answered])
            tx.load(sorted({row.subscription_id for row in rows.values() if row.subscription_id}))
            tx.load_invoices({row.invoice_id for row in rows.values()})
            # a declined attempt's invoice may use credit (a final one): read those customers'
            # balances together, locked in key order, rather than one by one
            tx.load_customers(
                {
                    rows[pending.payment_id].customer_id
                    for pending, _, result in answered
                    if result.status is PaymentStatus.FAILED
                },
                lock_credit=True,
            )
            for pending, at, result in answered:
                row = rows[pending.payment_id]
                follow.extend((more, at) for more in record(ctx, tx, row, result, at))
                ctx.hooks.before_outcome_commit(pending.payment_id)
        return [(replace(p, request=tx.resolve(p.request)), at) for p, at in follow], tx
    except Exception as exc:
        log.info("billing.outcomes_fallback payments=%s error=%s", len(answered), exc)
    follow = []
    for pending, at, result in answered:
        subscription_id = pending.subscription_id or pending.payment_id
        more = _guarded(
            ctx,
            subscription_id,
            _save_answer,
            ctx,
            pending.payment_id,
            result,
            at,
            report_to=report,
        )
        if more is False:
            failed.add(subscription_id)
        else:
            follow.extend((item, at) for item in more)
    return follow, written


def _alone(
    ctx: Context,
    subscription_id: str,
    now: datetime,
    deadline: datetime,
    report: RunReport,
    checks_only: bool,
) -> None:
    """All of one subscription's due work, by itself (set aside from its batch)."""
    _guarded(
        ctx,
        subscription_id,
        run_subscription,
        ctx,
        subscription_id,
        now,
        report,
        deadline=deadline,
        checks_only=checks_only,
        report_to=report,
    )


def _guarded(
    ctx: Context,
    subscription_id: str,
    fn: Callable[..., Any],
    *args: Any,
    report_to: RunReport | None = None,
    **kwargs: Any,
) -> Any:
    """``fn(*args, **kwargs)``; ``False`` if it raised (the subscription is noted as contended
    or failed in ``report_to`` and the run goes on without it)."""
    try:
        return fn(*args, **kwargs)
    except (ConcurrentUpdate, AlreadyExists) as exc:
        # another process got there first (a version, a unique key, a lock): a later run retries
        log.info("billing.contended subscription=%s error=%s", subscription_id, type(exc).__name__)
        if report_to is not None:
            report_to.note("contended", subscription_id)
    except Exception:
        log.exception("billing.failed subscription=%s", subscription_id)
        if report_to is not None:
            report_to.note("failed", subscription_id)
    return False


def _map(pool: Executor, fn: Callable[[Any], T], items: list[Any]) -> list[T]:
    return list(pool.map(fn, items)) if items else []


class _Inline(Executor):
    """An executor that runs each call at once, in the caller's thread."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _pool(threads: int) -> Executor:
    if threads == 1:
        return _Inline()
    return ThreadPoolExecutor(threads, thread_name_prefix="billing")


def release(ctx: Context, subscription_ids: list[str]) -> None:
    """Give up claims; a release that fails (the database went away) is logged, not raised:
    the run goes on, and the claims lapse with their lease."""
    try:
        with ctx.store.transaction() as tx:
            tx.release(ctx.worker, subscription_ids)
    except BillingError:
        log.exception("billing.release_failed subscriptions=%s", ",".join(subscription_ids))
