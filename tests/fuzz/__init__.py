"""The fuzz campaign (scripts/fuzz): `python -m tests.fuzz --help`."""
