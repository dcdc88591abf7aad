#!/bin/sh
# manpage.sh BINARY NAME SECTION DESCRIPTION OUT
# Writes the man page of one program from its own --help and --version (the
# daemons print their settings table), so the page never drifts from the
# code. Exits 3 without writing anything when the program has no --help.
set -eu
bin=$1 name=$2 section=$3 desc=$4 out=$5
if ! "$bin" --help >/dev/null 2>&1 || ! "$bin" --version >/dev/null 2>&1; then
  echo "manpage.sh: $bin has no --help/--version; no man page" >&2
  exit 3
fi
base=$(basename "$bin")
# the packaged daemons are renamed stack-NAME; their config keeps NAME
conf=${base#stack-}
inc=$(mktemp)
trap 'rm -f "$inc"' EXIT
if [ "$section" = 8 ]; then
  cat >"$inc" <<EOT
[FILES]
.TP
.I ${SYSCONFDIR:-/etc}/stack/$conf.conf
settings as \fBkey = value\fR lines; any long option above may be set there, the command line wins
.TP
.I ${UNITDIR:-/lib/systemd/system}/$name.service
the systemd unit (\fBsystemctl start $name\fR); logs go to the journal
[SIGNALS]
TERM stops gracefully, HUP reloads the configuration and reopens logs, USR1 logs the statistics.
[SEE ALSO]
The README.md in /usr/share/doc/ of its package (in the source tree, the README of $conf).
EOT
else
  printf '[SEE ALSO]\nThe README in /usr/share/doc/ of its package.\n' >"$inc"
fi
tmp=$out.tmp
help2man --no-info --no-discard-stderr --section "$section" --name "$desc" --include "$inc" \
  --output "$tmp" "$bin"
# help2man names the page after the file it ran; the installed name may differ
sed -e "s/^\.TH [^ ]* /.TH $(echo "$name" | tr a-z A-Z) /" \
    -e "/^\.SH NAME/{n;s/^[^ ]* /$name /}" -e "/^\.SH SYNOPSIS/{n;s/^\.B .*/.B $name/}" "$tmp" >"$out"
rm -f "$tmp"
