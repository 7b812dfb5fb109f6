"""The WeChat Open Platform protocol: crypto, HTTP client, typed errors, permission sets, simulator.

This package imports nothing else of ours and no Django models, so it is testable without a database.
"""
