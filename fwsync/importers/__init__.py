"""Importers: other firewalls' configurations → fwsync rules text. Pure (text in, text out)."""
