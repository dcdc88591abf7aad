"""Helpers for the gearmand tests (no tests here): a tiny Gearman binary-protocol speaker.

Used where a test must send exact packets (priorities, epoch jobs, garbage,
oversized packets, GET_STATUS_UNIQUE...) that the stock tools don't expose.
The user-facing behaviour is tested with the real tools (gearman, gearadmin,
Perl Gearman::Client/Worker, libgearman)."""
import socket
import struct
import time

CMD = dict(CAN_DO=1, CANT_DO=2, RESET_ABILITIES=3, PRE_SLEEP=4, NOOP=6, SUBMIT_JOB=7, JOB_CREATED=8,
           GRAB_JOB=9, NO_JOB=10, JOB_ASSIGN=11, WORK_STATUS=12, WORK_COMPLETE=13, WORK_FAIL=14,
           GET_STATUS=15, ECHO_REQ=16, ECHO_RES=17, SUBMIT_JOB_BG=18, ERROR=19, STATUS_RES=20,
           SUBMIT_JOB_HIGH=21, SET_CLIENT_ID=22, CAN_DO_TIMEOUT=23, ALL_YOURS=24, WORK_EXCEPTION=25,
           OPTION_REQ=26, OPTION_RES=27, WORK_DATA=28, WORK_WARNING=29, GRAB_JOB_UNIQ=30,
           JOB_ASSIGN_UNIQ=31, SUBMIT_JOB_HIGH_BG=32, SUBMIT_JOB_LOW=33, SUBMIT_JOB_LOW_BG=34,
           SUBMIT_JOB_SCHED=35, SUBMIT_JOB_EPOCH=36, SUBMIT_REDUCE_JOB=37, SUBMIT_REDUCE_JOB_BG=38,
           GRAB_JOB_ALL=39, JOB_ASSIGN_ALL=40, GET_STATUS_UNIQUE=41, STATUS_RES_UNIQUE=42)
NAME = {v: k for k, v in CMD.items()}


def packet(cmd, *args, magic=b"\0REQ"):
    if isinstance(cmd, str):
        cmd = CMD[cmd]
    data = b"\0".join(a if isinstance(a, bytes) else str(a).encode() for a in args)
    return magic + struct.pack(">II", cmd, len(data)) + data


class Conn:
    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.s = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, cmd, *args):
        self.s.sendall(packet(cmd, *args))

    def raw(self, data):
        self.s.sendall(data)

    def recv(self, timeout=None):
        """One response packet as (NAME, [args]) (args split on NUL)."""
        if timeout is not None:
            self.s.settimeout(timeout)
        while len(self.buf) < 12:
            self._fill()
        magic, cmd, size = self.buf[:4], *struct.unpack(">II", self.buf[4:12])
        assert magic == b"\0RES", self.buf[:12]
        while len(self.buf) < 12 + size:
            self._fill()
        data, self.buf = self.buf[12:12 + size], self.buf[12 + size:]
        return NAME.get(cmd, cmd), data.split(b"\0") if size else []

    def expect(self, name, timeout=10):
        got = self.recv(timeout)
        assert got[0] == name, "wanted %s, got %r" % (name, got)
        return got[1]

    def line(self, text, timeout=5):
        """Admin text command; returns the reply up to its terminator."""
        self.s.sendall(text.encode() + b"\n")
        self.s.settimeout(timeout)
        end = time.time() + timeout
        while time.time() < end:
            if self.buf.endswith(b"\n.\n") or self.buf == b".\n" or (
                    self.buf.endswith(b"\n") and not self.buf.startswith(b"\0") and
                    (self.buf.startswith(b"OK") or self.buf.startswith(b"ERR"))):
                out, self.buf = self.buf, b""
                return out.decode(errors="replace")
            self._fill()
        raise TimeoutError(self.buf)

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def closed(self, timeout=5):
        """True once the server closed the connection."""
        self.s.settimeout(timeout)
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


def admin(port, text):
    c = Conn(port)
    try:
        return c.line(text)
    finally:
        c.close()


def status(port):
    """`status` as {function: (total, running, workers)}."""
    out = {}
    for ln in admin(port, "status").splitlines():
        if ln == ".":
            break
        f, t, r, w = ln.split("\t")
        out[f] = (int(t), int(r), int(w))
    return out


def wait_for(pred, timeout=10, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()
