#!/usr/bin/env bash
# Installs the Debian packages the tests talk to (PostgreSQL, libnbd's tools,
# nbdkit, qemu-img, xfsprogs for the reflink image, tmux for the terminal
# test, jq and curl for the docs examples, the openstack and cinder CLIs for the
# Block Storage compatibility test, Cinder itself (python3-cinder: its real
# posix and S3 backup drivers make the backups the Cinder import tests read),
# a single-node Ceph (mon, osd, mgr and the ceph/rbd CLIs) and librbd's
# headers for the rbd driver and its tests), once: packages already installed
# are not touched. Needs root.
set -euo pipefail
need=()
for pkg in postgresql libnbd-bin nbdkit qemu-utils xfsprogs tmux util-linux jq curl python3-openstackclient python3-cinderclient python3-cinder \
  ceph-mon ceph-osd ceph-mgr ceph-common librbd-dev librados-dev uuid-runtime; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  SUDO=
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The package starts a cluster of its own; the tests start throwaway ones.
if command -v pg_lsclusters >/dev/null; then
  pg_lsclusters -h 2>/dev/null | while read -r ver name port status _; do
    [[ $status == online ]] && pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true
  done
fi
exit 0
