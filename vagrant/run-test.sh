#!/bin/bash
# `make vagrant-test`: build what is missing, bring the machines up, run the scenario suite
# (tests/scenarios) on them, print the pass/fail table and the wall time of each phase, destroy
# everything — also on failure or Ctrl-C.
#
# Here (no systemd, no KVM that boots) libvirtd runs inside a network namespace of its own
# (vagrant/libvirt-ns.sh) and the guests run under TCG; with FWSYNC_VM_HOST_LIBVIRT=1 the host's
# running libvirtd (e.g. systemd's) is used instead and vagrant runs directly.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cache=$here/.cache
py=${PY:-$repo/.venv/bin/python}
export VAGRANT_HOME=${VAGRANT_HOME:-$cache/vagrant.d}
export FWSYNC_LOCAL_BOX=${FWSYNC_LOCAL_BOX:-1}
export FWSYNC_VM_DRIVER=${FWSYNC_VM_DRIVER:-qemu}
export VAGRANT_DEFAULT_PROVIDER=${VAGRANT_DEFAULT_PROVIDER:-libvirt}
box_name=fwsync/debian12-local

phases=()
phase_start=0
begin() { phase_start=$(date +%s); echo; echo "=== $1"; current=$1; }
end() { phases+=("$(printf '%-10s %5d s  %s' "$current" $(( $(date +%s) - phase_start )) "$1")"); }

if [ "${FWSYNC_VM_HOST_LIBVIRT:-0}" = 1 ]; then
    in_vm_net() { "$@"; }
    libvirt_up() { :; }
    libvirt_down() { :; }
else
    in_vm_net() { "$here/libvirt-ns.sh" exec "$@"; }
    libvirt_up() { "$here/libvirt-ns.sh" up; }
    libvirt_down() { "$here/libvirt-ns.sh" down; }
fi

torn_down=0
teardown() {
    [ $torn_down = 1 ] && return
    torn_down=1
    begin destroy
    (cd "$here" && in_vm_net vagrant destroy -f >"$cache/destroy.log" 2>&1) \
        || { echo "vagrant destroy failed:"; tail -n 20 "$cache/destroy.log"; }
    libvirt_down
    end "vagrant destroy, libvirtd stopped, namespace deleted"
}
trap 'teardown; exit 130' INT TERM
trap 'teardown' EXIT

t_all=$(date +%s)
mkdir -p "$cache"
suite_rc=1

begin box
built=no
if [ "$FWSYNC_LOCAL_BOX" = 1 ]; then
    if [ ! -f "$cache/fwsync-debian12.box" ] || [ ! -f "$cache/vmlinuz" ] || [ ! -f "$cache/initrd.img" ]; then
        "$here/build-box.sh" "$cache" >"$cache/build-box.log" 2>&1 \
            || { echo "box build failed:"; tail -n 30 "$cache/build-box.log"; exit 1; }
        built=yes
    fi
    # (Re-)add the box when it is new: vagrant's copy and libvirt's copy of its disk both go.
    if [ "$cache/fwsync-debian12.box" -nt "$cache/box-added.stamp" ] \
       || ! vagrant box list 2>/dev/null | grep -q "^$box_name "; then
        rm -f /var/lib/libvirt/images/fwsync-VAGRANTSLASH-debian12-local_vagrant_box_image_*
        vagrant box add --force --name "$box_name" "$cache/fwsync-debian12.box" >"$cache/box-add.log" 2>&1 \
            || { cat "$cache/box-add.log"; exit 1; }
        touch "$cache/box-added.stamp"
    fi
fi
# fwsync and its dependencies as wheels: dockerhost installs them offline.
rm -rf "$cache/wheels"
"$py" -m pip wheel -q --disable-pip-version-check "$repo" -w "$cache/wheels" >"$cache/wheels.log" 2>&1 \
    || { cat "$cache/wheels.log"; exit 1; }
end "box built: $built; wheels of fwsync and its dependencies"

begin up
libvirt_up || exit 1
(cd "$here" && in_vm_net vagrant up) 2>&1 | tee "$cache/up.log" | grep --line-buffered -E '^==> [a-z]+: (Starting|Machine booted|Running provisioner)|provision:|rror' 
up_rc=${PIPESTATUS[0]}
if [ "$up_rc" != 0 ]; then
    echo "vagrant up failed ($up_rc); the last lines of $cache/up.log:"; tail -n 40 "$cache/up.log"
    end "FAILED"
    exit 1
fi
(cd "$here" && in_vm_net vagrant ssh-config) >"$cache/ssh_config" || exit 1
end "machines up and provisioned"

begin suite
(cd "$repo" && in_vm_net "$py" -m tests.scenarios.run_vms "$cache/ssh_config")
suite_rc=$?
end "scenario suite (exit $suite_rc)"

teardown
echo
echo "=== wall time per phase"
printf '%s\n' "${phases[@]}"
echo "total      $(( $(date +%s) - t_all )) s"
exit $suite_rc
