"""`python -m tests.fuzz`: the fuzz campaign (tests/fuzz/campaign.py)."""

import sys

from tests.fuzz.campaign import main

sys.exit(main())
