"""tinycnn: find the most accurate small CNN under a parameter budget."""

__version__ = "0.1.0"
