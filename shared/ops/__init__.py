"""Operations: readiness checks, the Prometheus exposition, queue statistics and the ops command line.

``python -m shared.ops --help`` for the command line; docs/operations.md for all of it.
"""
