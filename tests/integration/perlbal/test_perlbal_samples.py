"""Debian's Perlbal sample configs (from the perlbal package) load unchanged
except for addresses and paths rewritten at test time (ports to free ones,
relative cert/nodefile paths to a temp dir, docroots to temp dirs), and
serve (echoservice.conf with the EchoService plugin). Also: TLS listeners
(enable_ssl with ssl_key_file/ssl_cert_file), for HTTP and echo services."""
import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from conftest import bin_path, free_port
from pb_helpers import Nginx, console, get, start_perlbal

EXAMPLES = "/usr/share/doc/perlbal/examples"
pytestmark = [
    pytest.mark.skipif(not os.path.exists(bin_path("perlbal")), reason="perlbal not built"),
    pytest.mark.skipif(not os.path.isdir(EXAMPLES), reason="Debian perlbal package (sample configs) not installed"),
]


# The samples enable their management service last: start_perlbal waits on
# its port, so that every listener before it is open too (the listening
# sockets are made one after another at start; a client may otherwise reach
# the first before the next exists).
def sample(name, subst):
    with open(os.path.join(EXAMPLES, name)) as f:
        text = f.read()
    for a, b in subst:
        assert a in text, "sample %s no longer contains %r" % (name, a)
        text = text.replace(a, b)
    return text


