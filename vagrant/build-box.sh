#!/bin/sh
# Build a small Debian 12 box for vagrant-libvirt from Debian's packages alone (no box catalogue,
# no libguestfs, no loop device): debootstrap into a directory, `mkfs.ext4 -d` that directory into
# a whole-disk filesystem, convert to qcow2. The box boots by direct kernel boot: the kernel and
# initrd are kept beside the box and handed to libvirt by the Vagrantfile (FWSYNC_LOCAL_BOX=1).
#
# Usage: vagrant/build-box.sh CACHE_DIR      (root; writes CACHE_DIR/fwsync-debian12.box,
#                                             CACHE_DIR/vmlinuz, CACHE_DIR/initrd.img)
set -eu
cache=$(realpath -m "$1")
mirror=${FWSYNC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$cache/rootfs
keydir=$(dirname "$(find /usr/share/rubygems-integration /usr/lib/ruby /opt/vagrant \
    -path '*vagrant*/keys/vagrant.pub' 2>/dev/null | head -n1)")
[ -f "$keydir/vagrant.pub" ] || { echo "build-box: vagrant's insecure key not found; install vagrant" >&2; exit 1; }

# Everything the scenarios need on every machine; docker is enabled only on dockerhost.
pkgs="systemd-sysv udev dbus linux-image-amd64 initramfs-tools openssh-server sudo iproute2
      rsync ca-certificates procps less kmod
      docker.io apparmor ufw nftables iptables ipset python3 python3-venv python3-nftables busybox-static"

mkdir -p "$cache"
rm -rf "$root"
t0=$(date +%s)
debootstrap --variant=minbase bookworm "$root" "$mirror"
echo "build-box: debootstrap $(( $(date +%s) - t0 )) s"

cleanup() {
    for m in dev/pts dev proc sys; do umount "$root/$m" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
# No service may start inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"

cat >"$root/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $mirror bookworm-updates main
SRC
chroot "$root" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends $(echo $pkgs) >/dev/null"
echo "build-box: packages $(( $(date +%s) - t0 )) s"

chroot "$root" sh -eu <<'IN'
echo vagrant-box >/etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 vagrant-box\n' >/etc/hosts
echo '/dev/vda / ext4 defaults,errors=remount-ro 0 1' >/etc/fstab
useradd -m -s /bin/bash -G sudo vagrant
echo 'vagrant:vagrant' | chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/vagrant
chmod 440 /etc/sudoers.d/vagrant
install -d -m 700 -o vagrant -g vagrant /home/vagrant/.ssh
# The first NIC is vagrant's management network (DHCP); vagrant configures the others.
mkdir -p /etc/systemd/network
# ClientIdentifier=mac: every machine from this box must get its own lease.
printf '[Match]\nName=eth0\n[Network]\nDHCP=ipv4\n[DHCPv4]\nClientIdentifier=mac\n' \
    >/etc/systemd/network/10-mgmt.network
systemctl enable systemd-networkd ssh
# Only dockerhost runs dockerd (its provisioning enables it); the others stay small.
systemctl disable docker.service docker.socket containerd.service 2>/dev/null || true
# sshd: no DNS lookups of the client (no resolver in the VM network), quick logins.
echo 'UseDNS no' >/etc/ssh/sshd_config.d/vagrant.conf
systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer 2>/dev/null || true
apt-get clean
rm -f /usr/sbin/policy-rc.d
# Each machine makes its own machine-id at first boot (networkd's DHCP DUID derives from it).
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id
# ...without systemd-firstboot asking for a locale on the console.
systemctl mask systemd-firstboot.service
IN
install -m 600 "$keydir/vagrant.pub" "$root/home/vagrant/.ssh/authorized_keys"
chroot "$root" chown -R vagrant:vagrant /home/vagrant/.ssh
cleanup
trap - EXIT INT TERM

cp "$root"/boot/vmlinuz-* "$cache/vmlinuz"
cp "$root"/boot/initrd.img-* "$cache/initrd.img"
chmod 644 "$cache/vmlinuz" "$cache/initrd.img"

size_gb=8
rm -f "$cache/root.raw"
truncate -s ${size_gb}G "$cache/root.raw"
mkfs.ext4 -q -L root -d "$root" "$cache/root.raw"
boxdir=$cache/box
rm -rf "$boxdir" && mkdir -p "$boxdir"
# Compressed: vagrant-libvirt streams the image into libvirt once per new box, ~3x faster.
qemu-img convert -c -O qcow2 "$cache/root.raw" "$boxdir/box.img"
rm -f "$cache/root.raw"
printf '{"provider":"libvirt","format":"qcow2","virtual_size":%s}\n' $size_gb >"$boxdir/metadata.json"
cat >"$boxdir/Vagrantfile" <<'VF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "qemu"
  end
end
VF
tar -C "$boxdir" -czf "$cache/fwsync-debian12.box.tmp" metadata.json Vagrantfile box.img
mv "$cache/fwsync-debian12.box.tmp" "$cache/fwsync-debian12.box"
rm -rf "$boxdir" "$root"
echo "build-box: done in $(( $(date +%s) - t0 )) s: $cache/fwsync-debian12.box"
