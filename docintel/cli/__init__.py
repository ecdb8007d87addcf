"""The `docintel` command. It must start fast: see main.py."""
