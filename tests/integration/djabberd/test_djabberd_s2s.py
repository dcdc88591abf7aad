"""S2S with Server Dialback (XEP-0220) against a private Prosody as the other
server: messages and presence both ways. Each server gets its own loopback
address as its domain (an IP-literal domain needs no DNS: Prosody connects
straight to ADDRESS:5269, and so do we), so the fixed s2s port never
collides. Plus dialback on the wire with a known secret."""
import asyncio
import hashlib
import hmac
import os
import random
import re
import shutil
import signal
import socket
import subprocess

import pytest

from .conftest import PROSODY, Raw, Server, closing, free_port, make_cert, online, wait_port

S2S_HEADER = ("<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
              "xmlns='jabber:server' xmlns:db='jabber:server:dialback' from='%s' to='%s' version='1.0'>")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def loopback_pair():
    a = random.randint(16, 250)
    b = random.randint(0, 255)
    return "127.%d.%d.%d" % (a, b, random.randint(2, 120)), "127.%d.%d.%d" % (a, b, random.randint(130, 250))


class ProsodyS2S:
    host = "127.0.0.1"

    def __init__(self, tmp, domain, tls=None):
        self.tmp = os.path.join(tmp, "prosody-s2s")
        os.makedirs(os.path.join(self.tmp, "data"))
        self.port = free_port()
        self.domain = domain
        cfg = os.path.join(self.tmp, "prosody.cfg.lua")
        with open(cfg, "w") as f:
            f.write("""daemonize = false
run_as_root = true
pidfile = "%(t)s/prosody.pid"
data_path = "%(t)s/data"
certificates = "%(t)s"
c2s_ports = { %(p)d }
c2s_interfaces = { "127.0.0.1" }
s2s_ports = { 5269 }
s2s_interfaces = { "%(d)s" }
http_ports = {}
https_ports = {}
modules_enabled = { "roster", "saslauth", %(tlsmod)s"disco", "ping", "dialback", "presence", "offline" }
c2s_require_encryption = false
s2s_require_encryption = %(req)s
s2s_secure_auth = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
log = { info = "%(t)s/prosody.log" }
VirtualHost "%(d)s"
%(ssl)s
""" % {"t": self.tmp, "p": self.port, "d": domain, "req": "true" if tls else "false", "tlsmod": '"tls", ' if tls else "",
       "ssl": 'ssl = { certificate = "%s"; key = "%s"; }' % tls if tls else ""})
        subprocess.run(["prosodyctl", "--config", cfg, "register", "alice", domain, "wonder"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.log = open(os.path.join(self.tmp, "stdout.log"), "ab")
        self.proc = subprocess.Popen([PROSODY, "--config", cfg, "-F"], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc, timeout=20)
        wait_port(5269, host=domain, proc=self.proc, timeout=20)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def start_dj(daemon, tmp, domain, secret="s3cret", tls=None):
    users = os.path.join(tmp, "dj-users.txt")
    with open(users, "w") as f:
        f.write("bob:builder\n")
    d = daemon("djabberd", ["--require_tls=no", "--c2s_port", "{port}", "--listen", "127.0.0.1", "--vhost", domain,
                            "--users_file", users, "--storage", "DBI:SQLite:dbname=%s" % os.path.join(tmp, "s.sqlite"),
                            "--s2s_port", "5269", "--s2s_listen", domain, "--s2s_secret", secret,
                            "--admin", "127.0.0.1:{admin}"] +
               (["--tls_cert", tls[0], "--tls_key", tls[1]] if tls else []))
    srv = Server(d.port)
    srv.domain = domain
    srv.d = d
    wait_port(5269, host=domain, proc=d.proc)
    return srv


@pytest.fixture(params=["plain", "tls"])
def two_servers(request, daemon, tmp_path):
    """djabberd and Prosody federated; "tls": both require STARTTLS on s2s
    (self-signed certificates; dialback still authenticates)."""
    if not PROSODY or not shutil.which("prosodyctl"):
        pytest.fail("prosody is not installed (deploy/deps/djabberd.test lists it)")
    ours, theirs = loopback_pair()
    tls = make_cert(str(tmp_path)) if request.param == "tls" else None
    dj = start_dj(daemon, str(tmp_path), ours, tls=tls)
    dj.tls = bool(tls)
    pr = ProsodyS2S(str(tmp_path), theirs, tls=tls)
    yield dj, pr
    pr.stop()


def test_s2s_with_prosody_messages_and_presence_both_ways(two_servers):
    dj, pr = two_servers
    bob_jid, alice_jid = "bob@%s" % dj.domain, "alice@%s" % pr.domain

    async def go():
        b = await online(dj, bob_jid + "/r", "builder")
        a = await online(pr, alice_jid + "/r", "wonder")
        b.send_message(mto=alice_jid, mbody="hello from djabberd", mtype="chat")
        m = await asyncio.wait_for(a.messages.get(), 20)
        assert m["body"] == "hello from djabberd" and str(m["from"]) == bob_jid + "/r"
        a.send_message(mto=bob_jid, mbody="hello from prosody", mtype="chat")
        m = await asyncio.wait_for(b.messages.get(), 20)
        assert m["body"] == "hello from prosody" and str(m["from"]) == alice_jid + "/r"
        # subscription across servers; slixmpp approves and subscribes back
        b.send_presence_subscription(pto=alice_jid)
        for _ in range(200):
            ra = a.client_roster[bob_jid]["subscription"]
            rb = b.client_roster[alice_jid]["subscription"]
            if (ra, rb) == ("both", "both"):
                break
            await asyncio.sleep(0.05)
        assert (ra, rb) == ("both", "both")
        # presence both ways
        a.send_presence(pstatus="at prosody")
        while True:
            p = await asyncio.wait_for(b.presences.get(), 20)
            if str(p["from"]) == alice_jid + "/r" and p["status"] == "at prosody":
                break
        b.send_presence(pstatus="at djabberd")
        while True:
            p = await asyncio.wait_for(a.presences.get(), 20)
            if str(p["from"]) == bob_jid + "/r" and p["status"] == "at djabberd":
                break
        # going offline is seen on the other server
        b.disconnect()
        while True:
            p = await asyncio.wait_for(a.presences.get(), 20)
            if str(p["from"]) == bob_jid + "/r" and p["type"] == "unavailable":
                break
        await closing(a)
    run(go())
    # the console shows both directions authenticated
    with socket.create_connection(("127.0.0.1", dj.d.admin), timeout=5) as s:
        s.sendall(b"stats\r\nquit\r\n")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    out = out.decode()
    assert int(re.search(r"STAT s2s_incoming_authed (\d+)", out).group(1)) >= 1
    assert int(re.search(r"STAT s2s_outgoing_authed (\d+)", out).group(1)) >= 1
    if dj.tls:  # both directions ran inside TLS
        assert int(re.search(r"STAT s2s_tls_in (\d+)", out).group(1)) >= 1
        assert int(re.search(r"STAT s2s_tls_out (\d+)", out).group(1)) >= 1


def dialback_key(secret, receiving, originating, stream_id):
    k = hashlib.sha256(secret.encode()).digest()
    return hmac.new(k, ("%s %s %s" % (receiving, originating, stream_id)).encode(), hashlib.sha256).hexdigest()


def test_dialback_verify_and_unauthenticated_stanzas(daemon, tmp_path):
    ours, theirs = loopback_pair()
    dj = start_dj(daemon, str(tmp_path), ours, secret="known-secret")
    s2s = Server(5269)
    s2s.host = ours
    raw = Raw(s2s)
    raw.send(S2S_HEADER % (theirs, ours))
    head = raw.until("</stream:features>")
    assert "xmlns='jabber:server'" in head and "urn:xmpp:features:dialback" in head
    good = dialback_key("known-secret", theirs, ours, "abc123")
    raw.send("<db:verify from='%s' to='%s' id='abc123'>%s</db:verify>" % (theirs, ours, good))
    assert "type='valid'" in raw.until("<db:verify[^>]*/>")
    raw.send("<db:verify from='%s' to='%s' id='abc124'>%s</db:verify>" % (theirs, ours, good))
    assert "type='invalid'" in raw.until("<db:verify[^>]*/>")
    # a stanza on a stream that never authenticated
    raw.send("<message from='x@%s' to='bob@%s'><body>sneaky</body></message>" % (theirs, ours))
    assert "not-authorized" in raw.closed(timeout=5)
    # a stream for a domain we do not serve
    raw = Raw(s2s)
    raw.send(S2S_HEADER % (theirs, "nobody.example"))
    assert "host-unknown" in raw.closed(timeout=5)
