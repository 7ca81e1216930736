"""The rules language: syntax → pydantic models (pure), and loading from disk (the only I/O)."""
