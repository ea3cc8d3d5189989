"""A report as files: PNG charts (matplotlib, drawn on an Agg canvas) and one HTML page.

Everything written depends on the report alone: the charts use matplotlib's default style
whatever the user's ``matplotlibrc`` says, the PNGs carry no metadata (no ``Software`` key, and
matplotlib writes no creation time into PNGs), and the page has no "generated at" line. The same
report therefore writes byte-identical files. Chart values are converted to floats for drawing
only; every figure in the tables is the exact one.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from billing.reports.console import Section, sections
from billing.reports.model import INVOICE_STATUSES, Report, major, percent

CHARTS = ("revenue", "mrr", "subscriptions", "invoices", "dunning")
"""The charts written, each as ``<name>.png``."""

_STATUS_COLOURS = {
    "draft": "#bbbbbb",
    "open": "#f2a900",
    "paid": "#2e8b57",
    "uncollectible": "#c0392b",
    "void": "#7f8c8d",
}
_WIDTH = 8.0
_DPI = 100


def write_report(report: Report, folder: Path) -> Path:
    """Write the charts and ``index.html`` into ``folder`` (created if missing); returns the
    page's path. Files of an earlier report there are replaced."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    drawers: dict[str, Callable[[Any, Report], None]] = {
        "revenue": _revenue,
        "mrr": _mrr,
        "subscriptions": _subscriptions,
        "invoices": _invoices,
        "dunning": _dunning,
    }
    for name in CHARTS:
        _chart(folder / f"{name}.png", report, drawers[name])
    page = folder / "index.html"
    page.write_text(render_html(report), encoding="utf-8")
    return page


# -- charts ---------------------------------------------------------------------------------


def _chart(path: Path, report: Report, draw: Callable[[Any, Report], None]) -> None:
    # imported here: a report that is only printed never loads matplotlib
    from matplotlib import style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with style.context("default"):
        figure = Figure(dpi=_DPI, layout="constrained")
        FigureCanvasAgg(figure)
        draw(figure, report)
        figure.savefig(path, format="png", dpi=_DPI, metadata={"Software": None})


def _money_currencies(report: Report, *names: str) -> list[str]:
    return [
        code
        for code in report.currencies
        if any(getattr(month, name).get(code) for month in report.months for name in names)
    ]


def _thousands(axis: Any) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))


def _headroom(axis: Any, values: Sequence[float]) -> None:
    """From zero (or the lowest value, if below) to a little above the highest one."""
    low, high = min([0.0, *values]), max([0.0, *values])
    axis.set_ylim(low * 1.1, high * 1.12 if high > 0 else 1.0)


def _month_axis(axis: Any, labels: Sequence[str]) -> None:
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)


def _nothing(figure: Any, title: str) -> None:
    figure.set_size_inches(_WIDTH, 2.0)
    axis = figure.add_subplot()
    axis.set_title(title)
    axis.text(0.5, 0.5, "no data in this window", ha="center", va="center")
    axis.set_axis_off()


def _revenue(figure: Any, report: Report) -> None:
    currencies = _money_currencies(report, "invoiced", "collected")
    if not currencies:
        _nothing(figure, "Revenue by month")
        return
    figure.set_size_inches(_WIDTH, 2.6 * len(currencies) + 0.4)
    labels = [month.label for month in report.months]
    axes = figure.subplots(len(currencies), 1, squeeze=False)[:, 0]
    for axis, code in zip(axes, currencies, strict=True):
        collected = [float(major(m.collected.get(code, 0), code)) for m in report.months]
        invoiced = [float(major(m.invoiced.get(code, 0), code)) for m in report.months]
        axis.bar(range(len(labels)), collected, color="#2e8b57", label="collected (net)")
        axis.plot(range(len(labels)), invoiced, color="#34495e", marker="o", label="invoiced")
        axis.set_title(f"Revenue by month, {code}", fontsize=10)
        _headroom(axis, [*collected, *invoiced])
        axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        _thousands(axis)
        _month_axis(axis, labels)


def _mrr(figure: Any, report: Report) -> None:
    currencies = _money_currencies(report, "mrr")
    if not currencies:
        _nothing(figure, "MRR at month end")
        return
    figure.set_size_inches(_WIDTH, 2.4 * len(currencies) + 0.4)
    labels = [month.label for month in report.months]
    axes = figure.subplots(len(currencies), 1, squeeze=False)[:, 0]
    for axis, code in zip(axes, currencies, strict=True):
        values = [float(major(m.mrr.get(code, 0), code)) for m in report.months]
        axis.plot(range(len(labels)), values, color="#2c7fb8", marker="o")
        _headroom(axis, values)
        axis.set_title(f"MRR at month end, {code}", fontsize=10)
        _thousands(axis)
        _month_axis(axis, labels)


