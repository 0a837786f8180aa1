"""Test-wide plugins: real local services, fresh databases, the local Functions host, stand-ins."""

pytest_plugins = [
    "tests.support.services",
    "tests.support.database",
    "tests.support.host",
    "tests.support.transcription",
    "tests.support.ops",
    "tests.support.secret_scan",
]
