#!/bin/sh
# A libvirtd of our own inside a network namespace, so the bridges, dnsmasq and NAT rules that
# libvirt's networks bring live there and never in the machine's own firewall. For machines
# without systemd (containers, CI); on a normal host `systemctl start libvirtd` is enough and this
# script is not needed.
#
#   libvirt-ns.sh up         create namespace NS, start virtlogd + libvirtd in it
#   libvirt-ns.sh exec CMD   run CMD inside NS (vagrant must run there: ssh to the VMs)
#   libvirt-ns.sh down       destroy leftover domains/networks, stop both daemons by pid, delete NS
set -eu
ns=${FWSYNC_VM_NETNS:-fwsync-vm}
pidfiles=/run  # libvirtd and virtlogd run as root write /run/NAME.pid

in_ns() { ip netns exec "$ns" "$@"; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
    if pid_alive $pidfiles/libvirtd.pid; then
        if ip netns pids "$ns" 2>/dev/null | grep -qx "$(cat $pidfiles/libvirtd.pid)"; then
            echo "libvirt-ns: libvirtd already runs in $ns"
            return 0
        fi
        echo "libvirt-ns: a libvirtd outside namespace $ns already runs (pid $(cat $pidfiles/libvirtd.pid)); stop it first" >&2
        exit 1
    fi
    ip netns list | grep -qw "^$ns" || ip netns add "$ns"
    in_ns ip link set lo up
    # The VMs' NAT network needs forwarding inside the namespace only.
    in_ns sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
    # `ip netns exec` mounts a sysfs of the namespace: libvirt reads its bridges from there.
    in_ns virtlogd -d
    in_ns libvirtd -d
    i=0
    until virsh -c qemu:///system version >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -lt 100 ] || { echo "libvirt-ns: libvirtd did not answer in 20 s" >&2; exit 1; }
        sleep 0.2
    done
    echo "libvirt-ns: libvirtd $(cat $pidfiles/libvirtd.pid) in namespace $ns"
}

down() {
    if pid_alive $pidfiles/libvirtd.pid; then
        for d in $(virsh -c qemu:///system list --all --name 2>/dev/null); do
            case $d in fwsync-*|vagrant_*) virsh -c qemu:///system destroy "$d" >/dev/null 2>&1 || true
                                           virsh -c qemu:///system undefine "$d" --remove-all-storage >/dev/null 2>&1 || true ;; esac
        done
        for n in $(virsh -c qemu:///system net-list --name 2>/dev/null); do
            virsh -c qemu:///system net-destroy "$n" >/dev/null 2>&1 || true
        done
        stop_pid $pidfiles/libvirtd.pid
    fi
    stop_pid $pidfiles/virtlogd.pid
    # Anything still in the namespace (dnsmasq, a qemu that outlived libvirtd) is ours.
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    sleep 1
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    if ip netns list | grep -qw "^$ns"; then ip netns del "$ns"; fi
    echo "libvirt-ns: down"
}

stop_pid() {
    pid_alive "$1" || return 0
    p=$(cat "$1"); kill "$p"
    i=0; while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
    kill -9 "$p" 2>/dev/null || true
}

case ${1:-} in
    up) up ;;
    down) down ;;
    exec) shift; in_ns "$@" ;;
    *) echo "usage: $0 up|down|exec CMD..." >&2; exit 2 ;;
esac
