"""The `docintel` command. It must start fast: see main.py.

`import httpx` also imports httpx's own command-line tool (`httpx._main`:
click, pygments, rich.syntax, rich.progress…) whenever those are installed,
and with docintel they always are (uvicorn brings click, rich brings
pygments): that was about half of the time httpx took to import. The CLI
never calls `httpx.main()`; marking the module absent makes httpx fall back to
its stub (its `__init__` catches the ImportError). Harmless if httpx is
already imported.
"""

from __future__ import annotations

import sys

sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
