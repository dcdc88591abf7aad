"""Half-open, slow and silent clients; the console and metrics."""
import hashlib
import socket
import struct
import time
import urllib.request

import pytest


def read_packet(s):
    hdr = b""
    while len(hdr) < 4:
        b = s.recv(4 - len(hdr))
        if not b:
            return None
        hdr += b
    n = hdr[0] | hdr[1] << 8 | hdr[2] << 16
    body = b""
    while len(body) < n:
        b = s.recv(min(n - len(body), 1 << 20))
        if not b:
            return None
        body += b
    return body


def login(port, user="app", password="secret"):
    s = socket.create_connection(("127.0.0.1", port))
    g = read_packet(s)
    p = g.index(b"\0", 1) + 1 + 4
    salt = g[p:p + 8]
    p += 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10
    salt += g[p:p + 12]
    h1 = hashlib.sha1(password.encode()).digest()
    h3 = hashlib.sha1(salt + hashlib.sha1(h1).digest()).digest()
    body = (struct.pack("<IIB", 0x200 | 0x8000 | 0x80000 | 1, 1 << 24, 45) + b"\0" * 23 + user.encode() + b"\0" +
            bytes([20]) + bytes(a ^ b for a, b in zip(h1, h3)) + b"mysql_native_password\0")
    s.sendall(struct.pack("<I", len(body))[:3] + b"\x01" + body)
    assert read_packet(s)[0] == 0
    return s


def query(s, sql):
    q = sql.encode()
    s.sendall(struct.pack("<I", len(q) + 1)[:3] + b"\x00\x03" + q)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_slow_reader_of_a_big_result_is_streamed_with_bounded_memory(userdbd):
    r = userdbd()
    s = login(r.port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    # 100 rows of 1 MB: 100 MB that must not pile up in the router.
    query(s, "SELECT REPEAT('x', 1000000) FROM seq_1_to_100")
    time.sleep(1.5)                       # don't read: the router must stop reading the backend
    held = rss_kb(r.d.pid)
    assert held < 64 * 1024, "router RSS %d kB while the client is not reading" % held
    assert read_packet(s) == b"\x01"      # one column
    read_packet(s)                        # column definition
    assert read_packet(s)[0] == 0xFE      # EOF
    rows = 0
    while True:
        p = read_packet(s)
        if p[0] == 0xFE and len(p) < 9:
            break
        assert len(p) == 4 + 1000000 and p[:4] == b"\xfd\x40\x42\x0f" and p[4:9] == b"xxxxx"
        rows += 1
    assert rows == 100
    # The same connection goes on.
    query(s, "SELECT 1")
    assert read_packet(s) == b"\x01"
    s.close()


def test_client_that_never_logs_in_is_closed(userdbd):
    r = userdbd(extra="login_timeout = 1")
    s = socket.create_connection(("127.0.0.1", r.port))
    assert read_packet(s)[0] == 10
    s.settimeout(10)
    t0 = time.time()
    assert s.recv(100) == b""             # closed by the router
    assert time.time() - t0 < 5
    # A logged-in client stays, idle longer than login_timeout.
    c = r.connect()
    time.sleep(1.5)
    c.ping(reconnect=False)
    cur = c.cursor()
    cur.execute("SELECT 1")
    assert cur.fetchone() == (1,)


def test_client_gone_mid_reply_and_mid_transaction_leaves_the_router_healthy(userdbd):
    r = userdbd()
    r.cli("/* user=new */ SELECT userdb_create_user('gone')")
    for _ in range(5):
        s = login(r.port)
        query(s, "SELECT REPEAT('x', 1000000) FROM seq_1_to_20")
        s.close()
        s = login(r.port)
        query(s, "BEGIN")
        read_packet(s)
        query(s, "/* user=1 */ INSERT INTO posts VALUES (1, 1, 'never committed')")
        s.close()
    time.sleep(0.3)
    assert r.on_cluster(1, "SELECT COUNT(*) FROM posts") == "0\n"    # rolled back with its connection
    assert r.cli("SELECT 1").stdout == "1\n"


def test_console_and_metrics(userdbd, ud_servers):
    import socket as so
    with so.socket() as t:
        t.bind(("127.0.0.1", 0))
        mport = t.getsockname()[1]
    r = userdbd(extra="metrics = 127.0.0.1:%d\nbackend_password = \nclient_password = secret" % mport)
    r.cli("/* user=new */ SELECT userdb_create_user('m')")
    r.cli("/* user=1 */ SELECT COUNT(*) FROM posts")
    out = r.console("stats")
    assert "STAT users_created 1" in out and "STAT queries_hinted 1" in out
    settings = r.console("show settings")
    assert "secret" not in settings                  # passwords are never shown
    assert "client_user = app" in settings
    clusters = r.console("clusters")
    assert "cluster 1" in clusters and "cluster 2" in clusters and "global" in clusters
    assert "c1a" in r.console("pools")
    r.console("user 1")
    deadline = time.time() + 5
    while "cluster 1" not in r.console("cached 1") and time.time() < deadline:
        time.sleep(0.05)
    assert "user 1 cluster 1 readonly 0" in r.console("cached 1")
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5).read().decode()
    assert "userdbd_users_created 1" in body


