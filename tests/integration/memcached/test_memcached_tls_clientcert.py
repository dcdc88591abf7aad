"""memcached: TLS client certificates and the rest of memcached 1.6.18's
ssl_* options, each case run against ours and Debian's memcached (built
with TLS) with the same certificates: ssl_verify_mode 0..3 with clients
holding no certificate, one signed by the ssl_ca_cert CA and one from
another CA; ssl_min_version; ssl_keyformat (DER); the session cache;
kernel TLS; `stats settings` ssl_* lines and the `stats` ssl counters;
refresh_certs succeeding and failing; start-up refusals."""
import socket
import ssl
import subprocess

import pytest

from conftest import bin_path, free_port
from mc_helpers import PEER, Raw, start

IMPLS = ["ours", "memcached"]


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two CAs; the server's and client1's certificates signed by ca1,
    client2's by ca2; the server key also in DER."""
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca1", "ca2"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=%s" % ca,
                "-keyout", str(d / ("%s.key" % ca)), "-out", str(d / ("%s.crt" % ca)))
    for name, ca in (("server", "ca1"), ("client1", "ca1"), ("client2", "ca2")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % name,
                "-keyout", str(d / ("%s.key" % name)), "-out", str(d / ("%s.csr" % name)))
        openssl("x509", "-req", "-in", str(d / ("%s.csr" % name)), "-CA", str(d / ("%s.crt" % ca)),
                "-CAkey", str(d / ("%s.key" % ca)), "-CAcreateserial", "-days", "2",
                "-out", str(d / ("%s.crt" % name)))
    openssl("pkey", "-in", str(d / "server.key"), "-outform", "DER", "-out", str(d / "server.der"))
    return d


def tls_start(daemon, pki, impl, *opts, key=None):
    o = "ssl_chain_cert=%s,ssl_key=%s" % (pki / "server.crt", key or pki / "server.key")
    if opts:
        o += "," + ",".join(opts)
    return start(daemon, "-Z", "-o", o, impl=impl)


def client_ctx(pki, client=None, max_version=None):
    ctx = ssl.create_default_context(cafile=str(pki / "ca1.crt"))
    ctx.check_hostname = False
    if client:
        ctx.load_cert_chain(str(pki / ("%s.crt" % client)), str(pki / ("%s.key" % client)))
    if max_version:
        ctx.maximum_version = max_version
    return ctx


def talk(port, ctx, session=None):
    """`version` over TLS: the reply line, or None when the server refused
    the handshake (with TLS 1.3 a refused client certificate shows as an
    alert or a close at the first read)."""
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname="server", session=session)
        s.sendall(b"version\r\n")
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                return None
            buf += chunk
        s.close()
        return buf.split(b"\r\n")[0]
    except (ssl.SSLError, ConnectionError, OSError):
        return None


def accepted(port, pki, client):
    line = talk(port, client_ctx(pki, client))
    return line is not None and line.startswith(b"VERSION ")


