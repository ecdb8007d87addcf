"""The `docintel` command. It must start fast: see main.py."""

import sys

# httpx imports its own command-line tool at import time whenever Click, Rich
# and Pygments are installed (uvicorn and Rich bring them): ~90 ms of every
# command's start (issue 8), for a tool we never run. A None in sys.modules
# makes that import fail, and httpx keeps its stub `httpx.main` instead.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
