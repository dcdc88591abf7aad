# sourced by deploy/run.sh: userdbd in front of a private MariaDB in $RUN (one
# mariadbd holding the global database and the databases of clusters 1 and 2),
# started only when MariaDB is installed.
if [ -x "$BIN/userdbd" ] && command -v mariadbd >/dev/null 2>&1 && command -v mariadb-install-db >/dev/null 2>&1; then
  ud_db=$RUN/userdb-mariadb
  ud_as=""; [ "$(id -u)" = 0 ] && ud_as=--user=root
  # its own tmpdir: a starting mariadbd deletes every #sql* file in its tmpdir,
  # other servers' live temporary tables too
  mkdir -p "$ud_db/tmp"
  mariadb-install-db --no-defaults --datadir="$ud_db/data" --tmpdir="$ud_db/tmp" \
    --auth-root-authentication-method=normal --skip-test-db $ud_as >"$ud_db/install.log" 2>&1
  mariadbd --no-defaults --datadir="$ud_db/data" --tmpdir="$ud_db/tmp" --socket="$ud_db/sock" --skip-networking \
    --pid-file="$ud_db/pid" --innodb-buffer-pool-size=32M $ud_as >"$ud_db/mariadb.log" 2>&1 &
  pids+=($!); names+=(mariadbd-userdb)
  for _ in $(seq 200); do [ -S "$ud_db/sock" ] && break; sleep 0.1; done
  mariadb --no-defaults -uroot --socket="$ud_db/sock" \
    -e "CREATE DATABASE IF NOT EXISTS userdb_global; CREATE DATABASE IF NOT EXISTS userdb_c1; CREATE DATABASE IF NOT EXISTS userdb_c2"
  cat >"$RUN/userdbd.conf" <<CONF
listen = 127.0.0.1:7010
console = 127.0.0.1:7011
client_user = userdb
client_password = userdb
backend_user = root
global = DBI:mysql:database=userdb_global;mysql_socket=$ud_db/sock
cluster.1.master = DBI:mysql:database=userdb_c1;mysql_socket=$ud_db/sock
cluster.2.master = DBI:mysql:database=userdb_c2;mysql_socket=$ud_db/sock
default_clusters = 1,2
CONF
  start userdbd "127.0.0.1:7010 (MySQL, user userdb/userdb)" "127.0.0.1:7011" -c "$RUN/userdbd.conf"
fi
