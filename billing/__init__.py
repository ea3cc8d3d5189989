"""A subscription billing engine: plans, periods, proration, taxes, credit, debt and dunning.

The names below are the public API; anything else may change without notice.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
