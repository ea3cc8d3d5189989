"""The gateways' notifications (webhooks): the view of the billing engine's
docs/notifications.md, as it is there (only the engine's import names this project's module).
Routed at ``billing/notifications/<gateway>``."""

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt

from billing.domain.errors import BillingError, InvalidArgument
from billing.web import answer
from saas.billing_engine import engine  # your open_engine(...), opened once


@csrf_exempt  # gateways do not send Django's CSRF token
def gateway_notification(request: HttpRequest, gateway: str) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    try:
        receipt = engine.receive_notification(
            gateway, headers=dict(request.headers), body=request.body
        )
    except InvalidArgument:  # a gateway the engine does not have
        return HttpResponse("ERROR: no such gateway", status=404, content_type="text/plain")
    except BillingError:  # the database cannot be reached: the gateway delivers it again
        return HttpResponse("ERROR: try again later", status=503, content_type="text/plain")
    status, text = answer(receipt)
    return HttpResponse(text, status=status, content_type="text/plain")
