"""memcached: SASL PLAIN's password file is read at start and on SIGHUP
(not per attempt), a bad file refuses to start, and repeated failures on a
connection are slowed down."""
import signal
import subprocess
import time

from conftest import bin_path
from mc_helpers import Raw, bin_request, bin_response, start

AUTH = 0x21


def auth(r, user, password):
    r.send(bin_request(AUTH, key=b"PLAIN", value=b"\0" + user + b"\0" + password))
    return bin_response(r)[1]


def test_password_file_read_at_start_not_per_attempt(daemon, tmp_path):
    pw = tmp_path / "pwdb"
    pw.write_text("alice:secret\nbob:hunter2\n")
    d = start(daemon, "-S", "--sasl-pwdb", str(pw))
    pw.unlink()   # gone: the users loaded at start still work
    r = Raw(d.port)
    assert auth(r, b"bob", b"hunter2") == 0
    r2 = Raw(d.port)
    assert auth(r2, b"alice", b"secret") == 0


def test_sighup_reloads_the_password_file(daemon, tmp_path):
    pw = tmp_path / "pwdb"
    pw.write_text("alice:secret\n")
    d = start(daemon, "-S", "--sasl-pwdb", str(pw))
    pw.write_text("carol:n3w\n")
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while True:
        r = Raw(d.port)
        if auth(r, b"carol", b"n3w") == 0:
            break
        assert time.time() < deadline, "reload not seen"
        time.sleep(0.2)
    assert auth(Raw(d.port), b"alice", b"secret") == 0x20
    # An unreadable file on HUP keeps the users already loaded.
    pw.unlink()
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert auth(Raw(d.port), b"carol", b"n3w") == 0


def test_unreadable_password_file_refuses_to_start(tmp_path):
    p = subprocess.run([bin_path("memcached"), "-p", "0", "-l", "127.0.0.1", "-S",
                        "--sasl-pwdb", str(tmp_path / "missing")], capture_output=True, text=True, timeout=10)
    assert p.returncode != 0
    assert "missing" in p.stderr + p.stdout


def test_repeated_failures_are_slowed_down_per_connection(daemon, tmp_path):
    pw = tmp_path / "pwdb"
    pw.write_text("alice:secret\n")
    d = start(daemon, "-S", "--sasl-pwdb", str(pw))
    r = Raw(d.port)
    # Four wrong guesses pipelined: each answer waits for the penalty of
    # the failure before it (100 + 200 + 400 ms at least).
    t0 = time.time()
    r.send(b"".join(bin_request(AUTH, key=b"PLAIN", value=b"\0alice\0guess%d" % i) for i in range(4)))
    for _ in range(4):
        assert bin_response(r)[1] == 0x20
    assert time.time() - t0 >= 0.7
    # The right password still works (on another connection, unpenalized).
    other = Raw(d.port)
    assert auth(other, b"alice", b"secret") == 0
    st = bin_stats(other)
    assert int(st[b"auth_errors"]) == 4 and int(st[b"auth_cmds"]) == 5


def bin_stats(r):
    r.send(bin_request(0x10))
    out = {}
    while True:
        _op, status, _o, _c, _e, key, value = bin_response(r)
        assert status == 0
        if not key:
            return out
        out[key] = value
