"""The pure billing domain: values and rules, no I/O, no clock reads, no ORM.

Import from the defining modules (``billing.domain.money``...) or from ``billing``, which
re-exports the public names.
"""
