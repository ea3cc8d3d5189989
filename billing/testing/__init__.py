"""Test doubles shipped with the library: a scriptable in-process payment gateway.

Use them in the engine's tests, in simulations and in your own tests; see
:mod:`billing.testing.fake_gateway` for the behaviors a customer can be scripted with.
"""

from billing.testing.fake_gateway import Behavior as Behavior
from billing.testing.fake_gateway import FakeGateway as FakeGateway
from billing.testing.fake_gateway import TakenCharge as TakenCharge
from billing.testing.fake_server import RemoteFakeGateway as RemoteFakeGateway
from billing.testing.fake_server import serve as serve

__all__ = ["Behavior", "FakeGateway", "RemoteFakeGateway", "TakenCharge", "serve"]