def make_cert(tmp):
    certs = os.path.join(tmp, "certs")
    os.makedirs(certs, exist_ok=True)
    key, cert = os.path.join(certs, "server-key.pem"), os.path.join(certs, "server-cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-keyout", key, "-out", cert, "-days", "2",
                    "-nodes", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    return key, cert


def test_sample_webserver_conf(daemon, tmp_path):
    port, mport = free_port(), free_port()
    text = sample("webserver.conf", [("0.0.0.0:80", "127.0.0.1:%d" % port), ("127.0.0.1:16000", "127.0.0.1:%d" % mport)])
    start_perlbal(daemon, str(tmp_path), text, mport)
    r, body = get(port, "/perlbal/copyright")          # docroot /usr/share/doc/ as in the sample
    assert r.status == 200 and b"Perlbal" in body
    r, body = get(port, "/perlbal/")
    assert r.status == 200 and b"copyright" in body      # dirindexing = 1
    assert "docs 127.0.0.1:%d ENABLED" % port in console(mport, "show service")


def test_sample_load_balancer_conf(daemon, tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "hello.txt").write_text("hello from nginx\n")
    ng = Nginx(str(tmp_path), str(www))
    try:
        conf_dir = tmp_path / "conf"
        conf_dir.mkdir()
        shutil.copy(os.path.join(EXAMPLES, "nodelist.dat"), str(conf_dir / "nodelist.dat"))
        p1, p2, mport = free_port(), free_port(), free_port()
        text = sample("load-balancer.conf", [("0.0.0.0:80", "127.0.0.1:%d" % p1), ("0.0.0.0:81", "127.0.0.1:%d" % p2),
                                             ("127.0.0.1:16000", "127.0.0.1:%d" % mport),
                                             ("conf/nodelist.dat", str(conf_dir / "nodelist.dat"))])
        start_perlbal(daemon, str(tmp_path), text, mport)
        out = console(mport, "show pool")
        assert "my_apaches nodes 4" in out and "dynamic nodes 1" in out   # nodefile read
        # swap the sample's 10.0.0.x nodes for our nginx, live
        lines = ["POOL my_apaches REMOVE 10.0.0.%d%s" % (n, p) for n, p in
                 ((10, ":8080"), (11, ":8080"), (12, ""), (13, ":8081"))]
        out = console(mport, *(lines + ["POOL my_apaches ADD 127.0.0.1:%d" % ng.port]))
        assert out.count("OK") == 5, out
        r, body = get(p1, "/hello.txt")
        assert r.status == 200 and body == b"hello from nginx\n"
        # the nodefile is re-read when it changes
        (conf_dir / "nodelist.dat").write_text("127.0.0.1:%d  # nginx\n" % ng.port)
        os.utime(str(conf_dir / "nodelist.dat"), (1, 1))
        deadline = time.time() + 5
        while "127.0.0.1:%d" % ng.port not in console(mport, "show pool dynamic"):
            assert time.time() < deadline
            time.sleep(0.2)
        r, body = get(p2, "/hello.txt")
        assert r.status == 200 and body == b"hello from nginx\n"
    finally:
        ng.stop()


def test_sample_virtual_hosts_conf(daemon, tmp_path):
    site, example = tmp_path / "site.com", tmp_path / "example.com"
    for d, text in ((site, "site"), (example, "example")):
        d.mkdir()
        (d / "index.html").write_text("this is %s\n" % text)
    port, mport = free_port(), free_port()
    text = sample("virtual-hosts.conf", [("0.0.0.0:80", "127.0.0.1:%d" % port),
                                         ("127.0.0.1:16000", "127.0.0.1:%d" % mport),
                                         ("/var/www/site.com/", str(site) + "/"),
                                         ("/var/www/example.com/", str(example) + "/")])
    start_perlbal(daemon, str(tmp_path), text, mport)
    r, body = get(port, "/", headers={"Host": "www.site.com"})
    assert body == b"this is site\n"
    r, body = get(port, "/", headers={"Host": "images.example.com"})
    assert body == b"this is example\n"
    r, _ = get(port, "/", headers={"Host": "nowhere.net"})
    assert r.status == 404


def test_sample_ssl_conf_serves_https(daemon, tmp_path):
    key, cert = make_cert(str(tmp_path))
    www = tmp_path / "www"
    www.mkdir()
    (www / "s.txt").write_text("over tls\n")
    ng = Nginx(str(tmp_path), str(www))
    try:
        port, mport = free_port(), free_port()
        text = sample("ssl.conf", [("0.0.0.0:443", "127.0.0.1:%d" % port), ("127.0.0.1:16000", "127.0.0.1:%d" % mport),
                                   ("certs/server-key.pem", key), ("certs/server-cert.pem", cert),
                                   ("POOL my_apaches ADD 10.0.0.10:8080", "POOL my_apaches ADD 127.0.0.1:%d" % ng.port),
                                   ("POOL my_apaches ADD 10.0.0.11:8080", "")])
        start_perlbal(daemon, str(tmp_path), text, mport)
        out = subprocess.run(["curl", "-sk", "https://127.0.0.1:%d/s.txt" % port], capture_output=True, timeout=10)
        assert out.stdout == b"over tls\n"
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        for _ in range(3):                                     # keep-alive over TLS
            c.request("GET", "/s.txt")
            r = c.getresponse()
            assert r.status == 200 and r.read() == b"over tls\n"
        c.close()
    finally:
        ng.stop()


def test_tls_web_server_bad_cert_path_fails_start(daemon, tmp_path):
    port = free_port()
    conf = """
CREATE SERVICE s
  SET role = web_server
  SET listen = 127.0.0.1:%d
  SET docroot = %s
  SET enable_ssl = on
  SET ssl_key_file = %s/missing-key.pem
  SET ssl_cert_file = %s/missing-cert.pem
ENABLE s
""" % (port, tmp_path, tmp_path, tmp_path)
    path = tmp_path / "bad.conf"
    path.write_text(conf)
    out = subprocess.run([bin_path("perlbal"), "-c", str(path)], capture_output=True, text=True, timeout=10)
    assert out.returncode != 0
    assert "certificate" in out.stderr or "certificate" in out.stdout


def test_sample_not_modified_plugin_conf(daemon, tmp_path):
    port = free_port()
    text = sample("not-modified-plugin.conf", [("0.0.0.0:8001", "127.0.0.1:%d" % port)])
    start_perlbal(daemon, str(tmp_path), text, port)
    ims = {"If-Modified-Since": "Sat, 29 Oct 1994 19:43:31 GMT"}
    r, body = get(port, "/any", headers=dict(ims, Host="immutable.example.com"))
    assert r.status == 304 and body == b""
    r, _ = get(port, "/any", headers={"Host": "immutable.example.com"})   # no If-Modified-Since: no vhost -> 404
    assert r.status == 404
    r, _ = get(port, "/any", headers=dict(ims, Host="mutable.example.com"))
    assert r.status == 404


def test_sample_echoservice_conf(daemon, tmp_path):
    """LOAD EchoService adds the `echo` role and its echo_delay tunable: both
    services of the sample echo lines, the delayed one after its 3 s."""
    p1, p2, mport = free_port(), free_port(), free_port()
    text = sample("echoservice.conf", [("0.0.0.0:7123", "127.0.0.1:%d" % p1), ("0.0.0.0:7124", "127.0.0.1:%d" % p2),
                                       ("127.0.0.1:16000", "127.0.0.1:%d" % mport)])
    start_perlbal(daemon, str(tmp_path), text, mport)
    delayed = socket.create_connection(("127.0.0.1", p2), timeout=10)
    t0 = time.monotonic()
    delayed.sendall(b"later\n")
    with socket.create_connection(("127.0.0.1", p1), timeout=5) as s:
        s.sendall(b"hello\r\nworld\npart")
        assert recv_exactly(s, 14) == b"hello\r\nworld\r\n"
        s.sendall(b"ial\n")
        assert recv_exactly(s, 9) == b"partial\r\n"
    out = console(mport, "show service")
    assert "echo 127.0.0.1:%d ENABLED" % p1 in out and "echo_delayed 127.0.0.1:%d ENABLED" % p2 in out
    assert "SET echo_delay = 3" in console(mport, "dumpconfig")
    assert recv_exactly(delayed, 7) == b"later\r\n"
    assert time.monotonic() - t0 >= 3.0
    delayed.close()


def recv_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        assert chunk, "closed after %r" % data
        data += chunk
    return data


def test_tls_web_server_large_file_and_range(daemon, tmp_path):
    key, cert = make_cert(str(tmp_path))
    www = tmp_path / "www"
    www.mkdir()
    data = os.urandom(300000)                  # above the read-and-send size: the file path of the buffer
    (www / "big.bin").write_bytes(data)
    port = free_port()
    conf = """
CREATE SERVICE s
  SET role = web_server
  SET listen = 127.0.0.1:%d
  SET docroot = %s
  SET persist_client = on
  SET enable_ssl = on
  SET ssl_key_file = %s
  SET ssl_cert_file = %s
ENABLE s
""" % (port, www, key, cert)
    start_perlbal(daemon, str(tmp_path), conf, port)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    c.request("GET", "/big.bin")
    r = c.getresponse()
    assert r.status == 200 and r.read() == data
    c.request("GET", "/big.bin", headers={"Range": "bytes=1000-1999"})
    r = c.getresponse()
    assert r.status == 206 and r.read() == data[1000:2000]
    c.close()
    out = subprocess.run(["curl", "-sk", "https://127.0.0.1:%d/big.bin" % port], capture_output=True, timeout=10)
    assert out.stdout == data


def test_tls_echo_service(daemon, tmp_path):
    key, cert = make_cert(str(tmp_path))
    port = free_port()
    conf = """
LOAD EchoService
CREATE SERVICE e
  SET role = echo
  SET listen = 127.0.0.1:%d
  SET enable_ssl = on
  SET ssl_key_file = %s
  SET ssl_cert_file = %s
ENABLE e
""" % (port, key, cert)
    start_perlbal(daemon, str(tmp_path), conf, port)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10)) as s:
        s.sendall(b"secret\n")
        assert recv_exactly(s, 8) == b"secret\r\n"
