# fwsync — one obvious way to run things. Everything here runs as root (namespaces, dockerd).
VENV     := .venv
PY       := $(VENV)/bin/python
# Debian's interpreter: its dist-packages hold python3-nftables, which a venv made from it sees.
SYSPY    := /usr/bin/python3
APT_PKGS := nftables iptables ipset iproute2 conntrack ufw busybox-static docker.io \
            python3 python3-venv python3-nftables
STAMP    := $(VENV)/.installed

.PHONY: install test test-unit demo lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "apt-get install $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(SYSPY) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest tests

test-unit: install
	$(PY) -m pytest tests -m unit

demo: install
	$(PY) demo/demo.py

lint: install
	$(VENV)/bin/ruff check fwsync tests demo bench
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

.PHONY: bench-daemon
bench-daemon: install
	$(PY) bench/bench_daemon.py
