"""userdbd routing, driven by the real `mariadb` CLI (--comments) and
PyMySQL; every placement is checked directly on the MariaDB servers."""
import socket
import struct
import threading
import time

import pymysql
import pytest


def create_user(r, name):
    out = r.cli("/* user=new */ SELECT userdb_create_user('%s')" % name).stdout.split()
    return int(out[-1])


def test_cli_creates_users_and_rows_land_on_their_cluster(userdbd):
    r = userdbd()
    a, b = create_user(r, "alice"), create_user(r, "bob")
    assert (a, b) == (1, 2)
    # The directory on the global database says where each went (1,2: alternating).
    rows = r.on_global("SELECT userid, user, clusterid, readonly FROM user ORDER BY userid")
    assert rows == "1\talice\t1\t0\n2\tbob\t2\t0\n"
    r.cli("/* user=%d */ INSERT INTO posts VALUES (%d, 1, 'from alice')" % (a, a))
    r.cli("/* user=%d */ INSERT INTO posts VALUES (%d, 1, 'from bob')" % (b, b))
    assert r.on_cluster(1, "SELECT userid, body FROM posts") == "1\tfrom alice\n"
    assert r.on_cluster(2, "SELECT userid, body FROM posts") == "2\tfrom bob\n"
    # Reads come back from the right cluster too; no hint = the global database.
    assert r.cli("/* user=%d */ SELECT body FROM posts" % b).stdout == "from bob\n"
    assert r.cli("SELECT COUNT(*) FROM user").stdout == "2\n"


def test_pymysql_routes_by_hint_and_reports_errors(userdbd):
    r = userdbd()
    c = r.connect()
    cur = c.cursor()
    cur.execute("/* user=new */ SELECT userdb_create_user(%s)", ("carol",))
    (uid,) = cur.fetchone()
    assert uid == 1
    cur.execute("/* user=1 */ INSERT INTO posts (userid, postid, body) VALUES (%s, %s, %s)", (uid, 5, "it's"))
    assert cur.rowcount == 1
    cur.execute("/* user=1 */ SELECT postid, body FROM posts WHERE userid = %s", (uid,))
    assert cur.fetchall() == ((5, "it's"),)
    with pytest.raises(pymysql.err.ProgrammingError) as e:
        cur.execute("/* user=1 */ SELECT * FROM no_such_table")
    assert e.value.args[0] == 1146
    # The session goes on after an error.
    cur.execute("SELECT 40 + 2")
    assert cur.fetchone() == (42,)
    with pytest.raises(pymysql.err.MySQLError) as e:
        cur.execute("/* user=999 */ SELECT 1")
    assert "no user 999" in e.value.args[1]
    with pytest.raises(pymysql.err.MySQLError) as e:
        cur.execute("/* user=abc */ SELECT 1")
    assert "bad routing hint" in e.value.args[1]
    c.ping()
    c.close()


def test_wrong_password_is_refused(userdbd):
    r = userdbd()
    with pytest.raises(pymysql.err.OperationalError) as e:
        r.connect(password="wrong")
    assert e.value.args[0] == 1045
    res = r.cli("SELECT 1", check=False)
    assert res.returncode == 0
    bad = subprocess_cli(r, "-pnope")
    assert bad.returncode != 0 and "Access denied" in bad.stderr


def subprocess_cli(r, pw):
    import subprocess
    return subprocess.run(["mariadb", "--no-defaults", "-h127.0.0.1", "-P%d" % r.port, "-uapp", pw, "-e", "SELECT 1"],
                          capture_output=True, text=True)


def test_transaction_pins_one_backend_until_commit(userdbd):
    r = userdbd()
    create_user(r, "u1")
    create_user(r, "u2")
    c = r.connect(autocommit=False)
    cur = c.cursor()
    cur.execute("/* user=1 */ INSERT INTO posts VALUES (1, 1, 'a')")
    cur.execute("/* user=1 */ SELECT COUNT(*) FROM posts")
    assert cur.fetchone() == (1,)          # our own uncommitted row: same connection
    assert r.on_cluster(1, "SELECT COUNT(*) FROM posts") == "0\n"
    with pytest.raises(pymysql.err.MySQLError) as e:
        cur.execute("/* user=2 */ SELECT 1")
    assert "pinned" in e.value.args[1]
    c.rollback()
    assert r.on_cluster(1, "SELECT COUNT(*) FROM posts") == "0\n"
    cur.execute("/* user=1 */ INSERT INTO posts VALUES (1, 2, 'b')")
    c.commit()
    assert r.on_cluster(1, "SELECT postid FROM posts") == "2\n"
    cur.execute("/* user=2 */ INSERT INTO posts VALUES (2, 3, 'c')")
    c.commit()
    assert r.on_cluster(2, "SELECT postid FROM posts") == "3\n"


