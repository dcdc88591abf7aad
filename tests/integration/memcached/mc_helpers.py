"""Helpers for the memcached integration tests: start our daemon or
Debian's memcached 1.6.18 with the same flags (so one test can check that
both answer alike), and a raw text-protocol socket."""
import os
import shutil
import socket
import struct

import pytest

from conftest import bin_path

PEER = shutil.which("memcached", path="/usr/bin")


def sanitized():
    """True when the memcached under test is an ASan build (its RSS then
    carries shadow memory and a quarantine of freed blocks)."""
    with open(bin_path("memcached"), "rb") as f:
        return b"__asan_init" in f.read()


def start(daemon, *extra, impl="ours", threads="2", listen=True):
    """Start `impl` ("ours" or "memcached", the real one) with extra flags."""
    args = (["-p", "{port}", "-l", "127.0.0.1"] if listen else []) + ["-t", threads, "-U", "0"] + list(extra)
    if impl == "ours":
        return daemon("memcached", args)
    if not PEER:
        pytest.fail("Debian's memcached (deploy/deps/memcached.test) is not installed")
    if os.geteuid() == 0:
        args += ["-u", "root"]
    return daemon("memcached", args, binary=PEER)


class Raw:
    """A plain socket speaking memcached's text (or binary) protocol."""

    def __init__(self, port, path=None, timeout=10):
        if path:
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.settimeout(timeout)
            self.s.connect(path)
        else:
            self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.port = port
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def _fill(self):
        chunk = self.s.recv(1 << 20)
        if not chunk:
            raise EOFError("closed; have %r" % self.buf[:200])
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def cmd(self, data):
        self.send(data)
        return self.line()

    def until(self, last=b"END"):
        """Lines up to (not including) the line `last`."""
        out = []
        while True:
            ln = self.line()
            if ln == last:
                return out
            out.append(ln)

    def stats(self, group=""):
        self.send(("stats %s\r\n" % group).strip().encode() + b"\r\n")
        out = {}
        for ln in self.until():
            parts = ln.decode().split(" ", 2)
            assert parts[0] == "STAT", ln
            out[parts[1]] = parts[2] if len(parts) > 2 else ""
        return out

    def closed(self, timeout=5):
        """True once the server has closed the connection (reads all left)."""
        self.s.settimeout(timeout)
        try:
            while True:
                d = self.s.recv(1 << 20)
                if not d:
                    return True
                self.buf += d
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.s.close()


def bin_request(opcode, key=b"", extras=b"", value=b"", opaque=0, cas=0):
    body = extras + key + value
    return struct.pack(">BBHBBHIIQ", 0x80, opcode, len(key), len(extras), 0, 0, len(body), opaque, cas) + body


def bin_response(raw):
    """Read one binary response: (opcode, status, opaque, cas, extras, key, value)."""
    hdr = raw.exact(24)
    magic, op, klen, elen, _dt, status, blen, opaque, cas = struct.unpack(">BBHBBHIIQ", hdr)
    assert magic == 0x81, hdr
    body = raw.exact(blen)
    return op, status, opaque, cas, body[:elen], body[elen:elen + klen], body[elen + klen:]
