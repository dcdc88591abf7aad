"""The console (core commands plus queues, workers, databases), metrics,
the config file with -c, and hostile clients: one that never reads its
replies, one that stops mid-request, many idle connections."""
import socket
import subprocess
import time
import urllib.request

from sw_helpers import SW, bin_path, client, schwartzd, wait_port  # noqa: F401 (fixtures)
from netports import free_port


def wait_for(fn, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("condition not met in %ss" % timeout)


def test_console_queues_workers_databases_and_stats(schwartzd, client):
    d = schwartzd()
    c = client(d)
    c.insert_many([("Mail", b"a"), ("Mail", b"b"), ("Thumb", b"c")])
    c.grab(1, 60, "Mail")
    con = SW(d.admin)
    # queue counts refresh every second (--queue-refresh 1)
    lines = wait_for(lambda: [l for l in con.lines("queues") if l.startswith("Mail ready 1 running 1")] and
                     con.lines("queues"))
    assert "Thumb ready 1 running 0 failed 0" in lines
    workers = con.lines("workers")
    assert len(workers) == 1 and "grabbed 1" in workers[0] and "funcs Mail" in workers[0]
    dbs = con.lines("databases")
    assert len(dbs) == 1 and " alive " in dbs[0]
    stats = dict(l.split()[1:3] for l in con.lines("stats"))
    assert stats["jobs_inserted"] == "3" and stats["jobs_grabbed"] == "1" and stats["db0_alive"] == "1"
    con.close()


def test_metrics_and_config_file(tmp_path):
    port, admin, metrics = free_port(), free_port(), free_port()
    conf = tmp_path / "schwartzd.conf"
    conf.write_text("listen = 127.0.0.1:%d\nconsole = 127.0.0.1:%d\nmetrics = 127.0.0.1:%d\n"
                    "database = dbi:SQLite:dbname=%s\npolicy = Cfg max_retries=1\nqueue-refresh = 1\n"
                    % (port, admin, metrics, tmp_path / "c.db"))
    p = subprocess.Popen([bin_path("schwartzd"), "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(port)
        c = SW(port)
        h = c.insert("Cfg", b"x")
        c.grab(1, 60, "Cfg")
        # the policy from the config file: one retry, then failed
        assert c.cmd("failed %s :a" % h) == "OK retry"
        c.grab(1, 60, "Cfg")
        assert c.cmd("failed %s :b" % h) == "OK failed"
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics, timeout=5).read().decode()
        assert "schwartzd_jobs_inserted 1" in body and "schwartzd_jobs_retried 1" in body
        assert "schwartzd_jobs_failed 1" in body and "schwartzd_insert_latency" in body
        assert SW(admin).cmd("version").startswith("VERSION")
        c.close()
    finally:
        p.terminate()
        out = p.communicate(timeout=15)[0]
    assert p.returncode == 0, out


def test_client_that_never_reads_is_paused_not_grown(schwartzd, client):
    d = schwartzd()
    c = client(d)
    c.insert("Big", b"x" * 100000)
    hog = socket.create_connection(("127.0.0.1", d.port))
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    req = b"list Big\r\n" * 2000
    hog.settimeout(5)
    sent = 0
    try:
        while sent < len(req):
            sent += hog.send(req[sent:sent + 65536])
    except socket.timeout:
        pass
    # the daemon stopped reading the hog (output limit) and still serves others
    assert client(d).cmd("version").startswith("VERSION")
    rss = int([l for l in open("/proc/%d/status" % d.pid) if l.startswith("VmRSS")][0].split()[1])
    assert rss < 64 * 1024, rss  # KiB: bounded by the output limit, not 2000 x 100 kB of replies
    hog.close()


def test_half_request_then_silence_and_many_idle_connections(schwartzd, client):
    d = schwartzd(extra=["--idle-timeout", "1"])
    half = socket.create_connection(("127.0.0.1", d.port))
    half.sendall(b"insert Half 10\r\nabc")  # block never finished
    idle = [socket.create_connection(("127.0.0.1", d.port)) for _ in range(50)]
    assert client(d).cmd("version").startswith("VERSION")
    # idle-timeout closes them; the half insert was never acknowledged nor stored
    half.settimeout(5)
    assert half.recv(100) == b""
    c = client(d)
    assert c.lines("list Half") == []
    for s in idle:
        s.close()


def test_database_password_is_never_shown(schwartzd, client, mariadb, tmp_path):
    name = mariadb.create_database()
    secret = "S3cret-" + name
    mariadb.sql("CREATE USER 'sw_%s'@'%%' IDENTIFIED BY '%s'" % (name, secret))
    mariadb.sql("GRANT ALL ON `%s`.* TO 'sw_%s'@'%%'" % (name, name))
    conf = tmp_path / "secret.conf"
    conf.write_text("db_user = sw_%s\ndb_pass = %s\n" % (name, secret))
    d = schwartzd(["dbi:mysql:database=%s;host=127.0.0.1;port=%d" % (name, mariadb.port)],
                  extra=["-c", str(conf), "--log-level", "debug"])
    c = client(d)
    h = c.insert("Pw", b"x")  # the password works
    assert c.cmd("completed " + h) == "OK"
    con = SW(d.admin)
    con.send(b"show settings\r\n")
    time.sleep(0.5)
    con.s.settimeout(0.5)
    text = b""
    try:
        while True:
            chunk = con.s.recv(65536)
            if not chunk:
                break
            text += chunk
    except socket.timeout:
        pass
    assert b"db-pass" in text and secret.encode() not in text
    dump = "\n".join(con.lines("databases")) + "\n".join(con.lines("stats"))
    assert secret not in dump
    con.close()
    assert secret not in d.output()


def test_random_garbage_storm_leaves_the_daemon_serving(schwartzd, client):
    """Random bytes, random lines built from protocol words, truncated
    blocks, on 20 connections closed mid-stream: the daemon answers with
    errors and keeps serving."""
    import random
    rnd = random.Random(1234)
    d = schwartzd()
    words = [b"insert", b"insert_many", b"grab", b"completed", b"failed", b"declined", b"replace_with", b"list",
             b"inspect", b"status", b"policy", b"funcmap", b"queues", b"stats", b"grab_job", b"touch", b"F", b"0",
             b"1", b"-1", b"99999999999999999999", b"uniqkey=", b"priority=70000", b":msg", b"=", b"\x00", b"\xff",
             b"0123456789abcdef0123456789abcdef-1"]
    socks = []
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", d.port))
        s.settimeout(5)
        for _ in range(50):
            if rnd.random() < 0.3:
                payload = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300)))
            else:
                payload = b" ".join(rnd.choice(words) for _ in range(rnd.randint(1, 6))) + rnd.choice(
                    [b"\r\n", b"\n", b""])
            try:
                s.sendall(payload)
            except OSError:
                break  # the daemon closed it after a fatal error: fine
        socks.append(s)
    for s in socks:
        s.close()
    c = client(d)
    assert c.cmd("version").startswith("VERSION")
    stats = dict(l.split()[1:3] for l in c.lines("stats"))
    assert int(stats["errors_sent"]) > 0
