"""Filters: one module per kind, run by one chain in one documented order (``chain.py``)."""
