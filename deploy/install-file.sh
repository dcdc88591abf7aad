#!/usr/bin/env bash
# install-file.sh MODE SRC DEST: `make install`'s one way to put a file in
# place. DEST is the path on the target system; $DESTDIR (if set) is
# prepended. A file already there is replaced only if an earlier
# `make install` put it there (it is listed in the manifest); anything else
# -- Debian's /usr/bin/memcached, a unit from a package, a file an admin put
# there -- is left alone and the install fails saying whose it is, unless
# FORCE=1. Every file installed is added to the manifest
# ($PREFIX/share/stack/installed-files, PREFIX from the environment).
set -euo pipefail
mode=$1 src=$2 dest=$3
root=${DESTDIR:-}
manifest="$root${PREFIX:?PREFIX must be set}/share/stack/installed-files"
target="$root$dest"
if [ -e "$target" ] || [ -L "$target" ]; then
  if ! { [ -f "$manifest" ] && grep -qxF -- "$dest" "$manifest"; } && [ "${FORCE:-0}" != 1 ]; then
    owner=""
    if [ -z "$root" ] && command -v dpkg-query >/dev/null; then
      owner=$(dpkg-query -S -- "$dest" 2>/dev/null | head -1 | cut -d: -f1 || true)
    fi
    if [ -n "$owner" ]; then
      echo "install: $target belongs to the Debian package '$owner'; not replacing it (another PREFIX, or FORCE=1)" >&2
    else
      echo "install: $target exists and was not installed by this tree; not replacing it (FORCE=1 replaces it)" >&2
    fi
    exit 1
  fi
fi
if [ -L "$src" ]; then
  # a library's .so.1/.so link: recreate the link, don't copy what it points to
  mkdir -p "$(dirname "$target")"
  ln -sfn -- "$(readlink "$src")" "$target"
else
  install -D -m "$mode" -- "$src" "$target"
fi
mkdir -p "$(dirname "$manifest")"
touch "$manifest"
grep -qxF -- "$dest" "$manifest" || echo "$dest" >>"$manifest"
