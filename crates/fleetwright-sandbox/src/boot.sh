# fleetwright sandbox boot script (written beside the console log by fleetwright-sandbox)
set -eu
stage=$1; shift
if [ "$stage" = stage1 ]; then
  # Still in the host's cgroup namespace: move into the sandbox's own cgroup, then give the
  # manager a cgroup namespace rooted there, so it can neither touch nor share host cgroups.
  echo 0 > "$1/cgroup.procs"
  exec unshare --cgroup -- bash "$0" stage2 "$@"
fi
cg=$1; log=$2; user=$3; dbus=$4; shift 4

# Host paths first (the log usually lives under the host's /tmp).
mount --bind "$log" /dev/kmsg            # the manager logs here until journald runs
mount --bind /dev/null /dev/console      # never write to the host's console
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys       # no global sysctl changes from inside

# THE HAZARD (shared/real-systemd.md): private tmpfs wherever the manager, tmpfiles or
# fleetwright would write, before the manager starts.
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
# The "disk" of the sandbox: a private tmpfs each, or with FW_SANDBOX_PERSIST (a host directory,
# never under /tmp) a directory of it, so that a second sandbox booted on it finds what the
# first left there: what a reboot keeps.
disk() {
  mkdir -p "$1"
  if [ -n "${FW_SANDBOX_PERSIST:-}" ]; then
    kept="$FW_SANDBOX_PERSIST/$(printf %s "$1" | tr / _)"
    mkdir -p "$kept" && chmod 755 "$kept" && mount --bind "$kept" "$1"
  else
    mount -t tmpfs -o mode=755 tmpfs "$1"
  fi
}
disk /etc/systemd/system
disk /var/lib/systemd
mkdir -p /var/log/journal && mount -t tmpfs -o mode=755 tmpfs /var/log/journal
disk /var/lib/fleetwright
mkdir -p /etc/systemd/user && mount -t tmpfs -o mode=755 tmpfs /etc/systemd/user
mkdir -p /root/.config/systemd && mount -t tmpfs -o mode=755 tmpfs /root/.config/systemd
mkdir -p /etc/systemd/journald.conf.d && mount -t tmpfs -o mode=755 tmpfs /etc/systemd/journald.conf.d
for d in "$@"; do
  mkdir -p "$d" && mount -t tmpfs -o mode=755 tmpfs "$d"
done

# Users that exist only in here: private copies of passwd and group.
if [ -n "${FW_SANDBOX_USERS:-}" ]; then
  cp /etc/passwd /run/fw-passwd && cp /etc/group /run/fw-group
  for u in $FW_SANDBOX_USERS; do
    name=${u%%:*}; id=${u#*:}
    echo "$name:x:$id:$id::/run/fw-users/$name:/bin/sh" >> /run/fw-passwd
    echo "$name:x:$id:" >> /run/fw-group
    mkdir -p "/run/fw-users/$name" && chown "$id:$id" "/run/fw-users/$name"
  done
  mount --bind /run/fw-passwd /etc/passwd
  mount --bind /run/fw-group /etc/group
fi

# Our own cgroup2 hierarchy, rooted at the sandbox's cgroup (cgroup namespace).
mount -t cgroup2 cgroup2 /sys/fs/cgroup

# Nothing is pulled in implicitly: hide the vendor *.wants/*.requires (sysinit.target.wants
# has systemd-tmpfiles-setup, getty.target.wants a getty on a real tty, ...) and the
# generators (fstab -> swapon and remount of / are global; debug reads the host's cmdline).
mkdir -p /run/fw-empty /run/systemd/system
for base in /lib/systemd/system /usr/lib/systemd/system /usr/local/lib/systemd/system \
            /lib/systemd/user /usr/lib/systemd/user; do
  for w in "$base"/*.wants "$base"/*.requires; do
    if [ -d "$w" ]; then mount --bind /run/fw-empty "$w"; fi
  done
done
for g in /lib/systemd/system-generators /usr/lib/systemd/system-generators \
         /usr/local/lib/systemd/system-generators /etc/systemd/system-generators \
         /lib/systemd/user-generators /usr/lib/systemd/user-generators \
         /usr/local/lib/systemd/user-generators /etc/systemd/user-generators; do
  if [ -d "$g" ]; then mount --bind /run/fw-empty "$g"; fi
done

wants="systemd-journald.socket systemd-journald.service"
if [ "$dbus" = 1 ]; then wants="$wants dbus.socket dbus.service"; fi
if [ "$user" = 1 ]; then wants="$wants fw-user-manager.service"; fi
cat > /run/systemd/system/fw-sandbox.target <<T
[Unit]
Description=fleetwright sandbox
DefaultDependencies=no
Wants=$wants
T

if [ "$user" = 1 ]; then
  mkdir -p /run/fw-home/.config/systemd/user
  cat > /run/systemd/system/fw-user-manager.service <<T
[Unit]
Description=fleetwright sandbox: user manager for root
DefaultDependencies=no
After=systemd-journald.socket

[Service]
Type=notify
Environment=XDG_RUNTIME_DIR=/run/user/0 HOME=/run/fw-home XDG_CONFIG_HOME=/run/fw-home/.config USER=root LOGNAME=root SHELL=/bin/sh
ExecStartPre=/bin/mkdir -p -m 0700 /run/user/0
ExecStart=/lib/systemd/systemd --user --unit=fw-user.target
Delegate=yes
KillMode=mixed
TimeoutStartSec=30
T
  userwants=""
  if [ "$dbus" = 1 ]; then userwants="dbus.socket"; fi
  cat > /etc/systemd/user/fw-user.target <<T
[Unit]
Description=fleetwright sandbox user target
DefaultDependencies=no
Wants=$userwants
T
fi

# Watchdog: stdin is a pipe whose write end only the process owning the Sandbox holds. When
# that closes (owner died), power the sandbox off. Killing PID 1 from the host kills this too.
exec 3<&0
( exec 0<&3 3<&-; cat > /dev/null; kill -s RTMIN+14 1 ) &
exec 3<&- 0</dev/null

# /run shared, now that every bind mount from it is made (a bind of a shared mount would join
# its peer group): a peer group of its own, inside the sandbox only. The manager sets up each
# service's credentials in a child mount namespace and moves them into /run/credentials/UNIT,
# which only propagation brings back into its own namespace (on a booted machine, `/` is
# rshared; a manager in a container does not make it so).
mount --make-shared /run

exec env -i container=fleetwright PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --system --unit=fw-sandbox.target --log-target=journal-or-kmsg --show-status=no
