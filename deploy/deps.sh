#!/usr/bin/env bash
# Installs, idempotently, the Debian packages the project needs, from the
# lists in deploy/deps/: <component>.build (needed to build) and
# <component>.test (test drivers, real peers, fixtures, benchmarks).
#   deps.sh build   only what the build needs (make, make run)
#   deps.sh test    build + test lists (make test, asan, fuzz, bench)
# A fast no-op when everything is present. Run as root (or via sudo); when not
# root and something is missing, says what and fails.
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-test}
lists=(deps/*.build)
[ "$mode" = build ] || lists+=(deps/*.test)

mapfile -t PKGS < <(sed -e 's/#.*//' "${lists[@]}" | tr -s ' \t' '\n\n' | sed '/^$/d' | sort -u)

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
