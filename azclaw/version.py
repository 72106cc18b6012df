"""The version of azclaw (one place; the package root and the report read it)."""

__version__ = "0.4.0"
