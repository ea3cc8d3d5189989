"""The project's billing API: JSON views over the engine.

* Money is ``{"amount": "11888", "currency": "CLP"}``: a decimal string, never a float.
* The ``Idempotency-Key`` header of a POST is the engine's ``idempotency_key``: a client that
  retries gets the first answer back, and nothing is done twice.
* Engine errors become HTTP answers (:func:`problem`): a bad argument is 422 naming the field
  and the rule, a missing record 404, a reused key with other arguments 409...

These views are an API for the project's own front end or services, authenticated by tokens in
a real project (not shown), not by session cookies: so they are exempt from CSRF checks.
"""

import json
import logging
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from billing import (
    AlreadyExists,
    BillingError,
    ConcurrentUpdate,
    CurrencyMismatch,
    GatewayError,
    IdempotencyConflict,
    IllegalTransition,
    InvalidArgument,
    Invoice,
    Money,
    NotFound,
    PaymentAttempt,
    Plan,
    Subscription,
    TaxRate,
)
from saas.billing_engine import engine
from saas.models import WelcomeEmail

log = logging.getLogger("saas")

View = Callable[..., HttpResponse]

# -- errors and request bodies ----------------------------------------------------------------


def problem(exc: BillingError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body for an engine error (the most specific class first)."""
    body: dict[str, Any] = {"message": str(exc)}
    match exc:
        case InvalidArgument():
            return 422, {"error": "invalid_argument", "field": exc.field, "rule": exc.rule, **body}
        case CurrencyMismatch():
            return 422, {"error": "currency_mismatch", **body}
        case NotFound():
            return 404, {"error": "not_found", "entity": exc.entity, **body}
        case IdempotencyConflict():
            return 409, {"error": "idempotency_conflict", **body}
        case AlreadyExists():
            return 409, {"error": "already_exists", "entity": exc.entity, **body}
        case IllegalTransition():
            return 409, {"error": "illegal_transition", "status": exc.status, **body}
        case ConcurrentUpdate():  # nothing was written: retry with the same Idempotency-Key
            return 409, {"error": "concurrent_update", "retryable": True, **body}
        case GatewayError():
            details = {"gateway": exc.gateway, "code": exc.code, "retryable": exc.retryable}
            return 502, {"error": "gateway_error", **details, **body}
        case _:  # StorageError, SchemaNotReady, ExchangeRateNotFound...: not the client's fault
            log.error("billing.unavailable error=%s", exc)
            return 503, {"error": "unavailable", "message": "billing is unavailable, try again"}


def api(*methods: str) -> Callable[[View], View]:
    """A JSON view answering ``methods``, whose engine errors become :func:`problem` answers."""

    def decorate(view: View) -> View:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return HttpResponseNotAllowed(methods)
            try:
                return view(request, *args, **kwargs)
            except BillingError as exc:
                status, body = problem(exc)
                return JsonResponse(body, status=status)

        return wrapper

    return decorate


def body_of(request: HttpRequest, *fields: str) -> dict[str, Any]:
    """The request's JSON object, with none but ``fields`` in it."""
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        body = None
    return fields_of(body, fields, "body")


def fields_of(
    value: object, fields: tuple[str, ...], field: str, prefix: str = ""
) -> dict[str, Any]:
    """``value`` if it is a JSON object with none but ``fields`` in it."""
    if not isinstance(value, dict):
        raise InvalidArgument(field, f"must be a JSON object ({', '.join(fields)})")
    for name in value:
        if name not in fields:
            rule = f"is not a field of this request ({', '.join(fields)})"
            raise InvalidArgument(f"{prefix}{name}", rule)
    return value


def text(body: dict[str, Any], name: str, prefix: str = "") -> str:
    """``body[name]``, which must be a string: ``19.5`` is refused, ``"19.5"`` taken."""
    value = body.get(name)
    if not isinstance(value, str):
        raise InvalidArgument(f"{prefix}{name}", "must be a string", value)
    return value


def optional_text(body: dict[str, Any], name: str) -> str | None:
    """``body[name]`` if it is there (a string), else ``None``."""
    return None if body.get(name) is None else text(body, name)


def tax_of(body: dict[str, Any]) -> TaxRate | None:
    """The optional ``tax``: ``{"name": "IVA", "percent": "19", "inclusive": false}``."""
    if body.get("tax") is None:
        return None
    tax = fields_of(body["tax"], ("name", "percent", "inclusive"), "tax", prefix="tax.")
    inclusive = tax.get("inclusive", False)
    if not isinstance(inclusive, bool):
        raise InvalidArgument("tax.inclusive", "must be true or false", inclusive)
    name, percent = text(tax, "name", "tax."), text(tax, "percent", "tax.")
    return TaxRate.of(name, percent, inclusive=inclusive)


def idempotency_key(request: HttpRequest) -> str | None:
    return request.headers.get("Idempotency-Key")


def created(body: dict[str, Any]) -> JsonResponse:
    return JsonResponse(body, status=201)


# -- JSON: money as strings, instants in ISO 8601 ---------------------------------------------


def money(amount: Money) -> dict[str, str]:
    return {"amount": amount.to_decimal_string(), "currency": amount.currency.code}


def instant(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "code": plan.code,
        "name": plan.name,
        "price": money(plan.price),
        "interval": str(plan.interval),
    }


def payment_json(payment: PaymentAttempt) -> dict[str, Any]:
    return {
        "id": payment.id,
        "status": payment.status.value,
        "amount": money(payment.amount),
        "action_url": payment.action_url,  # a payment link: send the customer there
    }


def subscription_json(subscription: Subscription) -> dict[str, Any]:
    period = subscription.current_period
    payments = engine.payments(subscription_id=subscription.id)
    return {
        "id": subscription.id,
        "customer_id": subscription.customer_id,
        "plan": subscription.plan.code,
        "price": money(subscription.plan.price),
        "status": subscription.status.value,
        "current_period": None
        if period is None
        else {"start": instant(period.start), "end": instant(period.end)},
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "debt": money(subscription.debt_total),
        "latest_payment": payment_json(payments[-1]) if payments else None,
    }


def invoice_json(invoice: Invoice) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "number": invoice.number,
        "subscription_id": invoice.subscription_id,
        "status": invoice.status.value,
        "total": money(invoice.total),
        "paid_at": instant(invoice.paid_at),
    }


