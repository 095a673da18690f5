"""The fault suite (scripts/fault-suite): `python -m tests.fault --help`."""
