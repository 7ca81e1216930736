# fwsync — one obvious way to run things. Everything here runs as root (namespaces, dockerd).
VENV     := .venv
PY       := $(VENV)/bin/python
# Debian's interpreter: its dist-packages hold python3-nftables, which a venv made from it sees.
SYSPY    := /usr/bin/python3
APT_PKGS := nftables iptables ipset iproute2 conntrack ufw busybox-static docker.io \
            python3 python3-venv python3-nftables pipx git
STAMP    := $(VENV)/.installed

.PHONY: install engines promtool fail2ban test test-unit demo lint bench clean

install: $(STAMP)

# The Docker engines the e2e and scenario layers run besides the machine's 20.10 (26.1, 28.5),
# unpacked from Debian's archive into /var/cache/fwsync-engines; a no-op once they are there.
engines:
	$(SYSPY) tools/fetch-engines

# promtool, which checks monitoring/fwsync-alerts.yml, taken out of Debian's prometheus package
# into /var/cache/fwsync-promtool (the package itself would start a Prometheus server); a
# no-op once it is there.
promtool:
	$(SYSPY) tools/fetch-promtool

# fail2ban-regex, which checks monitoring/fail2ban/filter.d/fwsync.conf, taken out of Debian's
# fail2ban package into /var/cache/fwsync-fail2ban (the package itself would start a fail2ban
# server, which writes iptables rules); a no-op once it is there.
fail2ban:
	$(SYSPY) tools/fetch-fail2ban

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

# The e2e and scenario layers run once per Docker engine (ENGINES: all, or e.g. 28.5 or
# 20.10,28.5); the unit, kernel and packaging layers once. Two pytest-xdist workers: each
# engine's tests stay on one worker, in order (tests/conftest.py groups them), so at most two
# dockerds run at a time; the other layers fill the gaps.
ENGINES ?= all
TEST_WORKERS ?= 2
test: install engines promtool fail2ban
	$(PY) -m pytest tests --engine $(ENGINES) -n $(TEST_WORKERS) --dist loadgroup --durations=25

test-unit: install
	$(PY) -m pytest tests -m unit

demo: install
	$(PY) demo/demo.py

lint: install
	$(VENV)/bin/ruff check fwsync tests demo bench tools/fetch-engines tools/fetch-promtool \
	    tools/fetch-fail2ban
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

.PHONY: bench-daemon bench-log-flood
bench-daemon: install
	$(PY) bench/bench_daemon.py

bench-log-flood: install
	$(PY) bench/bench_log_flood.py

# The scenario suite on three Vagrant machines (vagrant/README.md). Its own packages: `make
# install` and `make test` don't need them. Here: a box built offline with debootstrap, libvirtd
# in a network namespace of its own, guests under TCG.
VAGRANT_APT_PKGS := vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86 \
                    qemu-utils debootstrap dnsmasq-base rsync e2fsprogs openssh-client

.PHONY: vagrant-install vagrant-test
vagrant-install: install
	@missing=$$(for p in $(VAGRANT_APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "apt-get install $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        --no-install-recommends $$missing >/dev/null; \
	fi

vagrant-test: vagrant-install
	PY=$(abspath $(PY)) vagrant/run-test.sh
