"""STARTTLS (RFC 6120 5): slixmpp verifying a self-signed certificate, the
same script against djabberd and Prosody; `openssl s_client -starttls xmpp`;
plain text pipelined behind <starttls/> never reaches the XML layer."""
import asyncio
import subprocess
import time

from .conftest import HEADER, Raw, closing, make_client, online


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_starttls_then_scram_and_messages(xmpp_tls):
    # djabberd offers SCRAM-*-PLUS (tls-unique) over TLS; Prosody 0.12 over
    # TLS 1.3 offers no -PLUS, so there the client uses plain SCRAM-SHA-1
    mech = "SCRAM-SHA-1-PLUS" if xmpp_tls.kind == "djabberd" else "SCRAM-SHA-1"

    async def go():
        a = make_client(xmpp_tls, "alice@localhost/t", "wonder", mech=mech, tls=xmpp_tls.cert)
        b = make_client(xmpp_tls, "bob@localhost/t", "builder", mech="PLAIN", tls=xmpp_tls.cert)
        await asyncio.wait_for(a.ready, 20)
        await asyncio.wait_for(b.ready, 20)
        assert a.tls_done and b.tls_done
        a.send_message(mto="bob@localhost", mbody="over tls", mtype="chat")
        m = await asyncio.wait_for(b.messages.get(), 10)
        assert m["body"] == "over tls"
        await closing(a, b)
    run(go())


def test_scram_plus_and_downgrade_refusal(djabberd, tmp_path):
    """Channel binding: SCRAM-SHA-256-PLUS binds to this TLS stream; a client
    that could bind but says it thinks we cannot ('y') is refused, since we
    offered -PLUS (RFC 5802 section 6)."""
    from .conftest import make_cert
    crt, key = make_cert(str(tmp_path))
    srv = djabberd("--require_tls=yes", "--tls_cert", crt, "--tls_key", key)

    async def go():
        a = make_client(srv, "alice@localhost/p", "wonder", mech="SCRAM-SHA-256-PLUS", tls=crt)
        await asyncio.wait_for(a.ready, 20)
        assert a.tls_done
        await closing(a)
        c = make_client(srv, "bob@localhost/y", "builder", mech="SCRAM-SHA-256", tls=crt)
        assert await asyncio.wait_for(c.auth_failed, 20)
        c.disconnect()
        await asyncio.sleep(0.2)
    run(go())


def test_tls_required_before_auth(xmpp_tls):
    raw = Raw(xmpp_tls)
    raw.send(HEADER)
    feats = raw.until("</stream:features>")
    assert "<starttls" in feats and "<required/>" in feats.replace(" ", "")
    assert "PLAIN" not in feats  # no mechanism is offered before TLS
    raw.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHdvbmRlcg==</auth>")
    out = raw.until("</failure>|</stream:stream>")
    assert "encryption-required" in out
    raw.close()


def test_openssl_s_client_starttls_xmpp(xmpp_tls):
    r = subprocess.run(["openssl", "s_client", "-starttls", "xmpp", "-xmpphost", "localhost", "-connect",
                        "127.0.0.1:%d" % xmpp_tls.port, "-CAfile", xmpp_tls.cert, "-verify_return_error",
                        "-verify_hostname", "localhost"],
                       input="", capture_output=True, text=True, timeout=30)
    assert "Verify return code: 0 (ok)" in r.stdout, r.stdout + r.stderr
    assert "BEGIN CERTIFICATE" in r.stdout


def test_plaintext_after_starttls_is_not_parsed(djabberd, tmp_path):
    from .conftest import make_cert
    crt, key = make_cert(str(tmp_path))
    srv = djabberd("--tls_cert", crt, "--tls_key", key)  # STARTTLS offered, not required

    async def go():
        b = await online(srv, "bob@localhost/r", "builder")
        raw = Raw(srv).login("carol", "cat")  # a logged-in plaintext session cannot STARTTLS any more
        raw.close()
        raw = Raw(srv)
        raw.send(HEADER)
        feats = raw.until("</stream:features>")
        assert "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'></starttls>" in feats
        # an attacker's plain text right behind <starttls/> (CVE-2011-0411 style)
        raw.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" + HEADER +
                 "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHdvbmRlcg==</auth>"
                 "<message to='bob@localhost' type='chat'><body>injected</body></message>")
        # the server switches to TLS right after </starttls>: the plain text
        # behind it is taken as a (bad) ClientHello and the connection ends
        # (the <proceed/> may or may not make it out before the close)
        out = raw.closed(timeout=10)
        assert "injected" not in out and "success" not in out
        await asyncio.sleep(0.5)
        assert b.messages.empty()
        await closing(b)
    run(go())
    t0 = time.time()
    assert srv.stat("starttls") == 1 and time.time() - t0 < 5