def test_perl_dbd_mysql_server_side_prepared_statements(userdbd):
    import subprocess
    r = userdbd()
    create_user(r, "p1")
    script = r'''
use DBI;
my $d = DBI->connect("DBI:mysql:database=x;host=127.0.0.1;port=%d;mysql_server_prepare=1", "app", "secret",
                     {RaiseError => 1, PrintError => 0});
my $ins = $d->prepare("/* user=1 */ INSERT INTO posts VALUES (?, ?, ?)");
$ins->execute(1, $_, "row $_") for 1..5;
undef $ins;
my $s = $d->prepare("/* user=1 */ SELECT postid, body FROM posts WHERE userid = ? ORDER BY postid");
$s->execute(1);
while (my @r = $s->fetchrow_array) { print join(",", @r), "\n"; }
undef $s;
print $d->selectrow_array("SELECT COUNT(*) FROM user"), "\n";
''' % r.port
    out = subprocess.run(["perl", "-e", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "".join("%d,row %d\n" % (i, i) for i in range(1, 6)) + "1\n"
    assert r.on_cluster(1, "SELECT COUNT(*) FROM posts") == "5\n"


def test_counters_are_distinct_and_consecutive_under_8_clients(userdbd):
    r = userdbd()
    create_user(r, "busy")
    got = [[] for _ in range(8)]
    errors = []

    def worker(i):
        try:
            c = r.connect()
            cur = c.cursor()
            for _ in range(1000):
                cur.execute("/* user=1 */ SELECT userdb_counter('L')")
                got[i].append(cur.fetchone()[0])
            c.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    ids = sorted(x for g in got for x in g)
    assert ids == list(range(1, 8001))
    for g in got:
        assert g == sorted(g)       # each client sees its own ids increase


def test_counter_bootstraps_from_the_table_max(userdbd):
    r = userdbd(extra="counter_source = P:posts:postid")
    create_user(r, "old")
    r.on_cluster(1, "INSERT INTO posts VALUES (1, 41, 'x'), (1, 17, 'y'), (2, 99, 'other user')")
    assert r.cli("/* user=1 */ SELECT userdb_counter('P')").stdout == "42\n"
    assert r.cli("/* user=1 */ SELECT userdb_counter('P')").stdout == "43\n"
    # An area without a source starts at 1.
    assert r.cli("/* user=1 */ SELECT userdb_counter('Q')").stdout == "1\n"


def test_weights_split_new_users(userdbd):
    r = userdbd(default_clusters="1:1,2:3")
    c = r.connect()
    cur = c.cursor()
    for i in range(400):
        cur.execute("/* user=new */ SELECT userdb_create_user(%s)", ("w%d" % i,))
    counts = dict(tuple(map(int, l.split())) for l in
                  r.on_global("SELECT clusterid, COUNT(*) FROM user GROUP BY clusterid").splitlines())
    assert abs(counts[2] / 400 - 0.75) <= 0.03
    assert abs(counts[1] / 400 - 0.25) <= 0.03


def test_readonly_user_refuses_writes_keeps_reads(userdbd):
    r = userdbd(extra="directory_ttl = 0.2")
    create_user(r, "ro")
    r.cli("/* user=1 */ INSERT INTO posts VALUES (1, 1, 'before')")
    r.on_global("UPDATE user SET readonly = 1 WHERE userid = 1")
    r.console("invalidate 1")
    res = r.cli("/* user=1 */ INSERT INTO posts VALUES (1, 2, 'during')", check=False)
    assert res.returncode != 0 and "ERROR 1290" in res.stderr and "read-only" in res.stderr
    assert r.cli("/* user=1 */ SELECT body FROM posts").stdout == "before\n"
    r.console("readonly 1 off")
    import time
    deadline = time.time() + 5
    while time.time() < deadline and r.on_global("SELECT readonly FROM user") != "0\n":
        time.sleep(0.05)
    time.sleep(0.3)
    r.cli("/* user=1 */ INSERT INTO posts VALUES (1, 2, 'after')")
    assert r.on_cluster(1, "SELECT COUNT(*) FROM posts") == "2\n"


def test_flip_moves_writes_to_the_other_master(userdbd):
    r = userdbd(c1b=True)
    create_user(r, "f1")                       # cluster 1
    r.cli("/* user=1 */ INSERT INTO posts VALUES (1, 1, 'on a')")
    assert "active=b" in r.console("flip 1")
    r.cli("/* user=1 */ INSERT INTO posts VALUES (1, 2, 'on b')")
    assert r.on_cluster(1, "SELECT body FROM posts") == "on a\n"
    assert r.on_cluster(2, "SELECT body FROM posts") == "on b\n"   # b side is the c2 server here
    # Counters live on the global database: a flip doesn't reissue ids.
    assert r.cli("/* user=1 */ SELECT userdb_counter('L')").stdout == "1\n"
    r.console("flip 1")
    assert r.cli("/* user=1 */ SELECT userdb_counter('L')").stdout == "2\n"


def _packet(seq, payload):
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def _read_packet(s):
    hdr = b""
    while len(hdr) < 4:
        b = s.recv(4 - len(hdr))
        if not b:
            return None
        hdr += b
    n = hdr[0] | hdr[1] << 8 | hdr[2] << 16
    body = b""
    while len(body) < n:
        b = s.recv(n - len(body))
        if not b:
            break
        body += b
    return body


def test_garbage_gets_an_error_packet_and_the_router_goes_on(userdbd):
    r = userdbd()
    # Garbage instead of a login: an ERR packet (0xff), then close.
    with socket.create_connection(("127.0.0.1", r.port)) as s:
        greeting = _read_packet(s)
        assert greeting[0] == 10
        s.sendall(_packet(1, b"\x00\x01garbage"))
        err = _read_packet(s)
        assert err[0] == 0xFF
    # An oversized packet header: ERR 1153, then close.
    with socket.create_connection(("127.0.0.1", r.port)) as s:
        _read_packet(s)
        s.sendall(b"\xff\xff\xff\x01" + b"x" * 100)
        err = _read_packet(s)
        assert err[0] == 0xFF
    # An unknown command after login: ERR, and the session goes on.
    c = r.connect()
    c._execute_command(0x42, b"")
    with pytest.raises(pymysql.err.MySQLError):
        c._read_ok_packet()
    cur = c.cursor()
    cur.execute("SELECT 7")
    assert cur.fetchone() == (7,)
    # Half a packet, then hang up: nothing breaks.
    with socket.create_connection(("127.0.0.1", r.port)) as s:
        _read_packet(s)
        s.sendall(b"\x50\x00\x00")
    cur.execute("SELECT 8")
    assert cur.fetchone() == (8,)
    assert r.d.running()


def test_flip_is_shared_through_the_global_database(userdbd):
    r = userdbd(c1b=True)
    create_user(r, "f2")
    assert "active=b" in r.console("flip 1")
    assert r.on_global("SELECT clusterid, active FROM clusterstate") == "1\tb\n"
    # Another router on the same global database picks the flip up at start ...
    d2 = r.d.__class__("userdbd", ["-c", r.conf, "--listen", "127.0.0.1:{port}", "--console", "127.0.0.1:{admin}"],
                       r.d.tmp)
    try:
        import subprocess
        out = subprocess.run(["mariadb", "--no-defaults", "--comments", "-h127.0.0.1", "-P%d" % d2.port, "-uapp",
                              "-psecret", "-N", "-B", "-e", "/* user=1 */ SELECT @@server_id"],
                             capture_output=True, text=True)
        assert out.stdout == "21\n"            # the b side (the c2 server here)
        # ... and a flip made elsewhere while it runs.
        r.on_global("UPDATE clusterstate SET active = 'a' WHERE clusterid = 1")
        import time
        deadline = time.time() + 5
        while time.time() < deadline:
            with socket.create_connection(("127.0.0.1", d2.admin)) as c:
                c.sendall(b"clusters\r\nquit\r\n")
                text = b""
                while True:
                    b = c.recv(65536)
                    if not b:
                        break
                    text += b
            if b"active=a" in text:
                break
            time.sleep(0.1)
        assert b"active=a" in text
    finally:
        d2.stop()


def test_multi_statements_and_multiple_results(userdbd):
    r = userdbd()
    create_user(r, "multi")
    from pymysql.constants import CLIENT
    c = r.connect(client_flag=CLIENT.MULTI_STATEMENTS)
    cur = c.cursor()
    cur.execute("SELECT 1; SELECT 2, 3")
    assert cur.fetchall() == ((1,),)
    assert cur.nextset()
    assert cur.fetchall() == ((2, 3),)
    assert not cur.nextset()
    # A read followed by a write in one packet goes to the master of the user's cluster.
    cur.execute("/* user=1 */ SELECT COUNT(*) FROM posts; INSERT INTO posts VALUES (1, 9, 'multi')")
    while cur.nextset():
        pass
    assert r.on_cluster(1, "SELECT body FROM posts") == "multi\n"
    # Without the capability a stacked statement is a syntax error, as on the
    # server, even on a pooled connection another client turned it on for.
    cur2 = r.connect().cursor()
    with pytest.raises(pymysql.err.ProgrammingError) as e:
        cur2.execute("SELECT 1; SELECT 2")
    assert e.value.args[0] == 1064
    cur2.execute("SELECT 5")
    assert cur2.fetchone() == (5,)


def test_userdb_cli_creates_users_counts_and_looks_up(userdbd):
    import os
    import subprocess
    r = userdbd(default_clusters="2")
    cli = os.path.join(os.environ.get("BUILD_DIR", "build"), "bin", "userdb")
    env = dict(os.environ, USERDB_PASSWORD="secret")
    run = lambda *a: subprocess.run([cli, "-P", str(r.port), "-u", "app"] + list(a), capture_output=True, text=True,
                                    env=env)
    out = run("create", "o'hara")
    assert out.returncode == 0 and out.stdout == "1\n", out.stderr
    assert r.on_global("SELECT user, clusterid FROM user") == "o'hara\t2\n"
    assert run("counter", "1", "L").stdout == "1\n"
    assert run("counter", "1", "L").stdout == "2\n"
    assert run("where", "1").stdout == "cluster 2\n"
    bad = run("where", "77")
    assert bad.returncode == 1 and "no such user" in bad.stderr
    dup = run("create", "o'hara")
    assert dup.returncode == 1 and "Duplicate" in dup.stderr
    denied = subprocess.run([cli, "-P", str(r.port), "-u", "app", "where", "1"], capture_output=True, text=True)
    assert denied.returncode == 1 and "Access denied" in denied.stderr


def test_counters_stay_consecutive_across_ab_flips_under_load(userdbd):
    r = userdbd(c1b=True, default_clusters="1")
    create_user(r, "flippy")
    got, errors, done = [[] for _ in range(4)], [], threading.Event()

    def worker(i):
        try:
            c = r.connect()
            cur = c.cursor()
            for _ in range(300):
                cur.execute("/* user=1 */ SELECT userdb_counter('T')")
                got[i].append(cur.fetchone()[0])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    flips = 0
    while any(t.is_alive() for t in ts) and flips < 200:
        r.console("flip 1")
        flips += 1
        time.sleep(0.02)
    for t in ts:
        t.join()
    assert not errors
    assert flips >= 2
    assert sorted(x for g in got for x in g) == list(range(1, 1201))


def test_readonly_cluster_refuses_writes_and_gets_no_new_users(userdbd):
    r = userdbd(extra="cluster.2.readonly = yes")
    r.on_global("INSERT INTO user (user, clusterid) VALUES ('legacy', 2)")
    for i in range(4):
        create_user(r, "n%d" % i)
    assert r.on_global("SELECT COUNT(*) FROM user WHERE clusterid = 2") == "1\n"   # only the legacy one
    res = r.cli("/* user=1 */ INSERT INTO posts VALUES (1, 1, 'x')", check=False)
    assert "ERROR 1290" in res.stderr and "cluster 2 is read-only" in res.stderr
    assert r.cli("/* user=1 */ SELECT COUNT(*) FROM posts").stdout == "0\n"
    assert "READONLY" in r.console("clusters")


def test_directory_is_not_starved_when_clients_pin_every_pooled_connection(userdbd):
    r = userdbd(extra="pool_max = 1\ndirectory_ttl = 0")
    create_user(r, "first")
    a = r.connect(autocommit=False)
    cur_a = a.cursor()
    cur_a.execute("SELECT COUNT(*) FROM usercounter")   # a transaction: pins the only pooled global connection
    assert r.console("pools").count("global conns=1") == 1
    b = r.connect()
    cur_b = b.cursor()
    cur_b.execute("/* user=1 */ SELECT COUNT(*) FROM posts")   # directory lookup on the reserve
    assert cur_b.fetchone() == (0,)
    cur_b.execute("/* user=new */ SELECT userdb_create_user('second')")
    assert cur_b.fetchone() == (2,)
    a.commit()
    cur_b.execute("SELECT COUNT(*) FROM user")               # a client statement: the pooled one again
    assert cur_b.fetchone() == (2,)
