"""The rules language: syntax → typed dataclasses (pure), and loading from disk (the only I/O)."""
