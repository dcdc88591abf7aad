"""schwartzd out of file descriptors: a client that connects while the
daemon has none left gets a clean close at once (the listener's spare
descriptor accepts it and closes it), not a hang in the backlog; the
console's stats count it (accept_fd_exhausted); once clients leave, new
ones are served again."""
import resource
import socket
import subprocess
import time

from sw_helpers import SW, bin_path, wait_port
from netports import free_port

LIMIT = 64


def served(port):
    """A new client: True if `version` is answered, False if the daemon
    closed the connection without a word (a FIN; or a reset, when the
    request reached it after it had read what was there and closed); a
    hang fails the test (recv times out)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"version\r\n")
        data = s.recv(100)
    except ConnectionResetError:
        return s, False
    except socket.timeout:
        raise AssertionError("a client waited 10 s without an answer or a close")
    assert data == b"" or data.startswith(b"VERSION "), data
    return s, data != b""


def test_out_of_descriptors_closes_new_clients_then_recovers(tmp_path):
    port, admin = free_port(), free_port()
    low = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))  # noqa: E731
    d = subprocess.Popen([bin_path("schwartzd"), "--listen", "127.0.0.1:%d" % port, "--console",
                          "127.0.0.1:%d" % admin, "--database", "dbi:SQLite:dbname=%s" % (tmp_path / "fd.db"),
                          "--log-level", "error"], preexec_fn=low)
    held = []
    try:
        wait_port(port)
        con = SW(admin)  # the console's own descriptor, taken while there are some
        refused = None
        for _ in range(LIMIT + 16):
            s, ok = served(port)
            if not ok:
                refused = s
                break
            held.append(s)
        assert refused is not None, "%d clients served under a limit of %d" % (len(held), LIMIT)
        refused.close()
        # a few more while still out: each closed at once as well
        for _ in range(3):
            s, ok = served(port)
            assert not ok
            s.close()
        stats = dict(l.split()[1:3] for l in con.lines("stats"))
        assert int(stats["accept_fd_exhausted"]) >= 4
        # clients leave: new ones are served again (the daemon closes their
        # descriptors when it reads their EOF, so wait for that)
        for s in held[:8]:
            s.close()
        del held[:8]
        deadline = time.time() + 10
        while True:
            s, ok = served(port)
            if ok:
                held.append(s)
                break
            s.close()
            assert time.time() < deadline, "not served again after clients left"
            time.sleep(0.05)
        con.close()
    finally:
        for s in held:
            s.close()
        d.terminate()
        d.wait(timeout=10)
    assert d.returncode == 0
