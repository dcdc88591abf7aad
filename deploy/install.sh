#!/usr/bin/env bash
# The last step of `make install`: copy the staged tree STAGE into DESTDIR.
#   install.sh STAGE DESTDIR PREFIX SYSCONFDIR
# - A file that already exists is replaced only if an earlier `make install`
#   into this PREFIX wrote it (listed in PREFIX/share/stack/installed-files);
#   anything else (Debian's /usr/bin/memcached, another package's unit) stops
#   the install before a single file is copied, naming each file and, when
#   dpkg knows it, the package that owns it.
# - Configs under SYSCONFDIR are installed only where none exists yet, so an
#   admin's edits survive every later install.
set -euo pipefail
stage=$1 destdir=$2 prefix=$3 sysconfdir=$4
manifest_rel=$prefix/share/stack/installed-files
manifest=$destdir$manifest_rel

mapfile -t files < <(cd "$stage" && find . ! -type d | sed 's|^\.||' | LC_ALL=C sort)
declare -A ours=()
if [ -f "$manifest" ]; then
  while IFS= read -r f; do ours[$f]=1; done <"$manifest"
fi

is_conf() { case $1 in "$sysconfdir"/*) return 0 ;; *) return 1 ;; esac; }

conflicts=()
for f in "${files[@]}"; do
  is_conf "$f" && continue
  t=$destdir$f
  if { [ -e "$t" ] || [ -L "$t" ]; } && [ -z "${ours[$f]:-}" ]; then
    owner=""
    [ -z "$destdir" ] && owner=$(dpkg -S "$f" 2>/dev/null | cut -d: -f1 | head -n1 || true)
    conflicts+=("$t${owner:+ (from package $owner)}")
  fi
done
if [ ${#conflicts[@]} -gt 0 ]; then
  echo "make install: refusing to overwrite files no earlier 'make install' into $prefix wrote:" >&2
  printf '  %s\n' "${conflicts[@]}" >&2
  echo "Install into another PREFIX (the default is /usr/local), use the .debs (stack-* packages), or move these files away." >&2
  exit 1
fi

for f in "${files[@]}"; do
  s=$stage$f t=$destdir$f
  if is_conf "$f" && { [ -e "$t" ] || [ -L "$t" ]; }; then
    echo "keeping existing $t"
    continue
  fi
  install -d "$(dirname "$t")"
  if [ -L "$s" ]; then
    ln -sfn "$(readlink "$s")" "$t"
  else
    install -m "$(stat -c %a "$s")" "$s" "$t"
  fi
  ours[$f]=1
done

install -d "$(dirname "$manifest")"
printf '%s\n' "${!ours[@]}" | LC_ALL=C sort >"$manifest.tmp"
mv "$manifest.tmp" "$manifest"
