#!/bin/sh
# dockerhost, dockerhost2: ufw as a distribution enables it, dockerd as a service, fwsync from the repo
# (/opt/fwsync-src, wheels in /opt/fwsync-wheels) with its systemd unit and the repo's rules/.
# fwsync's unit is installed but not enabled: the suite's first scenario shows the gotcha
# before it starts fwsync.
set -eu
need="docker.io apparmor ufw nftables iptables ipset python3-venv python3-nftables busybox-static"
missing=$(for p in $need; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"
done)
if [ -n "$missing" ]; then  # public boxes; the local box has them all
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# Docker's networks in documentation ranges, IPv6 published through ip6tables (as tests/lab.py).
# Local networks (docker_gwbridge among them) take /28s of 203.0.113.128/26; a swarm's overlay
# networks get 203.0.113.192/26 (`docker swarm init --default-addr-pool`, tests/scenarios).
mkdir -p /etc/docker
cat >/etc/docker/daemon.json <<'JSON'
{"bip": "198.51.100.129/25",
 "default-address-pools": [{"base": "203.0.113.128/26", "size": 28}],
 "ipv6": true, "fixed-cidr-v6": "2001:db8:d0c::/64", "experimental": true, "ip6tables": true}
JSON

ufw default deny incoming
ufw allow 22/tcp
ufw --force enable

python3 -m venv --system-site-packages /opt/fwsync
if ls /opt/fwsync-wheels/fwsync-*.whl >/dev/null 2>&1; then
    # Offline first (the wheels built on the host); a box with network may fetch what is missing.
    /opt/fwsync/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps \
        --no-index --find-links /opt/fwsync-wheels fwsync
    /opt/fwsync/bin/pip install -q --disable-pip-version-check --no-index \
        --find-links /opt/fwsync-wheels fwsync \
      || /opt/fwsync/bin/pip install -q --disable-pip-version-check --find-links /opt/fwsync-wheels fwsync
else
    # No wheels were built (`vagrant up` by hand on a fresh clone): from the source, with PyPI.
    /opt/fwsync/bin/pip install -q --disable-pip-version-check /opt/fwsync-src
fi
ln -sf /opt/fwsync/bin/fwsync /usr/local/bin/fwsync
rm -rf /etc/fwsync/rules
mkdir -p /etc/fwsync
cp -r /opt/fwsync-src/rules /etc/fwsync/rules
install -m 644 /opt/fwsync-src/systemd/fwsync.service /etc/systemd/system/fwsync.service
install -m 644 /opt/fwsync-src/systemd/fwsync.env /etc/default/fwsync
mkdir -p /usr/share/doc/fwsync && cp /opt/fwsync-src/docs/daemon.md /usr/share/doc/fwsync/
systemctl daemon-reload
fwsync check /etc/fwsync/rules

systemctl enable docker.service containerd.service
systemctl restart docker.service
# No registry: the test image is static busybox (as tests/lab.py builds it).
if ! docker image inspect fwsync-test/busybox:1 >/dev/null 2>&1; then
    img=$(mktemp -d)
    mkdir -p "$img/bin" "$img/tmp" "$img/etc" "$img/proc" "$img/sys" "$img/dev"
    cp /bin/busybox "$img/bin/"
    for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$img/bin/$a"; done
    tar -C "$img" -c . | docker import - fwsync-test/busybox:1 >/dev/null
    rm -rf "$img"
fi
echo "provision: dockerhost: $(docker version --format 'docker {{.Server.Version}}'), fwsync $(/opt/fwsync/bin/pip show fwsync | sed -n "s/^Version: //p"), ufw $(ufw status | head -n1)"
