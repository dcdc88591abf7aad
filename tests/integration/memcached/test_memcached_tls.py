"""memcached: TLS (-Z, -o ssl_chain_cert/ssl_key/ssl_min_version) over the
core's TLS bufferevents, driven by Python's ssl module: text, meta and binary
over TLS, notls: listeners staying plain, refresh_certs, bad settings."""
import socket
import ssl
import subprocess

import pytest

from conftest import bin_path, free_port
from mc_helpers import Raw, bin_request, bin_response, start


def make_cert(tmp_path, name="localhost"):
    cert, key = tmp_path / ("%s.crt" % name), tmp_path / ("%s.key" % name)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=%s" % name, "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class TlsRaw(Raw):
    def __init__(self, port, cafile, min_version=None):
        ctx = ssl.create_default_context(cafile=str(cafile))
        ctx.check_hostname = False
        if min_version:
            ctx.maximum_version = min_version
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s = ctx.wrap_socket(raw, server_hostname="localhost")
        self.buf = b""


def tls_daemon(daemon, tmp_path, *extra):
    cert, key = make_cert(tmp_path)
    d = start(daemon, "-Z", "-o", "ssl_chain_cert=%s,ssl_key=%s" % (cert, key), *extra)
    return d, cert


def test_text_meta_and_binary_over_tls(daemon, tmp_path):
    d, cert = tls_daemon(daemon, tmp_path)
    r = TlsRaw(d.port, cert)
    assert r.s.version() in ("TLSv1.2", "TLSv1.3")
    assert r.cmd(b"set k 0 0 5\r\nhello\r\n") == b"STORED"
    big = b"x" * 300000
    assert r.cmd(b"set big 0 0 %d\r\n%s\r\n" % (len(big), big)) == b"STORED"
    r.send(b"get k big\r\n")
    assert r.line() == b"VALUE k 0 5"
    assert r.exact(7) == b"hello\r\n"
    assert r.line() == b"VALUE big 0 %d" % len(big)
    assert r.exact(len(big) + 2) == big + b"\r\n"
    assert r.line() == b"END"
    assert r.cmd(b"mg k v\r\n") == b"VA 5"
    assert r.line() == b"hello"
    b = TlsRaw(d.port, cert)
    b.send(bin_request(0x00, key=b"k", opaque=7))
    _op, status, opaque, _c, _e, _k, value = bin_response(b)
    assert (status, opaque, value) == (0, 7, b"hello")
    st = r.stats("settings")
    assert st["ssl_enabled"] == "yes" and st["ssl_chain_cert"] == str(cert)


def test_plain_client_on_a_tls_port_gets_nothing(daemon, tmp_path):
    d, _cert = tls_daemon(daemon, tmp_path)
    r = Raw(d.port, timeout=5)
    r.send(b"version\r\n")
    assert r.closed()
    assert not r.buf.startswith(b"VERSION")


def test_notls_listener_stays_plain(daemon, tmp_path):
    cert, key = make_cert(tmp_path)
    plain = free_port()
    d = daemon("memcached", ["-p", "{port}", "-l", "127.0.0.1,notls:127.0.0.1:%d" % plain, "-U", "0", "-Z",
                             "-o", "ssl_chain_cert=%s,ssl_key=%s" % (cert, key)])
    assert Raw(plain).cmd(b"version\r\n").startswith(b"VERSION ")
    assert TlsRaw(d.port, cert).cmd(b"version\r\n").startswith(b"VERSION ")


@pytest.mark.parametrize("version", ["3", "tlsv1.3"])   # memcached's number; our earlier name still works
def test_min_version_tls13_refuses_tls12(daemon, tmp_path, version):
    d, cert = tls_daemon(daemon, tmp_path, "-o", "ssl_min_version=%s" % version)
    with pytest.raises(ssl.SSLError):
        TlsRaw(d.port, cert, min_version=ssl.TLSVersion.TLSv1_2).cmd(b"version\r\n")
    assert TlsRaw(d.port, cert).s.version() == "TLSv1.3"


def test_refresh_certs_serves_the_new_certificate(daemon, tmp_path):
    d, cert = tls_daemon(daemon, tmp_path)
    old = TlsRaw(d.port, cert)
    # Replace the files with a new pair, then ask for a refresh.
    new_cert, new_key = make_cert(tmp_path, "renewed")
    (tmp_path / "localhost.crt").write_bytes(new_cert.read_bytes())
    (tmp_path / "localhost.key").write_bytes(new_key.read_bytes())
    assert old.cmd(b"refresh_certs\r\n") == b"OK"
    r = TlsRaw(d.port, new_cert)   # verifies against the new certificate only
    assert r.cmd(b"version\r\n").startswith(b"VERSION ")
    assert old.cmd(b"version\r\n").startswith(b"VERSION ")   # the old session goes on


@pytest.mark.parametrize("args, message", [
    (["-Z"], "Error loading the certificate chain: (null) : "),
    (["-Z", "-o", "ssl_chain_cert=/nonexistent.crt,ssl_key=/nonexistent.key"],
     "Error loading the certificate chain: /nonexistent.crt : "),
    (["-Z", "-o", "ssl_chain_cert=a,ssl_key=b,ssl_min_version=sslv3"], "could not parse argument to ssl_min_version"),
])
def test_bad_tls_settings_refuse_to_start(args, message):
    """memcached 1.6.18's messages (test_memcached_tls_clientcert.py checks more against it)."""
    p = subprocess.run([bin_path("memcached"), "-p", str(free_port()), "-l", "127.0.0.1"] + args,
                       capture_output=True, text=True, timeout=10)
    assert p.returncode != 0
    assert message in p.stderr + p.stdout


def test_refresh_certs_without_tls_is_an_error(daemon):
    d = start(daemon)
    assert Raw(d.port).cmd(b"refresh_certs\r\n") == b"Error TLS not enabled"   # as memcached 1.6.18
