"""``billing demo``: a year of subscription billing through all four gateways, in under a minute.

In one process, on loopback: the fake servers of QVO, Openpay, Khipu and Payvalida (their
``billing.fake_gateways`` entry points), the real adapters talking HTTP to them, the host's
webhook endpoint (``billing.web.notifications_app``), and an engine on a SQLite file, moved twelve
months along a test clock as a worker would move it. The story (:mod:`billing.demo.story`) has a
trial, a UF-priced plan, plans in CLP, MXN and COP with inclusive and exclusive taxes, an upgrade
and a downgrade, a card that declines and recovers through dunning and one that does not, links
paid promptly and settled by their notifications, a link that expires unpaid and is retried, and
a refund. It prints what happened and writes the report's charts and HTML page
(``billing.reports``). See ``docs/demo.md``.

This module is imported by the ``billing`` command: it loads nothing heavy until the demo runs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from billing.demo.world import NotificationsApp

__all__ = ["register"]


def register(app: typer.Typer, *, notifications_app: NotificationsApp) -> None:
    """Add the ``demo`` command to ``app``. ``notifications_app`` is
    ``billing.web.notifications_app`` (the command passes it in: the demo and ``billing.web``
    are independent layers)."""

    @app.command("demo")
    def demo(
        directory: Annotated[
            Path,
            typer.Option(
                "--dir",
                help="Where to create billing-demo.db and billing-report/.",
                show_default="the current directory",
            ),
        ] = Path(),
        force: Annotated[
            bool, typer.Option("--force", help="Replace a previous demo in that directory.")
        ] = False,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print one JSON document instead of tables.")
        ] = False,
    ) -> None:
        """Bill a year of subscriptions through QVO, Openpay, Khipu and Payvalida (their real
        adapters, over HTTP to their fake servers on loopback) on a test clock, and show what
        happened: trials, UF and taxes, plan changes, declines and dunning, payment links
        settled by notification, a refund, and an audit of the books. Writes billing-demo.db and
        the report (billing-report/index.html) in --dir. Takes well under a minute and leaves
        nothing running."""
        run(directory, force=force, as_json=as_json, notifications_app=notifications_app)


# The exit codes, as the other ``billing`` commands use them (docs/operations.md): a directory
# the demo must not use; books that do not balance; a step the engine or a gateway refused; Ctrl-C.
USAGE, DIFFERS, BILLING, INTERRUPTED = 2, 1, 4, 130


def _error(message: str) -> None:
    """One line on standard error, never wrapped, so that a path stays whole."""
    line = " ".join(message.split())
    Console(stderr=True, soft_wrap=True, highlight=False).print(
        f"[bold red]error:[/bold red] {escape(line)}"
    )


def run(
    directory: Path, *, force: bool, as_json: bool, notifications_app: NotificationsApp
) -> None:
    """The ``demo`` command's body. Exits 2 for a directory it must not use, 1 when the books
    do not balance, 4 when the engine or a gateway refused a step, 130 when interrupted."""
    directory = directory.expanduser().resolve()
    if directory.exists() and not directory.is_dir():
        _error(f"--dir: {directory} is not a directory")
        raise typer.Exit(code=USAGE)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _error(f"--dir: cannot create {directory}: {exc.strerror or exc}")
        raise typer.Exit(code=USAGE) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        _error(f"--dir: cannot write in {directory}")
        raise typer.Exit(code=USAGE)
    from billing.demo.play import clear, play, previous_demo  # the engine loads only here

    left = previous_demo(directory)
    if left and not force:
        names = " and ".join(path.name for path in left)
        _error(f"--dir: {directory} holds a previous demo ({names}); add --force to replace it")
        raise typer.Exit(code=USAGE)
    from billing.demo.show import document, render
    from billing.demo.world import DemoError, Interrupted

    clear(directory)
    logging.getLogger("billing").setLevel(logging.ERROR)  # declines are the story's, not news
    logging.getLogger("adapters").setLevel(logging.ERROR)
    err = Console(stderr=True, soft_wrap=True)
    stopping = threading.Event()

    def interrupted(signum: int, frame: object) -> None:
        """The first Ctrl-C asks the demo to stop at its next step (the engine's runs end
        their work in hand); a second one interrupts at once."""
        stopping.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupted) if main else None
    try:
        outcome = play(
            directory,
            notifications_app,
            progress=lambda line: err.print(line, style="dim", markup=False, highlight=False),
            stop=stopping.is_set,
        )
    except DemoError as exc:
        _error(str(exc))
        raise typer.Exit(code=BILLING) from None
    except OSError as exc:  # the report's folder, say, could not be written
        _error(f"{exc.filename or directory}: {exc.strerror or exc}")
        raise typer.Exit(code=USAGE) from None
    except (Interrupted, KeyboardInterrupt):
        _error("interrupted; everything the demo started is stopped")
        raise typer.Exit(code=INTERRUPTED) from None
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)
    if as_json:
        typer.echo(json.dumps(document(outcome), indent=2, ensure_ascii=False))
    else:
        render(outcome, Console())
    if outcome.audit is None or not outcome.audit.balanced:
        raise typer.Exit(code=DIFFERS)
