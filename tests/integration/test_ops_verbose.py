"""-vv: one debug line per client command, with its result, from mogilefsd,
mogstored, schwartzd, djabberd and userdbd (common/log's log_command), and
never a password, SASL data or login data in it. Without -vv at the default
log level there is no such line."""
import base64
import os
import re
import socket
import subprocess
import time
import uuid

from conftest import free_port

STREAM = ("<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")


def wait_log(d, pattern, timeout=15):
    """The daemon's output once it matches pattern (a regex)."""
    deadline = time.time() + timeout
    while True:
        out = d.output()
        if re.search(pattern, out):
            return out
        if time.time() > deadline:
            raise AssertionError("no %r in %s's output:\n%s" % (pattern, d.name, out))
        time.sleep(0.05)


def talk(port, data, until, timeout=10):
    """Send data on a fresh connection; read until the regex `until` matches."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        while not re.search(until, buf):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf.decode(errors="replace")


def test_mogilefsd_vv_logs_each_command_and_its_answer(daemon, tmp_path):
    conf = tmp_path / "mogilefsd.conf"
    conf.write_text("db_dsn = DBI:SQLite:dbname=%s\n" % (tmp_path / "t.sqlite"))
    d = daemon("mogilefsd", ["-c", str(conf), "--listen", "127.0.0.1:{port}", "-vv"])
    r = talk(d.port, b"create_domain domain=vvtest\r\nget_domains\r\n", rb"domains=\d+\r\n")
    assert "OK domain=vvtest" in r
    out = wait_log(d, r"debug: cmd 127\.0\.0\.1: get_domains -> OK ")
    assert re.search(r"debug: cmd 127\.0\.0\.1: create_domain domain=vvtest -> OK domain=vvtest", out), out
    # an error reply is the result too
    talk(d.port, b"no_such_command\r\n", rb"\r\n")
    wait_log(d, r"cmd 127\.0\.0\.1: no_such_command -> ERR unknown_command")


def test_no_command_lines_without_vv(daemon, tmp_path):
    conf = tmp_path / "mogilefsd.conf"
    conf.write_text("db_dsn = DBI:SQLite:dbname=%s\n" % (tmp_path / "t.sqlite"))
    d = daemon("mogilefsd", ["-c", str(conf), "--listen", "127.0.0.1:{port}"])
    talk(d.port, b"create_domain domain=quiet\r\n", rb"\r\n")
    d.stop()
    assert "cmd 127.0.0.1" not in d.output() and "create_domain" not in d.output()


def test_mogstored_vv_logs_http_and_side_channel_commands(daemon, tmp_path):
    root = tmp_path / "docroot"
    (root / "dev1").mkdir(parents=True)
    side = free_port()
    d = daemon("mogstored", ["--httplisten=127.0.0.1:{port}", "--mgmtlisten=127.0.0.1:%d" % side,
                             "--docroot=%s" % root, "-vv"])
    r = talk(d.port, b"PUT /dev1/0/000/000/0000000001.fid HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello",
             rb"\r\n\r\n")
    assert re.match(r"HTTP/1\.[01] 20[01]", r), r
    talk(d.port, b"PUT /nodev/1.fid HTTP/1.0\r\nContent-Length: 1\r\n\r\nx", rb"\r\n\r\n")
    talk(side, b"size /dev1/0/000/000/0000000001.fid\r\n", rb"\r\n")
    talk(side, b"MD5 /dev1/0/000/000/0000000001.fid\r\n", rb"\r\n")
    out = wait_log(d, r"cmd 127\.0\.0\.1:\d+: MD5 -> /dev1/0/000/000/0000000001\.fid MD5=5d41402abc4b2a76")
    assert re.search(r"cmd 127\.0\.0\.1:\d+: PUT /dev1/0/000/000/0000000001\.fid -> file handler", out), out
    assert re.search(r"cmd 127\.0\.0\.1:\d+: PUT /nodev/1\.fid -> 404", out), out
    assert re.search(r"cmd 127\.0\.0\.1:\d+: size /dev1/0/000/000/0000000001\.fid -> "
                     r"/dev1/0/000/000/0000000001\.fid 5", out), out


def test_schwartzd_vv_logs_each_request_and_its_answer(daemon, tmp_path):
    d = daemon("schwartzd", ["--listen", "127.0.0.1:{port}", "--database",
                             "dbi:SQLite:dbname=%s" % (tmp_path / "jobs.db"), "-vv"])
    r = talk(d.port, b"insert vv.func 3\r\nabc\r\n", rb"\r\n")
    assert r.startswith("OK "), r
    handle = r.split()[1]
    talk(d.port, b"bogus\r\n", rb"\r\n")
    out = wait_log(d, r"cmd 127\.0\.0\.1:\d+: bogus -> ERR ")
    assert re.search(r"cmd 127\.0\.0\.1:\d+: insert vv\.func 3 -> OK %s" % re.escape(handle), out), out


class Xmpp:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def until(self, pattern):
        while not re.search(pattern, self.buf):
            chunk = self.s.recv(65536)
            assert chunk, self.buf
            self.buf += chunk
        self.buf = b""


def test_djabberd_vv_logs_stanzas_and_auth_without_secrets(daemon, tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("alice:wonderland-secret\n")
    conf = tmp_path / "djabberd.conf"
    conf.write_text("vhost = localhost\nrequire_tls = off\nusers_file = %s\nstorage = DBI:SQLite:dbname=%s\n"
                    % (users, tmp_path / "dj.sqlite"))
    d = daemon("djabberd", ["-c", str(conf), "--c2s_port", "{port}", "--listen", "127.0.0.1", "-vv"])
    x = Xmpp(d.port)
    # a wrong password first, then the right one
    x.s.sendall(STREAM.encode())
    x.until(rb"</stream:features>")
    for pw in ("wrong-guess", "wonderland-secret"):
        tok = base64.b64encode(("\0alice\0" + pw).encode())
        x.s.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + tok + b"</auth>")
        x.until(rb"<(success|failure)")
    x.s.sendall(STREAM.encode())
    x.until(rb"</stream:features>")
    x.s.sendall(b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                b"<resource>vv</resource></bind></iq>")
    x.until(rb"</iq>")
    x.s.sendall(b"<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>"
                b"<message to='alice@localhost' type='chat' id='m1'><body>private words</body></message>")
    x.until(rb"id='r1'")
    out = wait_log(d, r"cmd alice@localhost/vv: message type=chat id=m1 to=alice@localhost -> local")
    assert re.search(r"cmd alice@localhost/vv: iq type=get id=r1 to=- ns=jabber:iq:roster -> local", out), out
    assert re.search(r"cmd 127\.0\.0\.1:\d+: auth -> not-authorized", out), out
    assert re.search(r"cmd 127\.0\.0\.1:\d+: auth -> alice", out), out
    for secret in ("wonderland-secret", "wrong-guess", "private words",
                   base64.b64encode(b"\0alice\0wonderland-secret").decode()):
        assert secret not in out
    x.s.close()


def test_userdbd_vv_logs_queries_and_redacts_passwords(daemon, mariadb, tmp_path):
    db = mariadb.create_database()
    dsn = "DBI:mysql:database=%s;host=127.0.0.1;port=%d" % (db, mariadb.port)
    conf = tmp_path / "userdbd.conf"
    conf.write_text("client_user = app\nclient_password = login-secret\nbackend_user = root\n"
                    "global = %s\ncluster.1.master = %s\ndefault_clusters = 1\n" % (dsn, dsn))
    d = daemon("userdbd", ["-c", str(conf), "--listen", "127.0.0.1:{port}", "-vv"])

    def q(sql):
        return subprocess.run(["mariadb", "--no-defaults", "-h127.0.0.1", "-P%d" % d.port, "-uapp",
                               "-plogin-secret", "-N", "-B", "-e", sql], capture_output=True, text=True, timeout=30)

    marker = "vv_" + uuid.uuid4().hex[:8]
    r = q("SELECT '%s'" % marker)
    assert r.returncode == 0 and marker in r.stdout, r.stderr
    r = q("SELECT PASSWORD('hunter2-%s')" % marker)
    assert r.returncode == 0, r.stderr
    q("SELEKT nonsense")
    out = wait_log(d, r"cmd 127\.0\.0\.1:\d+: SELEKT nonsense -> backend answered ERR")
    assert re.search(r"cmd 127\.0\.0\.1:\d+: SELECT '%s' -> backend answered OK" % marker, out), out
    assert re.search(r"cmd 127\.0\.0\.1:\d+: SELECT <redacted> -> backend answered OK", out), out
    assert "hunter2" not in out and "login-secret" not in out


def test_verbose_is_live_from_the_console(daemon, tmp_path):
    d = daemon("schwartzd", ["--listen", "127.0.0.1:{port}", "--database",
                             "dbi:SQLite:dbname=%s" % (tmp_path / "jobs.db"), "--console", "127.0.0.1:{admin}"])
    talk(d.port, b"insert quiet.func 1\r\nx\r\n", rb"\r\n")
    r = talk(d.admin, b"set verbose 2\r\nquit\r\n", rb"OK\r\n")
    assert r.startswith("OK"), r
    talk(d.port, b"insert loud.func 1\r\nx\r\n", rb"\r\n")
    out = wait_log(d, r"cmd 127\.0\.0\.1:\d+: insert loud\.func 1 -> OK ")
    assert "quiet.func" not in out
