"""Serving the app with waitress: the only package that imports waitress (tests/test_waitress_contract.py)."""
