"""The test suite: one module per package module where it can (test_<module>.py), shared
helpers in helpers.py and fixtures in conftest.py."""