# mode -> which of (no certificate, client1 from ca1, client2 from ca2) get in
MATRIX = {
    "0": (True, True, True),      # none: no certificate asked for
    "1": (True, True, False),     # request: none is fine, a sent one is checked
    "2": (False, True, False),    # require
    "3": (False, True, False),    # once (renegotiation is off: as require)
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", sorted(MATRIX))
def test_verify_modes_with_and_without_client_certificates(daemon, pki, impl, mode):
    d = tls_start(daemon, pki, impl, "ssl_verify_mode=%s" % mode, "ssl_ca_cert=%s" % (pki / "ca1.crt"))
    before = int(Raw_tls(d.port, pki).stats()["ssl_handshake_errors"])
    got = tuple(accepted(d.port, pki, c) for c in (None, "client1", "client2"))
    assert got == MATRIX[mode]
    st = Raw_tls(d.port, pki).stats()
    refused = MATRIX[mode].count(False)
    if impl == "ours":   # every refused handshake counted (memcached: only those failing in its accept)
        assert int(st["ssl_handshake_errors"]) - before == refused
    assert "time_since_server_cert_refresh" in st


def test_verify_mode_without_ca_file_refuses_every_sent_certificate(daemon, pki):
    for impl in IMPLS:
        d = tls_start(daemon, pki, impl, "ssl_verify_mode=1")
        assert (accepted(d.port, pki, None), accepted(d.port, pki, "client1")) == (True, False), impl


class Raw_tls(Raw):
    def __init__(self, port, pki, client="client1"):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s = client_ctx(pki, client).wrap_socket(raw, server_hostname="server")
        self.port = port
        self.buf = b""


SSL_SETTINGS = ["ssl_enabled", "ssl_chain_cert", "ssl_key", "ssl_verify_mode", "ssl_keyformat", "ssl_ciphers",
                "ssl_ca_cert", "ssl_wbuf_size", "ssl_session_cache", "ssl_kernel_tls", "ssl_min_version"]


@pytest.mark.parametrize("opts", [
    (),
    ("ssl_verify_mode=2", "ssl_ca_cert={ca}", "ssl_wbuf_size=32", "ssl_session_cache", "ssl_min_version=3"),
    ("ssl_verify_mode=3", "ssl_ca_cert={ca}", "ssl_ciphers=ECDHE-RSA-AES128-GCM-SHA256", "ssl_min_version=1"),
])
def test_stats_settings_ssl_lines_as_memcached(daemon, pki, opts):
    opts = [o.format(ca=pki / "ca1.crt") for o in opts]
    seen = {}
    for impl in IMPLS:
        d = tls_start(daemon, pki, impl, *opts)
        st = Raw_tls(d.port, pki).stats("settings")
        keys = [k for k in st if k.startswith("ssl_")]
        seen[impl] = (keys, {k: st[k] for k in keys})
    assert seen["ours"] == seen["memcached"]
    assert seen["ours"][0] == SSL_SETTINGS


def test_stats_settings_ssl_lines_without_tls_as_memcached(daemon):
    seen = {}
    for impl in IMPLS:
        st = Raw(start(daemon, impl=impl).port).stats("settings")
        seen[impl] = [(k, v) for k, v in st.items() if k.startswith("ssl_")]
    assert seen["ours"] == seen["memcached"]
    assert dict(seen["ours"])["ssl_enabled"] == "no"


def test_stats_ssl_counters_named_and_placed_as_memcached(daemon, pki):
    names = {}
    for impl in IMPLS:
        d = tls_start(daemon, pki, impl, "ssl_session_cache")
        st = Raw_tls(d.port, pki).stats()
        keys = list(st)
        i = keys.index("ssl_new_sessions")
        names[impl] = keys[i:i + 3] + [keys[i - 1] if keys[i - 1].startswith(("log_", "ssl")) else "?"]
        if impl == "ours":   # memcached's starts at ~62: its clock is moved back after the context is made
            assert int(st["time_since_server_cert_refresh"]) <= 3
    assert names["ours"] == names["memcached"]
    assert names["ours"][:3] == ["ssl_new_sessions", "ssl_handshake_errors", "time_since_server_cert_refresh"]


def test_plain_text_client_counts_a_handshake_error(daemon, pki):
    d = tls_start(daemon, pki, "ours")
    before = int(Raw_tls(d.port, pki).stats()["ssl_handshake_errors"])
    r = Raw(d.port, timeout=5)
    r.send(b"version\r\n")
    with pytest.raises((EOFError, ConnectionError)):
        r.line()
    assert int(Raw_tls(d.port, pki).stats()["ssl_handshake_errors"]) == before + 1


@pytest.mark.parametrize("impl", IMPLS)
def test_session_cache_resumes_and_counts_new_sessions(daemon, pki, impl):
    d = tls_start(daemon, pki, impl, "ssl_session_cache")
    ctx = client_ctx(pki, "client1", max_version=ssl.TLSVersion.TLSv1_2)
    raw = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="server")
    s.sendall(b"version\r\n")
    assert s.recv(100).startswith(b"VERSION")
    sess = s.session
    s.close()
    raw = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    s2 = ctx.wrap_socket(raw, server_hostname="server", session=sess)
    s2.sendall(b"version\r\n")
    assert s2.recv(100).startswith(b"VERSION")
    assert s2.session_reused
    s2.close()
    assert Raw_tls(d.port, pki).stats()["ssl_new_sessions"] == "2"   # the first and this one (not the resumed)


@pytest.mark.parametrize("impl", IMPLS)
def test_without_session_cache_tickets_still_resume_and_no_counter(daemon, pki, impl):
    """As memcached: ssl_session_cache off turns the server's session cache
    off, not TLS 1.2 session tickets; ssl_new_sessions is not shown."""
    d = tls_start(daemon, pki, impl)
    ctx = client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2)
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", d.port), timeout=10), server_hostname="server")
    s.sendall(b"version\r\n")
    s.recv(100)
    sess = s.session
    s.close()
    s2 = ctx.wrap_socket(socket.create_connection(("127.0.0.1", d.port), timeout=10), server_hostname="server",
                         session=sess)
    s2.sendall(b"version\r\n")
    assert s2.recv(100).startswith(b"VERSION")
    assert s2.session_reused
    assert "ssl_new_sessions" not in Raw_tls(d.port, pki).stats()


@pytest.mark.parametrize("impl", IMPLS)
def test_min_version_3_refuses_tls12_and_der_key_format(daemon, pki, impl):
    d = tls_start(daemon, pki, impl, "ssl_min_version=3", "ssl_keyformat=2", key=pki / "server.der")
    assert talk(d.port, client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2)) is None
    assert talk(d.port, client_ctx(pki)).startswith(b"VERSION ")


