#!/bin/sh
# Every machine: IPv6 documentation addresses beside the IPv4 ones vagrant configured
# (office 198.51.100.X -> 2001:db8:1::X, outside 203.0.113.X -> 2001:db8:2::X), at every boot.
set -eu
cat >/usr/local/sbin/fwsync-lab-ipv6 <<'SCRIPT'
#!/bin/sh
# Wait (up to 60 s) for vagrant's IPv4 addresses, then add the matching IPv6 ones.
for _ in $(seq 120); do
    ip -4 -o addr | grep -qE ' (198\.51\.100|203\.0\.113)\.' && break
    sleep 0.5
done
ip -4 -o addr | awk '{print $2, $4}' | while read -r dev cidr; do
    addr=${cidr%/*}
    case $addr in
        198.51.100.*) ip -6 addr replace "2001:db8:1::${addr##*.}/64" dev "$dev" nodad ;;
        203.0.113.*)  ip -6 addr replace "2001:db8:2::${addr##*.}/64" dev "$dev" nodad ;;
    esac
done
SCRIPT
chmod +x /usr/local/sbin/fwsync-lab-ipv6
cat >/etc/systemd/system/fwsync-lab-ipv6.service <<'UNIT'
[Unit]
Description=IPv6 documentation addresses of the fwsync test machines
After=network.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/fwsync-lab-ipv6
RemainAfterExit=yes
[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now fwsync-lab-ipv6.service
echo "provision: $1 $(ip -br addr | grep -E '198\.51\.100|203\.0\.113' | tr -s ' ')"
