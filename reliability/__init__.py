"""Reliability scenarios shared by the test suite (small sizes) and `make chaos` (larger ones)."""
