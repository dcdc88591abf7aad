"""gearmand 1.1's connection and wake-up options: --keepalive[-idle|
-interval|-count], -w/--worker-wakeup, --exceptions."""
import os
import re
import socket
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_gearmand_wire import Conn, status, wait_for  # noqa: E402


def start(daemon, *extra):
    return daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--log-level", "error"] + list(extra))


def server_side_timer(port):
    """The `ss` timer of the server's end of our connection(s) on port."""
    out = subprocess.run(["ss", "-tnoH", "state", "established", "( sport = :%d )" % port],
                         capture_output=True, text=True, timeout=10).stdout
    return out


def test_keepalive_options_reach_the_socket(daemon):
    d = start(daemon, "--keepalive", "--keepalive-idle", "7", "--keepalive-interval", "3", "--keepalive-count", "4")
    c = Conn(d.port)
    c.send("ECHO_REQ", "x")
    c.expect("ECHO_RES")
    timer = server_side_timer(d.port)
    m = re.search(r"timer:\(keepalive,([0-9.]+)(ms|sec|min)", timer)
    assert m, timer
    secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1) * (60 if m.group(2) == "min" else 1)
    assert 0 < secs <= 7, timer                       # TCP_KEEPIDLE 7, not the system's 7200
    plain = start(daemon)
    c2 = Conn(plain.port)
    c2.send("ECHO_REQ", "x")
    c2.expect("ECHO_RES")
    assert "keepalive" not in server_side_timer(plain.port)


def sleepers(port, n, fn="wake"):
    ws = []
    for _ in range(n):
        w = Conn(port)
        w.send("CAN_DO", fn)
        w.send("PRE_SLEEP")
        ws.append(w)
    w = Conn(port)
    w.send("ECHO_REQ", "sync")                         # the PRE_SLEEPs are in
    assert wait_for(lambda: status(port).get(fn, (0, 0, 0))[2] == n)
    return ws


def woken(ws):
    n = 0
    for w in ws:
        try:
            if w.recv(timeout=0.3)[0] == "NOOP":
                n += 1
        except socket.timeout:
            pass
    return n


@pytest.mark.parametrize("wakeup,expect", [(None, 1), ("2", 2), ("0", 3)])
def test_worker_wakeup(daemon, wakeup, expect):
    d = start(daemon, *(["-w", wakeup] if wakeup else []))
    ws = sleepers(d.port, 3)
    c = Conn(d.port)
    c.send("SUBMIT_JOB_BG", "wake", "", "x")
    c.expect("JOB_CREATED")
    assert woken(ws) == expect


def test_exceptions_option_forwards_exceptions_to_every_client(daemon):
    """As gearmand 1.1.20 --exceptions (checked side by side): a client that
    never sent OPTION_REQ gets the WORK_EXCEPTION itself."""
    for extra, want in (([], "WORK_FAIL"), (["--exceptions"], "WORK_EXCEPTION")):
        d = start(daemon, *extra)
        c = Conn(d.port)
        c.send("SUBMIT_JOB", "ex", "", "x")
        h = c.expect("JOB_CREATED")[0]
        w = Conn(d.port)
        w.send("CAN_DO", "ex")
        w.send("GRAB_JOB")
        w.expect("JOB_ASSIGN")
        w.send("WORK_EXCEPTION", h, "boom")
        assert c.recv()[0] == want
