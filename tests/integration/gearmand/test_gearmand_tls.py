"""gearmand --ssl: the job port speaks TLS (gearmand 1.1's --ssl,
--ssl-certificate, --ssl-key, --ssl-ca-file), driven by Python's ssl module.
(Debian's gearmand 1.1.20 and libgearman are built without TLS, so there is
no stock peer to compare with.)"""
import os
import socket
import ssl
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_gearmand_wire import Conn, packet  # noqa: E402


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate and a client certificate it signed, and a
    self-signed client certificate it did not."""
    d = str(tmp_path_factory.mktemp("pki"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=test-ca", cwd=d)
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
                "-subj", "/CN=" + ("localhost" if name == "server" else "worker-1"), cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", name + ".pem", "-days", "2", cwd=d)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.pem", "-days",
            "2", "-subj", "/CN=rogue", cwd=d)
    return d


class TlsConn(Conn):
    def __init__(self, port, ca, cert=None, key=None):
        ctx = ssl.create_default_context(cafile=ca)
        ctx.check_hostname = False                      # the certificate names localhost, we dial 127.0.0.1
        if cert:
            ctx.load_cert_chain(cert, key)
        self.s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
        self.buf = b""


def test_tls_job_port_serves_clients_workers_and_admin(daemon, pki):
    p = lambda n: os.path.join(pki, n)  # noqa: E731
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--ssl", "--ssl-certificate", p("server.pem"),
                            "--ssl-key", p("server.key")])
    c = TlsConn(d.port, p("ca.pem"))
    assert c.s.version() in ("TLSv1.2", "TLSv1.3")
    c.send("ECHO_REQ", "over tls")
    assert c.expect("ECHO_RES") == [b"over tls"]
    w = TlsConn(d.port, p("ca.pem"))
    w.send("CAN_DO", "secret")
    c.send("SUBMIT_JOB", "secret", "", b"x" * 100000)   # spans many TLS records
    h = c.expect("JOB_CREATED")[0]
    w.send("GRAB_JOB")
    assert w.expect("JOB_ASSIGN") == [h, b"secret", b"x" * 100000]
    w.send("WORK_COMPLETE", h, "done")
    assert c.expect("WORK_COMPLETE") == [h, b"done"]
    assert c.line("status") == "secret\t0\t0\t1\n.\n"
    # a plaintext client gets nothing it can use, and the server goes on
    plain = Conn(d.port)
    plain.raw(packet("ECHO_REQ", "plain"))
    with pytest.raises((EOFError, OSError, AssertionError)):
        plain.recv(timeout=3)
    c.send("ECHO_REQ", "still")
    assert c.expect("ECHO_RES") == [b"still"]


def test_tls_with_ca_file_requires_a_client_certificate_it_signed(daemon, pki):
    p = lambda n: os.path.join(pki, n)  # noqa: E731
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--ssl", "--ssl-certificate", p("server.pem"),
                            "--ssl-key", p("server.key"), "--ssl-ca-file", p("ca.pem")])
    ok = TlsConn(d.port, p("ca.pem"), p("client.pem"), p("client.key"))
    ok.send("ECHO_REQ", "known")
    assert ok.expect("ECHO_RES") == [b"known"]
    for cert in (None, "rogue"):
        with pytest.raises((ssl.SSLError, OSError, EOFError)):
            bad = TlsConn(d.port, p("ca.pem"), p(cert + ".pem") if cert else None, p(cert + ".key") if cert else None)
            bad.send("ECHO_REQ", "unknown")             # TLS 1.3: the refusal arrives after the handshake
            bad.recv(timeout=5)


def test_ssl_needs_a_certificate_and_key(daemon, pki, tmp_path):
    from conftest import bin_path
    r = subprocess.run([bin_path("gearmand"), "-p", "0", "-L", "127.0.0.1", "--ssl"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode != 0 and "--ssl-certificate" in r.stdout + r.stderr
    r = subprocess.run([bin_path("gearmand"), "-p", "0", "-L", "127.0.0.1", "--ssl", "--ssl-certificate",
                        os.path.join(pki, "server.pem"), "--ssl-key", str(tmp_path / "missing.key")],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "missing.key" in r.stdout + r.stderr
