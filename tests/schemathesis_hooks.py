"""Hooks for the schemathesis run in test_openapi.py (loaded via SCHEMATHESIS_HOOKS).

A tus PATCH body (`application/offset+octet-stream`) is raw bytes, as an
`application/octet-stream` body is; schemathesis knows only the latter.
"""

import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
