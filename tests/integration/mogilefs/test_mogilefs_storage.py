"""mogstored alone, driven with curl and raw HTTP as trackers and clients do."""
import base64
import hashlib
import os
import re
import socket
import subprocess
import tempfile

import pytest

from .mog_cluster import Storage


@pytest.fixture(scope="module")
def node():
    tmp = tempfile.mkdtemp(prefix="mogst-")
    s = Storage(tmp, "127.0.0.1", [1, 2])
    yield s
    s.stop()


def url(node, path):
    return "http://%s:%d%s" % (node.ip, node.http_port, path)


def curl(*args):
    r = subprocess.run(["curl", "-s", "-S", "-o", "/dev/stdout", "-w", "\n%{http_code}"] + list(args),
                       capture_output=True, timeout=30)
    body, _, code = r.stdout.rpartition(b"\n")
    return int(code), body


def raw(node, data, port=None, nbytes=65536, timeout=5):
    with socket.create_connection((node.ip, port or node.http_port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while len(out) < nbytes:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except socket.timeout:
            pass
    return out


def test_put_creates_subdirectories_and_get_head_range(node):
    data = os.urandom(100000)
    path = os.path.join(node.docroot, "upload.bin")
    with open(path, "wb") as f:
        f.write(data)
    code, _ = curl("-T", path, url(node, "/dev1/0/000/123/0000123456.fid"))
    assert code == 200
    assert open(os.path.join(node.docroot, "dev1/0/000/123/0000123456.fid"), "rb").read() == data
    code, body = curl(url(node, "/dev1/0/000/123/0000123456.fid"))
    assert code == 200 and body == data
    code, body = curl("-r", "10-19", url(node, "/dev1/0/000/123/0000123456.fid"))
    assert code == 206 and body == data[10:20]
    code, body = curl("-r", "200000-", url(node, "/dev1/0/000/123/0000123456.fid"))
    assert code == 416
    head = raw(node, b"HEAD /dev1/0/000/123/0000123456.fid HTTP/1.0\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"Content-Length: 100000\r\n" in head
    assert head.endswith(b"\r\n\r\n")


def test_put_chunked_and_expect_continue(node):
    path = os.path.join(node.docroot, "chunk.bin")
    data = os.urandom(300000)
    with open(path, "wb") as f:
        f.write(data)
    code, _ = curl("-H", "Transfer-Encoding: chunked", "-T", path, url(node, "/dev2/chunked/file.fid"))
    assert code == 200
    assert open(os.path.join(node.docroot, "dev2/chunked/file.fid"), "rb").read() == data


def test_content_md5_checked(node):
    data = b"some bytes to check"
    good = base64.b64encode(hashlib.md5(data).digest()).decode()
    bad = base64.b64encode(hashlib.md5(b"x").digest()).decode()
    req = ("PUT /dev1/md5/bad.fid HTTP/1.0\r\nContent-Length: %d\r\nContent-MD5: %s\r\n\r\n" % (len(data), bad))
    resp = raw(node, req.encode() + data)
    assert resp.startswith(b"HTTP/1.0 400")
    assert not os.path.exists(os.path.join(node.docroot, "dev1/md5/bad.fid"))
    assert not [n for n in os.listdir(os.path.join(node.docroot, "dev1/md5")) if n.endswith(".tmp")]
    req = ("PUT /dev1/md5/good.fid HTTP/1.0\r\nContent-Length: %d\r\nContent-MD5: %s\r\n\r\n" % (len(data), good))
    assert raw(node, req.encode() + data).startswith(b"HTTP/1.0 200")
    assert open(os.path.join(node.docroot, "dev1/md5/good.fid"), "rb").read() == data


def test_put_needs_existing_device_dir_and_clean_path(node):
    code, _ = curl("-X", "PUT", "--data-binary", "x", url(node, "/dev9/a/b.fid"))
    assert code == 404
    for bad in (b"/dev1/../../etc/passwd", b"/dev1/a%2F..%2F..%2Fx", b"/dev1/a b", b"/dev1/x/"):
        resp = raw(node, b"PUT " + bad + b" HTTP/1.0\r\nContent-Length: 1\r\n\r\nx")
        assert resp.startswith(b"HTTP/1.0 400"), (bad, resp[:40])
    resp = raw(node, b"GET /../../../../etc/passwd HTTP/1.0\r\n\r\n")
    assert resp.startswith(b"HTTP/1.0 400")
    # No Content-Length and not chunked: an empty file, as Perlbal (the
    # original mogstored) reads a missing length as 0 — MogileFS::Client's
    # edit_file with overwrite sends such a PUT.
    code, _ = curl("-X", "PUT", url(node, "/dev1/nolen.fid"), "-H", "Content-Length:")
    assert code == 200
    assert curl(url(node, "/dev1/nolen.fid")) == (200, b"")


def test_delete_and_mkcol(node):
    code, _ = curl("-X", "PUT", "--data-binary", "bye", url(node, "/dev1/del/me.fid"))
    assert code == 200
    code, _ = curl("-X", "DELETE", url(node, "/dev1/del/me.fid"))
    assert code == 204
    code, _ = curl("-X", "DELETE", url(node, "/dev1/del/me.fid"))
    assert code == 404
    code, _ = curl("-X", "MKCOL", url(node, "/dev1/newdir"))
    assert code == 400


def test_keepalive_pipelined_requests(node):
    code, _ = curl("-X", "PUT", "--data-binary", "abc", url(node, "/dev1/ka.fid"))
    req = b"GET /dev1/ka.fid HTTP/1.1\r\nHost: x\r\n\r\n" * 3
    resp = raw(node, req, nbytes=10 ** 6, timeout=1)
    # answered in the request's version (common/httpd; Perlbal says HTTP/1.0)
    assert resp.count(b"HTTP/1.1 200") == 3 and resp.count(b"abc") == 3


def test_usage_file(node):
    code, body = curl(url(node, "/dev1/usage"))
    assert code == 200
    fields = dict(l.split(": ", 1) for l in body.decode().splitlines())
    assert {"available", "device", "disk", "time", "total", "use", "used"} <= set(fields)
    assert int(fields["total"]) >= int(fields["used"]) > 0


def test_side_channel(node):
    code, _ = curl("-X", "PUT", "--data-binary", "side channel data", url(node, "/dev2/side.fid"))
    out = raw(node, b"size /dev2/side.fid\r\nsize /dev2/none.fid\r\nMD5 /dev2/side.fid\r\nSHA-1 /dev2/side.fid fsck\r\n"
              b"MD5 /dev2/none.fid\r\nsize /dev2/../x\r\nbogus\r\n", port=node.side_port, nbytes=400, timeout=2)
    lines = out.decode().split("\r\n")
    assert lines[0] == "/dev2/side.fid 17"
    assert lines[1] == "/dev2/none.fid -1"
    assert lines[2] == "/dev2/side.fid MD5=" + hashlib.md5(b"side channel data").hexdigest()
    assert lines[3] == "/dev2/side.fid SHA-1=" + hashlib.sha1(b"side channel data").hexdigest()
    assert lines[4] == "/dev2/none.fid MD5=-1"
    assert lines[5] == "ERROR: uri invalid (contains ..)"
    assert lines[6] == "ERROR: unknown command: bogus"


def test_garbage_and_half_open_clients(node):
    resp = raw(node, b"\x00\x01\x02garbage\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 400 ", resp) and b"Connection: close\r\n" in resp
    # A PUT that stops half way leaves no file and no temporary behind.
    with socket.create_connection((node.ip, node.http_port)) as s:
        s.sendall(b"PUT /dev1/half/cut.fid HTTP/1.0\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    code, _ = curl(url(node, "/dev1/usage"))
    assert code == 200
    d = os.path.join(node.docroot, "dev1/half")
    import time
    deadline = time.time() + 5
    while time.time() < deadline and os.path.isdir(d) and os.listdir(d):
        time.sleep(0.05)
    assert not os.path.isdir(d) or os.listdir(d) == []


def test_side_channel_watch_streams_utilization(node):
    import re
    import time
    with socket.create_connection((node.ip, node.side_port), timeout=5) as s:
        s.sendall(b"watch\r\n")
        buf = b""
        deadline = time.time() + 10
        while buf.count(b".\n") < 2 and time.time() < deadline:
            buf += s.recv(4096)
    groups = [g for g in buf.decode().split(".\n") if g.strip()]
    assert len(groups) >= 2
    lines = groups[-1].strip().split("\n")
    assert sorted(l.split("\t")[0] for l in lines) == ["dev1", "dev2"]
    for l in lines:
        assert re.match(r"^dev\d+\t\d+\.\d\d$", l), l
        assert 0.0 <= float(l.split("\t")[1]) <= 100.0
