#!/usr/bin/env bash
# Installs, idempotently, every Debian package the build, the tests and the
# benchmarks need. Fast no-op when everything is present. Run as root (or via
# sudo); when not root and something is missing, says what and fails.
set -euo pipefail

PKGS=(
  # build
  build-essential pkg-config clang libclang-rt-14-dev llvm
  libevent-dev libssl-dev zlib1g-dev libsqlite3-dev libmariadb-dev libsystemd-dev
  # test drivers
  python3 python3-pytest curl iproute2 procps netcat-openbsd
  # memcached peers and clients
  memcached libmemcached-tools libmemcached-dev python3-pymemcache libcache-memcached-perl
  # gearman peers and clients
  gearman-job-server gearman-tools libgearman-dev libgearman-client-perl
  # perlbal peers and clients
  perlbal haproxy nginx-light wrk
  # databases used by test fixtures
  mariadb-server mariadb-client sqlite3
)

missing=()
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${PKGS[@]}" 2>/dev/null | awk '$4=="installed"{print $1}' || true)
for p in "${PKGS[@]}"; do
  grep -qx "$p" <<<"$installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then exec sudo "$0" "$@"; fi
  echo "deps.sh: need root to install: ${missing[*]}" >&2
  exit 1
fi

# Don't let package scripts start system copies of memcached, nginx, mariadb...
# on their well-known ports: the tests start their own on free ports.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; own_policy=1
fi
trap '[ $own_policy -eq 1 ] && rm -f "$policy"' EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