def test_pipelined_input_behind_a_slow_query_is_bounded(userdbd):
    import threading
    r = userdbd(extra="max_packet = 2m")
    s = login(r.port)
    big = "SELECT LENGTH('%s')" % ("y" * 1000000)
    stream = [b"SELECT SLEEP(1.5)"] + [big.encode()] * 60       # 60 MB behind a slow statement
    payload = b"".join(struct.pack("<I", len(q) + 1)[:3] + b"\x00\x03" + q for q in stream)
    sender = threading.Thread(target=s.sendall, args=(payload,))
    sender.start()
    time.sleep(1.0)
    held = rss_kb(r.d.pid)
    assert held < 48 * 1024, "router RSS %d kB while input waits" % held
    answers = []
    for _ in stream:
        assert read_packet(s) == b"\x01"
        read_packet(s)
        assert read_packet(s)[0] == 0xFE
        row = read_packet(s)
        answers.append(row[1:].decode())
        assert read_packet(s)[0] == 0xFE
    sender.join()
    assert answers == ["0"] + ["1000000"] * 60
    s.close()


def test_console_flip_storm_is_coalesced(userdbd):
    r = userdbd(c1b=True)
    out = r.console("\r\n".join(["flip 1"] * 501))          # odd: ends on b
    assert out.count("OK cluster 1") == 501
    deadline = time.time() + 10
    while time.time() < deadline and r.on_global("SELECT active FROM clusterstate WHERE clusterid = 1") != "b\n":
        time.sleep(0.05)
    assert r.on_global("SELECT active FROM clusterstate WHERE clusterid = 1") == "b\n"
    assert "active=b" in r.console("clusters")
    pools = r.console("pools")
    assert "global conns=" in pools
    waiting = int(pools.split("global conns=")[1].split("waiting=")[1].split()[0])
    assert waiting < 5
    assert r.cli("SELECT 1").stdout == "1\n"


def test_kill_takes_the_id_the_handshake_gave(userdbd):
    import threading
    import pymysql
    r = userdbd()
    a, b = r.connect(), r.connect()
    assert a.thread_id() != b.thread_id()
    result = {}

    def slow():
        t0 = time.time()
        try:
            a.cursor().execute("SELECT SLEEP(20)")
            result["rows"] = True
        except pymysql.err.MySQLError as e:
            result["err"] = e.args[0]
        result["secs"] = time.time() - t0

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    b.cursor().execute("KILL QUERY %d" % a.thread_id())
    t.join(timeout=15)
    # The server answers a killed SLEEP with 1 (interrupted), or error 1317.
    assert result["secs"] < 10
    assert a.cursor().execute("SELECT 1") == 1          # the connection lives on
    b.cursor().execute("KILL %d" % a.thread_id())
    with pytest.raises(pymysql.err.MySQLError):
        a.cursor().execute("SELECT 1")
    with pytest.raises(pymysql.err.MySQLError) as e:
        b.cursor().execute("KILL 999999")
    assert e.value.args[0] == 1094
