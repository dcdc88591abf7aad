"""memcached -Y: the text protocol's login ("set <key> <flags> <exptime>
<n>" whose data is "<user> <password>"), each exchange compared line for
line with Debian's memcached 1.6.18; the auth file re-read on SIGHUP;
bad files and flag combinations refused as memcached refuses them; failed
logins counted (and, here, slowed)."""
import os
import signal
import subprocess
import time

import pytest

from conftest import bin_path
from mc_helpers import PEER, Raw

IMPLS = ["ours", "memcached"]


def start_auth(daemon, impl, authfile, *extra):
    args = ["-p", "{port}", "-l", "127.0.0.1", "-U", "0", "-t", "2", "-Y", str(authfile)] + list(extra)
    if impl == "ours":
        return daemon("memcached", args)
    if os.geteuid() == 0:
        args += ["-u", "root"]
    return daemon("memcached", args, binary=PEER)


@pytest.fixture
def authfile(tmp_path):
    p = tmp_path / "authfile"
    p.write_text("foo:bar\nbaaaz:quux\n")
    return p


# Sent in order on one connection; every reply line is compared.
EXCHANGES = [
    b"set foo 0 0 2\r\nhi\r\n",               # one token: not a user and password
    b"get foo\r\n",                             # anything but a set
    b"version\r\n",
    b"set foo\r\n",                             # a set without its length
    b"set foo 0 0 x\r\n",                       # a length that is no number
    b"set foo 0 0 7\r\nfoo bab\r\n",            # wrong password
    b"set foo 0 0 7\r\nfoo barXY",              # not ended by CRLF
    b"set foo 0 0 9\r\nfoo  bar \r\n",          # tokens split on runs of spaces
    b"set toast 0 0 2\r\nhi\r\n",               # logged in: a real set
    b"get toast\r\n",
]


def exchange(port):
    r = Raw(port)
    out = []
    for req in EXCHANGES:
        r.send(req)
        ln = r.line()
        out.append(ln)
        if ln.startswith(b"VALUE"):
            out += [r.line(), r.line()]
    st = r.stats()
    out.append((st["auth_cmds"], st["auth_errors"]))
    # a second connection, the second user
    r2 = Raw(port)
    out.append(r2.cmd(b"set foo 0 0 10\r\nbaaaz quux\r\n"))
    out.append(r2.cmd(b"set toast2 0 0 2\r\nho\r\n"))
    out.append(r2.cmd(b"get toast2\r\n"))
    r.close()
    r2.close()
    return out


def test_ascii_login_exchanges_as_memcached(daemon, authfile):
    got = {}
    for impl in IMPLS:
        d = start_auth(daemon, impl, authfile)
        got[impl] = exchange(d.port)
        d.stop()
    assert got["ours"] == got["memcached"]
    ours = got["ours"]
    assert ours[0] == b"CLIENT_ERROR bad authentication token format"
    assert ours[1] == b"CLIENT_ERROR unauthenticated"
    assert ours[5] == b"CLIENT_ERROR authentication failure"
    assert ours[6] == b"CLIENT_ERROR bad command line termination"
    assert ours[7] == b"STORED" and ours[8] == b"STORED"
    assert ours[9:12] == [b"VALUE toast 0 2", b"hi", b"END"]


@pytest.mark.parametrize("impl", IMPLS)
def test_ascii_auth_settings_and_binary_refused(daemon, authfile, impl):
    d = start_auth(daemon, impl, authfile)
    r = Raw(d.port)
    assert r.cmd(b"set x 0 0 7\r\nfoo bar\r\n") == b"STORED"
    st = r.stats("settings")
    assert st["auth_enabled_ascii"] == str(authfile)
    assert st["binding_protocol"] == "ascii"
    r.close()
    # a binary request is read as text: not a login
    b = Raw(d.port)
    b.send(bytes([0x80, 0x0B, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) + b"\r\n")
    assert b.line().startswith(b"CLIENT_ERROR")
    b.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_ascii_auth_file_reloaded_on_hup(daemon, authfile, impl):
    d = start_auth(daemon, impl, authfile)
    authfile.write_text("newuser:newpass\n")
    os.kill(d.pid, signal.SIGHUP)
    deadline = time.time() + 10
    while True:  # memcached re-reads it from its clock tick, within a second
        r = Raw(d.port)
        ok = r.cmd(b"set a 0 0 15\r\nnewuser newpass\r\n") == b"STORED"
        r.close()
        if ok or time.time() > deadline:
            break
        time.sleep(0.2)
    assert ok
    r = Raw(d.port)
    assert r.cmd(b"set a 0 0 7\r\nfoo bar\r\n") == b"CLIENT_ERROR authentication failure"
    r.close()
    # a file that no longer reads keeps the users loaded before
    authfile.write_text("no colon here\n")
    os.kill(d.pid, signal.SIGHUP)
    time.sleep(1.5)
    r = Raw(d.port)
    if impl == "ours":
        assert r.cmd(b"set a 0 0 15\r\nnewuser newpass\r\n") == b"STORED"
    r.close()


def start_fails(binary, *args):
    extra = ["-u", "root"] if binary == PEER and os.geteuid() == 0 else []
    p = subprocess.run([binary, "-p", "0", "-U", "0", "-l", "127.0.0.1"] + extra + list(args), capture_output=True,
                       text=True, timeout=20)
    return p.returncode != 0, p.stderr


def test_ascii_auth_bad_files_and_flags_refused(tmp_path, authfile):
    bad = tmp_path / "bad"
    bad.write_text("foo:bar\nnocolon\n")
    cases = [(["-Y", str(bad)], "malformed"),
             (["-Y", str(tmp_path / "missing")], "open"),
             (["-Y", str(authfile), "-B", "binary"], "cannot allow the BINARY protocol"),
             (["-Y", str(authfile), "-B", "auto"], "cannot allow the BINARY protocol")]
    for flags, says in cases:
        for binary in (bin_path("memcached"), PEER):
            failed, err = start_fails(binary, *flags)
            assert failed and says in err, (binary, flags, err)
    # -B ascii is allowed
    for binary in (bin_path("memcached"), PEER):
        p = subprocess.Popen([binary, "-p", "0", "-U", "0", "-Y", str(authfile), "-B", "ascii"] +
                             (["-u", "root"] if binary == PEER and os.geteuid() == 0 else []),
                             stderr=subprocess.PIPE, text=True)
        time.sleep(0.8)
        assert p.poll() is None, p.stderr.read()
        p.terminate()
        p.wait(timeout=10)


def test_ascii_auth_failures_are_slowed(daemon, authfile):
    d = start_auth(daemon, "ours", authfile)
    r = Raw(d.port)
    t0 = time.time()
    r.send(b"set a 0 0 7\r\nfoo bad\r\n" * 4)
    for _ in range(4):
        assert r.line() == b"CLIENT_ERROR authentication failure"
    assert time.time() - t0 >= 0.7  # 0.1 + 0.2 + 0.4 s of pauses at least
    r2 = Raw(d.port)
    assert r2.cmd(b"set a 0 0 7\r\nfoo bar\r\n") == b"STORED"
    st = r2.stats()
    assert st["auth_cmds"] == "5" and st["auth_errors"] == "4"
    r2.close()
    r.close()


def test_ascii_auth_junk_line_closes(daemon, authfile):
    """No line end within 2 KiB before logging in: closed, as memcached."""
    for impl in IMPLS:
        d = start_auth(daemon, impl, authfile)
        r = Raw(d.port)
        r.send(b"x" * 3000)
        assert r.closed(), impl
        d.stop()
