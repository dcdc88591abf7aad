"""The same client scripts directly against MariaDB and through userdbd,
compared byte for byte (the router must be invisible to clients)."""
import struct
import subprocess

import pymysql
import pytest

SCRIPT = r"""
CREATE TABLE types (id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, i BIGINT, d DECIMAL(10,3), f DOUBLE,
  s VARCHAR(20), t TEXT, b BLOB, dt DATETIME, da DATE, e ENUM('x','y'), j JSON, n INT NULL);
INSERT INTO types (i, d, f, s, t, b, dt, da, e, j, n) VALUES
  (-9223372036854775808, 1234567.891, 1.5e300, 'héllo', REPEAT('t', 300), UNHEX('00FF10'), '2026-12-05 19:00:00',
   '1999-01-01', 'y', '{"a": [1, 2]}', NULL),
  (42, -0.001, -0.0, '', '', '', '1000-01-01 00:00:00', '9999-12-31', 'x', 'null', 7);
SELECT * FROM types ORDER BY id;
SELECT id, LENGTH(t), HEX(b) FROM types WHERE id = 1;
SELECT COUNT(*), SUM(i), MAX(s) FROM types;
SHOW COLUMNS FROM types;
DESCRIBE types;
EXPLAIN SELECT * FROM types WHERE id = 1;
SELECT * FROM types WHERE id = 999;
BEGIN;
UPDATE types SET n = n + 1 WHERE id = 2;
SELECT n FROM types WHERE id = 2;
ROLLBACK;
SELECT n FROM types WHERE id = 2;
SELECT 1 + 1 AS two, NULL AS nothing, 'x' AS ex, CAST(3.5 AS DECIMAL(4,2)) AS dec_;
SELECT * FROM no_such_table;
"""


def run_cli(port, db, user, password, extra=()):
    cmd = ["mariadb", "--no-defaults", "--comments", "-h127.0.0.1", "-P%d" % port, "-u" + user, "--force",
           "--table"] + (["-p" + password] if password else []) + list(extra) + [db]
    return subprocess.run(cmd, input=SCRIPT.encode(), capture_output=True)


def test_mariadb_cli_output_is_identical_direct_and_through_the_router(userdbd, ud_servers):
    r = userdbd()
    # Through the router: no hint, so the global database.
    via = run_cli(r.port, "ignored", "app", "secret")
    # Directly: the same script on a fresh database of the same server.
    direct_db = r.g_db + "_direct"
    ud_servers.g.sql("CREATE DATABASE %s" % direct_db)
    direct = run_cli(ud_servers.g.port, direct_db, "root", "")
    assert via.stdout == direct.stdout
    assert via.stderr.replace(r.g_db.encode(), b"DB") == direct.stderr.replace(direct_db.encode(), b"DB")
    assert b"ERROR 1146" in via.stderr
    assert b"h\xc3\xa9llo" in via.stdout
    assert via.returncode == direct.returncode


def _pymysql_view(conn):
    cur = conn.cursor()
    out = []
    for q in ("SELECT * FROM types ORDER BY id", "SELECT 1.5, 'a', NULL, NOW() - NOW()",
              "SHOW COLUMNS FROM types", "SELECT id, j FROM types WHERE id = 2"):
        cur.execute(q)
        out.append((q, cur.description, cur.fetchall(), cur.rowcount))
    cur.execute("INSERT INTO types (i) VALUES (5)")
    out.append(("insert", cur.rowcount, cur.lastrowid))
    cur.execute("UPDATE types SET i = i + 1")
    out.append(("update", cur.rowcount))
    return out


def test_pymysql_sees_the_same_types_and_metadata(userdbd, ud_servers):
    r = userdbd()
    direct_db = r.g_db + "_direct"
    ud_servers.g.sql("CREATE DATABASE %s" % direct_db)
    run_cli(r.port, "ignored", "app", "secret")
    run_cli(ud_servers.g.port, direct_db, "root", "")
    via = _pymysql_view(r.connect())
    direct = _pymysql_view(pymysql.connect(host="127.0.0.1", port=ud_servers.g.port, user="root", password="",
                                           database=direct_db, autocommit=True))
    assert via == direct


def _change_user(conn, user, password, db=""):
    """Send COM_CHANGE_USER through PyMySQL's own packet layer (it has no
    public call for it): user, the native-password reply to this
    connection's handshake scramble, database, charset, plugin, connect attributes."""
    from pymysql._auth import scramble_native_password
    from pymysql.constants import COMMAND
    auth = scramble_native_password(password.encode(), conn.salt) if password else b""
    body = (user.encode() + b"\0" + bytes([len(auth)]) + auth + db.encode() + b"\0" +
            struct.pack("<H", 45) + b"mysql_native_password\0" + b"\0")   # no connect attributes
    conn._execute_command(COMMAND.COM_CHANGE_USER, body)
    reply = conn._read_packet()
    if reply._data[:1] == b"\xfe":   # auth switch (MariaDB sends a fresh scramble): answer it as libmariadb does
        plugin, _, salt = reply._data[1:].partition(b"\0")
        assert plugin == b"mysql_native_password"
        conn.write_packet(scramble_native_password(password.encode(), salt.rstrip(b"\0")) if password else b"")
        reply = conn._read_packet()
    return reply


def test_change_user_resets_the_session_like_the_server_does(userdbd, ud_servers):
    r = userdbd()
    # the packet is right: the real server accepts it
    ud_servers.g.sql("CREATE USER IF NOT EXISTS 'udchg'@'127.0.0.1' IDENTIFIED BY 'pw'")
    direct = pymysql.connect(host="127.0.0.1", port=ud_servers.g.port, user="udchg", password="pw", autocommit=True)
    reply = _change_user(direct, "udchg", "pw")
    assert reply.is_ok_packet(), reply._data[:80]
    direct.close()
    c = r.connect(autocommit=False)
    cur = c.cursor()
    cur.execute("SELECT COUNT(*) FROM user")            # opens a transaction: pins a backend connection
    cur.execute("SET @x = 5")                            # session state: pins too
    assert _change_user(c, "app", "secret").is_ok_packet()
    cur = c.cursor()
    cur.execute("SELECT @x, @@autocommit")               # a fresh session: state gone, autocommit back on
    assert cur.fetchone() == (None, 1)
    cur.execute("SELECT COUNT(*) FROM user")
    assert cur.fetchone() == (0,)


def test_change_user_with_a_wrong_password_is_refused_and_closed(userdbd):
    r = userdbd()
    c = r.connect()
    with pytest.raises(pymysql.err.OperationalError) as e:
        _change_user(c, "app", "wrong")
    assert e.value.args[0] == 1045
    with pytest.raises(pymysql.err.OperationalError):
        c.cursor().execute("SELECT 1")                 # the router closed the connection
    c2 = r.connect()                                    # and goes on
    cur = c2.cursor()
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)
