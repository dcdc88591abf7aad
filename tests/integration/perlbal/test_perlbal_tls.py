"""TLS beyond Perlbal's basics: client certificates (ssl_verify_mode and
ssl_ca_path, Perlbal's IO::Socket::SSL options) and the certificate
re-read on SIGHUP without a restart (new connections get the new one)."""
import os
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import bin_path, free_port
from pb_helpers import start_perlbal

pytestmark = pytest.mark.skipif(not os.path.exists(bin_path("perlbal")), reason="perlbal not built")


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    key, cert = os.path.join(d, name + "-key.pem"), os.path.join(d, name + ".pem")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-keyout", key, "-out", cert, "-days", "2", "-nodes",
            "-subj", "/CN=%s" % name)
    return key, cert


def make_signed(d, name, ca_key, ca_cert):
    key, csr, cert = (os.path.join(d, name + s) for s in ("-key.pem", ".csr", ".pem"))
    openssl("req", "-newkey", "rsa:2048", "-keyout", key, "-out", csr, "-nodes", "-subj", "/CN=%s" % name)
    openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
            "-days", "2")
    return key, cert


def tls_conf(port, www, key, cert, extra=""):
    return """
CREATE SERVICE s
  SET role = web_server
  SET listen = 127.0.0.1:%d
  SET docroot = %s
  SET enable_ssl = on
  SET ssl_key_file = %s
  SET ssl_cert_file = %s
%s
ENABLE s
""" % (port, www, key, cert, extra)


def fetch(port, client_cert=None):
    """GET /f.txt over TLS; the response bytes, or the ssl/socket error."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if client_cert:
        ctx.load_cert_chain(client_cert[1], client_cert[0])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"GET /f.txt HTTP/1.0\r\n\r\n")
                out = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return out
                    out += chunk
    except (ssl.SSLError, OSError) as e:
        return e


def served_cert_pem(port):
    return ssl.get_server_certificate(("127.0.0.1", port), timeout=5)


@pytest.fixture
def pki(tmp_path):
    d = str(tmp_path / "pki")
    os.makedirs(d)
    ca_key, ca_cert = make_ca(d, "ca")
    other_key, other_cert = make_ca(d, "other-ca")
    return {
        "ca": ca_cert,
        "server": make_signed(d, "server", ca_key, ca_cert),
        "client": make_signed(d, "client", ca_key, ca_cert),
        "stranger": make_signed(d, "stranger", other_key, other_cert),
    }


@pytest.fixture
def www(tmp_path):
    w = tmp_path / "www"
    w.mkdir()
    (w / "f.txt").write_text("secret file\n")
    return w


def test_client_certificate_required_by_ssl_verify_mode_3(daemon, tmp_path, pki, www):
    port = free_port()
    key, cert = pki["server"]
    start_perlbal(daemon, str(tmp_path), tls_conf(port, www, key, cert,
                                                  "  SET ssl_ca_path = %s\n  SET ssl_verify_mode = 3\n" % pki["ca"]),
                  port)
    out = fetch(port, pki["client"])                      # signed by the configured CA: served
    assert isinstance(out, bytes) and out.startswith(b"HTTP/1.0 200") and out.endswith(b"secret file\n")
    out = fetch(port)                                     # no certificate: refused in the handshake
    assert not isinstance(out, bytes) or b"secret file" not in out
    out = fetch(port, pki["stranger"])                    # another CA's certificate: refused
    assert not isinstance(out, bytes) or b"secret file" not in out


def test_client_certificate_optional_with_ssl_verify_mode_1(daemon, tmp_path, pki, www):
    port = free_port()
    key, cert = pki["server"]
    # a directory of hashed CA certificates, as Perlbal's ssl_ca_path
    cadir = tmp_path / "cadir"
    cadir.mkdir()
    os.symlink(pki["ca"], str(cadir / "ca.pem"))
    openssl("rehash", str(cadir))
    start_perlbal(daemon, str(tmp_path), tls_conf(port, www, key, cert,
                                                  "  SET ssl_ca_path = %s\n  SET ssl_verify_mode = 1\n" % cadir), port)
    for who in (None, pki["client"]):                     # none, or a good one: served
        out = fetch(port, who)
        assert isinstance(out, bytes) and out.endswith(b"secret file\n"), out
    out = fetch(port, pki["stranger"])                    # one that does not verify: refused
    assert not isinstance(out, bytes) or b"secret file" not in out


def test_bad_ssl_verify_mode_refuses_to_start(tmp_path, pki, www):
    port = free_port()
    key, cert = pki["server"]
    conf = tmp_path / "bad.conf"
    conf.write_text(tls_conf(port, www, key, cert, "  SET ssl_verify_mode = 8\n"))
    p = subprocess.run([bin_path("perlbal"), "--config=%s" % conf], capture_output=True, text=True, timeout=10)
    assert p.returncode != 0 and "ssl_verify_mode" in (p.stdout + p.stderr)


def test_certificate_reloaded_on_hup(daemon, tmp_path, pki, www):
    port = free_port()
    d = tmp_path / "live"
    d.mkdir()
    key, cert = str(d / "key.pem"), str(d / "cert.pem")
    old_key, old_cert = make_ca(str(tmp_path), "old-server")
    new_key, new_cert = pki["server"]
    for src, dst in ((old_key, key), (old_cert, cert)):
        with open(src) as f, open(dst, "w") as g:
            g.write(f.read())
    proc = start_perlbal(daemon, str(tmp_path), tls_conf(port, www, key, cert), port)
    old_pem = open(old_cert).read()
    assert ssl.PEM_cert_to_DER_cert(served_cert_pem(port)) == ssl.PEM_cert_to_DER_cert(old_pem)
    # a broken pair on HUP: the old certificate stays in service
    with open(cert, "w") as g:
        g.write("not a certificate\n")
    os.kill(proc.pid, signal.SIGHUP)
    time.sleep(0.3)
    assert ssl.PEM_cert_to_DER_cert(served_cert_pem(port)) == ssl.PEM_cert_to_DER_cert(old_pem)
    assert isinstance(fetch(port), bytes)
    # the new pair on HUP: new connections get it, without a restart
    for src, dst in ((new_key, key), (new_cert, cert)):
        with open(src) as f, open(dst, "w") as g:
            g.write(f.read())
    pid = proc.pid
    os.kill(pid, signal.SIGHUP)
    new_der = ssl.PEM_cert_to_DER_cert(open(new_cert).read())
    deadline = time.time() + 5
    while ssl.PEM_cert_to_DER_cert(served_cert_pem(port)) != new_der:
        assert time.time() < deadline, "certificate not reloaded"
        time.sleep(0.05)
    out = fetch(port)
    assert isinstance(out, bytes) and out.endswith(b"secret file\n")
    assert proc.pid == pid and proc.running()
