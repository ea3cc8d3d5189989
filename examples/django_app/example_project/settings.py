"""Settings of the Django example: a SaaS backend that embeds the billing engine.

Everything that differs between machines comes from the environment:

* ``BILLING_DATABASE_URL``: the billing engine's database (default: ``billing.db`` here);
* ``EXAMPLE_DJANGO_DB``: the project's own SQLite database (default: ``db.sqlite3`` here);
* ``BILLING_EXAMPLE_FAKE=1``: charge through the in-process fake gateway; otherwise the engine
  takes the gateways the environment configures (``BILLING_QVO_API_TOKEN``...; see
  docs/operations.md#gateways in the billing repository).
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from billing.testing import FakeGateway

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = ["saas"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DJANGO_DB") or BASE_DIR / "db.sqlite3",
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "America/Santiago"
LANGUAGE_CODE = "es-cl"

# -- billing ----------------------------------------------------------------------------------

BILLING_DATABASE_URL = os.environ.get("BILLING_DATABASE_URL") or f"sqlite:///{BASE_DIR}/billing.db"
BILLING_MIGRATE = True
"""Upgrade the billing schema when the engine opens: handy here; in production run
``billing migrate`` as a deploy step (next to ``manage.py migrate``) and set this to False."""

_fake = os.environ.get("BILLING_EXAMPLE_FAKE", "0")
if _fake not in ("0", "1"):
    raise ImproperlyConfigured(f"BILLING_EXAMPLE_FAKE must be 0 or 1 (got {_fake!r})")
BILLING_ENGINE_OPTIONS: dict[str, object] = {"gateways": [FakeGateway()]} if _fake == "1" else {}
"""More arguments of ``open_engine`` (``gateways``, ``clock``...); tests override them."""
