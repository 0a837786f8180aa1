"""Test support: pytest plugins and stand-ins shared by the test suite."""