@pytest.mark.parametrize("impl", IMPLS)
def test_kernel_tls_option_serves(daemon, pki, impl):
    d = tls_start(daemon, pki, impl, "ssl_kernel_tls")
    r = Raw_tls(d.port, pki)
    big = b"v" * 200000
    assert r.cmd(b"set k 0 0 %d\r\n%s\r\n" % (len(big), big)) == b"STORED"
    r.send(b"get k\r\n")
    assert r.line() == b"VALUE k 0 %d" % len(big)
    assert r.exact(len(big) + 2) == big + b"\r\n"
    assert r.line() == b"END"
    assert r.stats("settings")["ssl_kernel_tls"] == "yes"


def test_refresh_certs_rereads_the_ca_file(daemon, pki, tmp_path):
    """The CA file is read again: a client of the new CA gets in after."""
    for impl in IMPLS:
        ca = tmp_path / ("ca-%s.crt" % impl)
        ca.write_bytes((pki / "ca1.crt").read_bytes())
        d = tls_start(daemon, pki, impl, "ssl_verify_mode=2", "ssl_ca_cert=%s" % ca)
        assert not accepted(d.port, pki, "client2")
        ca.write_bytes((pki / "ca1.crt").read_bytes() + (pki / "ca2.crt").read_bytes())
        assert Raw_tls(d.port, pki).cmd(b"refresh_certs\r\n") == b"OK", impl
        assert accepted(d.port, pki, "client2"), impl
        assert accepted(d.port, pki, "client1"), impl


def test_refresh_certs_failures_answer_as_memcached(daemon, pki, tmp_path):
    replies = {}
    for impl in IMPLS:
        crt, key, ca = (tmp_path / ("%s.%s" % (impl, x)) for x in ("crt", "key", "ca"))
        crt.write_bytes((pki / "server.crt").read_bytes())
        key.write_bytes((pki / "server.key").read_bytes())
        ca.write_bytes((pki / "ca1.crt").read_bytes())
        d = start(daemon, "-Z", "-o", "ssl_chain_cert=%s,ssl_key=%s,ssl_ca_cert=%s" % (crt, key, ca), impl=impl)
        r = Raw_tls(d.port, pki)
        out = [r.cmd(b"refresh_certs\r\n")]
        key.write_bytes((pki / "client1.key").read_bytes())      # a key that does not match
        out.append(r.cmd(b"refresh_certs\r\n"))
        key.write_bytes((pki / "server.key").read_bytes())
        ca.unlink()                                            # the CA file gone
        out.append(r.cmd(b"refresh_certs\r\n"))
        ca.write_bytes((pki / "ca1.crt").read_bytes())
        crt.unlink()                                           # the certificate gone
        out.append(r.cmd(b"refresh_certs\r\n"))
        crt.write_bytes((pki / "server.crt").read_bytes())
        out.append(r.cmd(b"refresh_certs\r\n"))
        # still serving new clients after the failures
        assert accepted(d.port, pki, "client1")
        replies[impl] = [ln.replace(impl.encode(), b"IMPL") for ln in out]
    assert replies["ours"] == replies["memcached"]
    assert replies["ours"][0] == b"OK" and replies["ours"][-1] == b"OK"
    assert replies["ours"][1].startswith(b"Error loading the key: ")
    assert replies["ours"][2].startswith(b"Error loading the CA certificate: ")
    assert replies["ours"][3].startswith(b"Error loading the certificate chain: ")


@pytest.mark.parametrize("opts, message", [
    ("ssl_verify_mode=4", "Invalid ssl_verify_mode. Use help to see valid options."),
    ("ssl_verify_mode=x", "could not parse argument to ssl_verify_mode"),
    ("ssl_verify_mode", "Missing ssl_verify_mode argument"),
    ("ssl_min_version=4", "Invalid ssl_min_version. Use help to see valid options."),
    ("ssl_min_version=high", "could not parse argument to ssl_min_version"),
    ("ssl_keyformat=x", "could not parse argument to ssl_keyformat"),
    ("ssl_wbuf_size=x", "could not parse argument to ssl_wbuf_size"),
    ("ssl_ciphers=BOGUS", "Error setting the provided cipher(s): BOGUS"),
    ("ssl_ca_cert=/nonexistent/ca.crt", "Error loading the CA certificate: /nonexistent/ca.crt : "),
    ("ssl_keyformat=3", "Error loading the key: "),
])
def test_bad_ssl_options_refused_with_memcacheds_message(pki, opts, message):
    o = "ssl_chain_cert=%s,ssl_key=%s,%s" % (pki / "server.crt", pki / "server.key", opts)
    for binary in (bin_path("memcached"), PEER):
        p = subprocess.run([binary, "-p", str(free_port()), "-U", "0", "-l", "127.0.0.1", "-u", "root", "-Z",
                            "-o", o], capture_output=True, text=True, timeout=10)
        assert p.returncode != 0, binary
        assert message in p.stderr + p.stdout, binary
