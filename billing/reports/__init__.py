"""Reports of an engine's history: revenue and MRR by month, invoices by status, dunning
recovery, churn, credit and debt outstanding, and the audit, as rich tables, PNG charts and one
HTML page.

    report = build_report(engine, start=start, end=end, title="January to June")
    print_report(report, Console())
    page = write_report(report, Path("billing-report"))  # the charts and index.html

Every amount is an integer number of minor units in one currency; figures in different
currencies are never added together. The same history gives the same report, and the same
report writes byte-identical files. See ``docs/simulate.md`` for what each figure means.
"""

from billing.reports.build import build_report as build_report
from billing.reports.console import print_report as print_report
from billing.reports.files import write_report as write_report
from billing.reports.model import Report as Report

__all__ = ["Report", "build_report", "print_report", "write_report"]
