"""Adapters that observe the world: Docker (SDK) and the host. They return plain data."""
