"""fwsync: declarative, UFW-style firewall rules for Docker's published ports."""

__version__ = "0.1.0"
