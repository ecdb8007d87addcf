"""The client commands, one module per group; `main.py` registers them."""
