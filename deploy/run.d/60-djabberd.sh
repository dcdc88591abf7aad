# sourced by deploy/run.sh: start NAME ADDRESS CONSOLE ARGS...; $RUN is the run directory
# STARTTLS is not built yet, so the local stack serves plaintext c2s (require_tls off).
printf 'admin:admin\n' >"$RUN/djabberd-users.txt"
start djabberd "127.0.0.1:5222 (xmpp c2s, user admin/admin)" "127.0.0.1:5280" -c deploy/conf/djabberd.conf \
  --listen 127.0.0.1 --require_tls=no --users_file "$RUN/djabberd-users.txt" \
  --storage "DBI:SQLite:dbname=$RUN/djabberd.sqlite" --admin 127.0.0.1:5280
