"""Test doubles and simulations shipped with the library, for the engine's tests and your own.

Without extras: the scriptable in-process payment gateway (:class:`FakeGateway`; see
:mod:`billing.testing.fake_gateway` for the behaviors a customer can be scripted with), the
fake-server plumbing, gateway simulations (:mod:`billing.testing.simulation`), and the
:class:`ScenarioRecorder` that writes a billing history as a scenario file.

With hypothesis (``pip install billing[testing]``), loaded on first use:
:class:`BillingMachine`, the state machine that runs random histories on the real engine
(:mod:`billing.testing.machine`), and :mod:`billing.testing.strategies`, the strategies for
plans, customers, subscriptions, timelines and whole scenario files. docs/simulations.md shows
them at work.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from billing.testing.fake_gateway import Behavior as Behavior
from billing.testing.fake_gateway import FakeGateway as FakeGateway
from billing.testing.fake_gateway import TakenCharge as TakenCharge
from billing.testing.recorder import ScenarioRecorder as ScenarioRecorder

if TYPE_CHECKING:
    from billing.testing.fake_server import RemoteFakeGateway as RemoteFakeGateway
    from billing.testing.fake_server import serve as serve

__all__ = [
    "Behavior",
    "BillingMachine",
    "FakeGateway",
    "RemoteFakeGateway",
    "ScenarioRecorder",
    "TakenCharge",
    "serve",
    "strategies",
]

_LAZY = {
    "BillingMachine": ("billing.testing.machine", "BillingMachine"),
    "strategies": ("billing.testing.strategies", None),
    "RemoteFakeGateway": ("billing.testing.fake_server", "RemoteFakeGateway"),
    "serve": ("billing.testing.fake_server", "serve"),
}
"""Public names loaded when first used: the machine and the strategies import hypothesis (and
the engine), so that importing this package needs neither (the adapters' fakes import it); the
served fake imports httpx and uvicorn, which the in-process fake (and every ``billing``
command) does without. For static types, import them from their modules: ``from
billing.testing.machine import BillingMachine``."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != "hypothesis":
            raise
        raise ImportError(
            f"billing.testing.{name} needs hypothesis: pip install 'billing[testing]'"
        ) from exc
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value
