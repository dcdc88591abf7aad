# sourced by deploy/run.sh: start NAME ADDRESS CONSOLE ARGS...; $RUN is the run directory
# A self-signed certificate for "localhost" is made here, so c2s requires STARTTLS as in production.
printf 'admin:admin\n' >"$RUN/djabberd-users.txt"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$RUN/djabberd.key" -out "$RUN/djabberd.crt" -days 30 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost >/dev/null 2>&1
start djabberd "127.0.0.1:5222 (xmpp c2s + STARTTLS, user admin/admin)" "127.0.0.1:5280" -c deploy/conf/djabberd.conf \
  --listen 127.0.0.1 --require_tls=yes --tls_cert "$RUN/djabberd.crt" --tls_key "$RUN/djabberd.key" \
  --users_file "$RUN/djabberd-users.txt" --storage "DBI:SQLite:dbname=$RUN/djabberd.sqlite" --admin 127.0.0.1:5280
