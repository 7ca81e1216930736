"""Backends: turn a Ruleset into kernel objects, read them back, apply a Plan atomically."""
