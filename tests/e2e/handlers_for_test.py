"""Event handlers for the worker tests, loaded by a real worker process with
``billing worker --handlers tests.e2e.handlers_for_test:HANDLERS``.

Every event is appended to the file named by ``BILLING_TEST_EVENTS_FILE`` as one line,
``seq id stream name``, and synced to disk before the handler returns. Two switches, also from
the environment, make the handler misbehave:

* ``BILLING_TEST_CRASH_AFTER=N``: after writing the line of the Nth event this process handles,
  SIGKILL the process, before the dispatcher can acknowledge the event;
* ``BILLING_TEST_FAIL_NAMES=a,b``: raise for events with those names (after writing the line).
"""

from __future__ import annotations

import os
import signal
import threading

from billing.store.unit_of_work import StoredEvent

_lock = threading.Lock()
_handled = 0


def _stream(event: StoredEvent) -> str:
    if event.subscription_id is not None:
        return f"subscription:{event.subscription_id}"
    if event.customer_id is not None:
        return f"customer:{event.customer_id}"
    return "engine"


def append_to_file(event: StoredEvent) -> None:
    """Write the event's line, then crash or fail if the environment says so."""
    global _handled
    with _lock:
        path = os.environ["BILLING_TEST_EVENTS_FILE"]
        with open(path, "a", encoding="utf-8") as file:
            file.write(f"{event.seq} {event.id} {_stream(event)} {event.name}\n")
            file.flush()
            os.fsync(file.fileno())
        _handled += 1
        crash_after = os.environ.get("BILLING_TEST_CRASH_AFTER")
        if crash_after and _handled == int(crash_after):
            os.kill(os.getpid(), signal.SIGKILL)
    failing = os.environ.get("BILLING_TEST_FAIL_NAMES", "")
    if event.name in failing.split(","):
        raise RuntimeError(f"the test handler refuses {event.name}")


HANDLERS = {"*": [append_to_file]}