def _subscriptions(figure: Any, report: Report) -> None:
    figure.set_size_inches(_WIDTH, 5.0)
    labels = [month.label for month in report.months]
    top, bottom = figure.subplots(2, 1, sharex=True)
    positions = range(len(labels))
    top.bar(
        [p - 0.2 for p in positions],
        [m.new for m in report.months],
        width=0.4,
        color="#2c7fb8",
        label="new",
    )
    top.bar(
        [p + 0.2 for p in positions],
        [m.churned for m in report.months],
        width=0.4,
        color="#c0392b",
        label="churned",
    )
    top.set_title("Subscriptions: new and churned by month", fontsize=10)
    _headroom(top, [float(max(m.new, m.churned)) for m in report.months])
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _thousands(top)
    paying = [float(m.paying) for m in report.months]
    bottom.plot(positions, paying, color="#2e8b57", marker="o")
    _headroom(bottom, paying)
    bottom.set_title("Paying (active or past due) at month end", fontsize=10)
    _thousands(bottom)
    _month_axis(bottom, labels)


def _invoices(figure: Any, report: Report) -> None:
    counts = dict.fromkeys(INVOICE_STATUSES, 0)
    for row in report.invoices:
        counts[row.status] = counts.get(row.status, 0) + row.count
    figure.set_size_inches(_WIDTH, 3.0)
    axis = figure.add_subplot()
    names = list(counts)
    bars = axis.bar(
        names, [counts[n] for n in names], color=[_STATUS_COLOURS.get(n, "#999999") for n in names]
    )
    axis.bar_label(bars, labels=[f"{counts[n]:,}" for n in names], fontsize=8)
    _headroom(axis, [float(counts[n]) for n in names])
    axis.set_title("Invoices by status (all currencies)", fontsize=10)
    _thousands(axis)


def _dunning(figure: Any, report: Report) -> None:
    dunning = report.dunning
    figure.set_size_inches(_WIDTH, 3.0)
    axis = figure.add_subplot()
    names = ["entered", "recovered", "still collecting", "written off", "voided"]
    values = [
        dunning.entered,
        dunning.recovered,
        dunning.collecting,
        dunning.written_off,
        dunning.voided,
    ]
    colours = ["#34495e", "#2e8b57", "#f2a900", "#c0392b", "#7f8c8d"]
    bars = axis.barh(names[::-1], values[::-1], color=colours[::-1])
    axis.bar_label(bars, labels=[f"{v:,}" for v in values[::-1]], fontsize=8, padding=2)
    axis.set_title(
        f"Dunning: invoices with a failed attempt (recovery {percent(dunning.recovery_rate)})",
        fontsize=10,
    )


# -- the page -------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 60rem; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.1rem; margin-top: 2rem; }
p.window, p.note { color: #666; font-size: 0.9rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { padding: 0.25rem 0.75rem; border-bottom: 1px solid #ddd; text-align: left; }
th { border-bottom: 2px solid #999; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; margin: 0.5rem 0; }
""".strip()

_CHART_TITLES = {
    "revenue": "Revenue by month",
    "mrr": "MRR at month end",
    "subscriptions": "Subscriptions by month",
    "invoices": "Invoices by status",
    "dunning": "Dunning",
}


def _table(section: Section) -> str:
    numeric = section.numeric or tuple(False for _ in section.columns)
    cls = [' class="n"' if right else "" for right in numeric]
    head = "".join(
        f"<th{c}>{html.escape(name)}</th>" for name, c in zip(section.columns, cls, strict=True)
    )
    body = "\n".join(
        "<tr>"
        + "".join(f"<td{c}>{html.escape(cell)}</td>" for cell, c in zip(row, cls, strict=True))
        + "</tr>"
        for row in section.rows
    )
    note = f'\n<p class="note">{html.escape(section.note)}</p>' if section.note else ""
    return (
        f"<h2>{html.escape(section.title)}</h2>\n<table>\n<thead><tr>{head}</tr></thead>\n"
        f"<tbody>\n{body}\n</tbody>\n</table>{note}"
    )


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page; the charts are referenced relatively."""
    charts = "\n".join(
        f'<img src="{name}.png" alt="{html.escape(_CHART_TITLES[name])}">' for name in CHARTS
    )
    tables = "\n\n".join(_table(section) for section in sections(report))
    window = f"{report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC, by UTC month"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(report.title)}</title>\n<style>\n{_STYLE}\n</style>\n</head>\n"
        f"<body>\n<h1>{html.escape(report.title)}</h1>\n"
        f'<p class="window">{html.escape(window)}</p>\n\n'
        f"<h2>Charts</h2>\n{charts}\n\n{tables}\n</body>\n</html>\n"
    )
