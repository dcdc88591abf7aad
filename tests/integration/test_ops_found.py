"""Issue #12's findings, rechecked on every daemon: a second instance on a
busy port refuses to start (and the first keeps serving alone); the flags
users type from the originals' docs and Debian's init scripts are accepted
(memcached -R/--max-reqs-per-event, gearmand --check-args); a live console
`set` of an invalid log level is refused."""
import socket
import subprocess

import pytest

from conftest import bin_path, free_port


def daemon_args(name, tmp, port):
    return {
        "memcached": ["-p", str(port), "-l", "127.0.0.1"],
        "gearmand": ["-p", str(port), "-L", "127.0.0.1"],
        "schwartzd": ["--listen", "127.0.0.1:%d" % port, "--database", "dbi:SQLite:dbname=%s/sw.db" % tmp],
        "mogilefsd": ["--listen", "127.0.0.1:%d" % port, "--db_dsn", "DBI:SQLite:dbname=%s/mog.db" % tmp],
        "mogstored": ["--httplisten=127.0.0.1:%d" % port, "--mgmtlisten=127.0.0.1:%d" % free_port(),
                      "--docroot=%s" % tmp],
        "djabberd": ["--require_tls=no", "--c2s_port", str(port), "--listen", "127.0.0.1", "--storage",
                     "DBI:SQLite:dbname=%s/dj.sqlite" % tmp],
    }[name]


@pytest.mark.parametrize("name", ["memcached", "gearmand", "schwartzd", "mogilefsd", "mogstored", "djabberd"])
def test_second_instance_on_a_busy_port_refuses_to_start(daemon, tmp_path, name):
    port = free_port()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = daemon(name, daemon_args(name, str(tmp_path / "a"), port), ready_port=str(port))
    r = subprocess.run([bin_path(name)] + daemon_args(name, str(tmp_path / "b"), port), capture_output=True,
                       text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode != 0, r.stderr
    assert "in use" in r.stderr, r.stderr
    assert first.running()
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_memcached_takes_max_reqs_per_event_as_memcached_does(daemon):
    d = daemon("memcached", ["-p", "{port}", "-l", "127.0.0.1", "--max-reqs-per-event", "7"])
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(b"stats settings\r\n")
        buf = b""
        while b"END\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, buf
            buf += chunk
    assert b"STAT reqs_per_event 7\r\n" in buf


def test_gearmand_check_args_validates_and_exits():
    ok = subprocess.run([bin_path("gearmand"), "--check-args", "-p", str(free_port())], capture_output=True,
                        text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([bin_path("gearmand"), "--check-args", "--job-port-admin", "bogus"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode != 0 and "job-port-admin" in bad.stderr, bad.stderr
    many = subprocess.run([bin_path("gearmand"), "--check-args", "-t", "9999"], capture_output=True, text=True,
                          timeout=30)
    assert many.returncode != 0 and "at most 64 threads" in many.stderr, many.stderr
    assert "Too many open files" not in many.stderr  # refused before any loop was made
    unknown = subprocess.run([bin_path("gearmand"), "--check-args", "--no-such-flag"], capture_output=True,
                             text=True, timeout=30)
    assert unknown.returncode != 0 and "no-such-flag" in unknown.stderr


def test_console_refuses_an_invalid_live_log_level(daemon, tmp_path):
    d = daemon("schwartzd", ["--listen", "127.0.0.1:{port}", "--database", "dbi:SQLite:dbname=%s/sw.db" % tmp_path,
                             "--console", "127.0.0.1:{admin}"])
    with socket.create_connection(("127.0.0.1", d.admin), timeout=5) as s:
        s.sendall(b"set log-level loud\r\nset log-level debug\r\nquit\r\n")
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    lines = buf.decode().splitlines()
    assert lines[0].startswith(("ERROR", "CLIENT_ERROR", "SERVER_ERROR", "ERR")) and "loud" in lines[0], lines
    assert lines[1] == "OK", lines


def get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(("GET %s HTTP/1.0\r\n\r\n" % path).encode())
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace")


def test_served_files_take_types_beyond_the_fixed_table_from_mime_types(daemon, tmp_path):
    """common/httpd answers Perlbal's own types first (.js stays
    application/x-javascript), then the system's /etc/mime.types table
    (media-types), then text/plain as Perlbal does."""
    (tmp_path / "dev1").mkdir()
    for name in ("a.epub", "b.OGG", "c.js", "d.unknownext", "e.stackdemo"):
        (tmp_path / "dev1" / name).write_text("x")
    table = tmp_path / "mime.types"
    table.write_text("# a test table\napplication/epub+zip epub\naudio/ogg oga ogg\n"
                     "application/x-stack-demo stackdemo\napplication/second-wins-not stackdemo\n")
    def args():
        return ["--httplisten=127.0.0.1:{port}", "--mgmtlisten=127.0.0.1:%d" % free_port(), "--docroot=%s" % tmp_path]
    system = daemon("mogstored", args())
    assert "Content-Type: application/epub+zip\r\n" in get(system.port, "/dev1/a.epub")
    assert "Content-Type: audio/ogg\r\n" in get(system.port, "/dev1/b.OGG")
    assert "Content-Type: application/x-javascript\r\n" in get(system.port, "/dev1/c.js")
    assert "Content-Type: text/plain\r\n" in get(system.port, "/dev1/d.unknownext")
    own = daemon("mogstored", args(), env={"STACK_MIME_TYPES": str(table)})
    assert "Content-Type: application/x-stack-demo\r\n" in get(own.port, "/dev1/e.stackdemo")
    assert "Content-Type: text/plain\r\n" in get(system.port, "/dev1/e.stackdemo")


def console(port, *lines):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(("\r\n".join(lines + ("quit",)) + "\r\n").encode())
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf.decode()


def test_memcached_show_settings_shows_running_custom_values(daemon, tmp_path):
    """-m 128 shows 128 (not the default 64), -a its octal mask, -o what runs."""
    d = daemon("memcached", ["-p", "{port}", "-l", "127.0.0.1", "-m", "128", "-a", "0600", "-o",
                             "hashpower=20,no_lru_crawler", "--admin", "127.0.0.1:{admin}"])
    out = console(d.admin, "show settings")
    settings = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
    assert settings["memory-limit"] == "128", out
    assert settings["unix-mask"] == "600", out
    ext = settings["extended"].split(",")
    assert "hashpower=20" in ext and "no_lru_crawler" in ext and "lru_crawler" not in ext, out


def test_perlbal_refuses_a_missing_docroot(tmp_path):
    """As Perlbal: a docroot that is not a directory is a configuration error
    (it used to start and answer 404 to everything)."""
    conf = tmp_path / "perlbal.conf"
    conf.write_text("CREATE SERVICE web\n  SET role = web_server\n  SET listen = 127.0.0.1:%d\n"
                    "  SET docroot = %s/missing\nENABLE web\n" % (free_port(), tmp_path))
    r = subprocess.run([bin_path("perlbal"), "--config=%s" % conf], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "Directory not found for service web" in r.stderr, r.stderr
