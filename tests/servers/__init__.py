"""Servers the tests talk to over loopback (the OTLP receiver: otlp.py)."""
