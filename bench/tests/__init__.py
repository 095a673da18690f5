"""Tests of the benchmark code: collected with the suite (pyproject testpaths)."""
