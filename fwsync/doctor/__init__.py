"""`fwsync doctor`: the Docker-host gotchas that bite people, as findings with what to do.

facts.py holds what was observed (plain data), checks.py the pure checks over it, report.py the
text and JSON forms; gathering the facts is an adapter (fwsync/observe/host_facts.py).
"""