# -- the views --------------------------------------------------------------------------------


@api("POST")
def create_customer(request: HttpRequest) -> HttpResponse:
    body = body_of(request, "customer_id", "timezone", "name", "email")
    contact = {name: optional_text(body, name) for name in ("name", "email")}
    customer = engine.create_customer(
        customer_id=optional_text(body, "customer_id"),
        timezone=text(body, "timezone"),
        metadata={name: value for name, value in contact.items() if value is not None},
        idempotency_key=idempotency_key(request),
    )
    return created({"id": customer.id, "timezone": customer.timezone.key})


@api("POST")
def add_payment_method(request: HttpRequest, customer_id: str) -> HttpResponse:
    body = body_of(request, "gateway", "token", "label")
    method = engine.add_payment_method(
        customer_id,
        gateway=text(body, "gateway"),
        token=text(body, "token"),  # from the gateway's own card form: never a card number
        label=optional_text(body, "label"),
        idempotency_key=idempotency_key(request),
    )
    return created({"id": method.id, "gateway": method.gateway, "label": method.label})


@api("GET")
def list_plans(request: HttpRequest) -> HttpResponse:
    plans = [plan_json(plan) for plan in engine.plans() if plan.is_active]
    return JsonResponse(plans, safe=False)


@api("POST")
def subscribe(request: HttpRequest) -> HttpResponse:
    body = body_of(request, "customer_id", "plan_code", "tax")
    subscription = engine.subscribe(
        text(body, "customer_id"),
        text(body, "plan_code"),
        tax=tax_of(body),
        idempotency_key=idempotency_key(request),
    )
    return created(subscription_json(subscription))


@api("POST")
def change_plan(request: HttpRequest, subscription_id: str) -> HttpResponse:
    body = body_of(request, "plan_code", "behavior")
    subscription = engine.change_plan(
        subscription_id,
        text(body, "plan_code"),
        behavior=optional_text(body, "behavior") or "carry_debt",
        idempotency_key=idempotency_key(request),
    )
    return JsonResponse(subscription_json(subscription))


@api("POST")
def cancel(request: HttpRequest, subscription_id: str) -> HttpResponse:
    body = body_of(request, "at_period_end")
    at_period_end = body.get("at_period_end", True)
    if not isinstance(at_period_end, bool):
        raise InvalidArgument("at_period_end", "must be true or false", at_period_end)
    subscription = engine.cancel(
        subscription_id, at_period_end=at_period_end, idempotency_key=idempotency_key(request)
    )
    return JsonResponse(subscription_json(subscription))


@api("GET")
def customer_subscriptions(request: HttpRequest, customer_id: str) -> HttpResponse:
    engine.customer(customer_id)  # 404 for a customer that does not exist
    found = [subscription_json(s) for s in engine.subscriptions(customer_id)]
    return JsonResponse(found, safe=False)


@api("GET")
def customer_invoices(request: HttpRequest, customer_id: str) -> HttpResponse:
    engine.customer(customer_id)
    found = [invoice_json(invoice) for invoice in engine.invoices(customer_id=customer_id)]
    return JsonResponse(found, safe=False)


@api("GET")
def welcome_emails(request: HttpRequest) -> HttpResponse:
    """The host's side of the events: the welcome e-mails ``billing_events`` queued."""
    emails = WelcomeEmail.objects.order_by("queued_at", "id")
    found = [
        {
            "event_id": email.event_id,
            "customer_id": email.customer_id,
            "subscription_id": email.subscription_id,
            "plan_code": email.plan_code,
            "queued_at": instant(email.queued_at),
        }
        for email in emails
    ]
    return JsonResponse(found, safe=False)
