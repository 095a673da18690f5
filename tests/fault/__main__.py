"""`python -m tests.fault`: the fault suite (tests/fault/suite.py)."""

from tests.fault.suite import main

raise SystemExit(main())
