"""djabberd fixtures: our daemon, a private Prosody (the real peer), slixmpp
clients and a raw-socket client for the wire-level checks.

`xmpp` starts a server with accounts alice/wonder, bob/builder, carol/cat on
vhost localhost and in-band registration on. Tests that take `xmpp` run once
against djabberd and once against Prosody (the same client script), so a
behaviour difference shows up as a failing Prosody or djabberd case.
"""
import asyncio
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest
from netports import free_port


def wait_port(port, host="127.0.0.1", timeout=10.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before accepting" % proc.returncode)
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError("nothing accepted on %s:%d" % (host, port))

USERS = {"alice": "wonder", "bob": "builder", "carol": "cat"}
PROSODY = shutil.which("prosody")


class Server:
    kind = None
    host = "127.0.0.1"
    domain = "localhost"

    def __init__(self, port):
        self.port = port


class Djabberd(Server):
    kind = "djabberd"

    def __init__(self, factory, tmp, extra=(), env=None):
        users = os.path.join(tmp, "users.txt")
        with open(users, "w") as f:
            for u, p in USERS.items():
                f.write("%s:%s\n" % (u, p))
        conf = os.path.join(tmp, "djabberd.conf")
        with open(conf, "w") as f:
            f.write("vhost = localhost\nrequire_tls = off\n"
                    "users_file = %s\ninband_registration = on\n"
                    "storage = DBI:SQLite:dbname=%s\n"
                    % (users, os.path.join(tmp, "dj.sqlite")))
        self.conf = conf
        self.d = factory("djabberd", ["-c", conf, "--c2s_port", "{port}", "--admin", "127.0.0.1:{admin}"] +
                         list(extra), env=env)
        Server.__init__(self, self.d.port)

    def console(self, line):
        with socket.create_connection(("127.0.0.1", self.d.admin), timeout=5) as s:
            s.sendall(line.encode() + b"\r\nquit\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data.decode()

    def stat(self, name):
        m = re.search(r"STAT %s (\d+)" % re.escape(name), self.console("stats"))
        return int(m.group(1)) if m else None

    def stop(self):
        pass  # the daemon fixture stops it and checks the exit status


class Prosody(Server):
    kind = "prosody"

    def __init__(self, tmp, tls=None):
        port = free_port()
        Server.__init__(self, port)
        self.tmp = os.path.join(tmp, "prosody")
        os.makedirs(os.path.join(self.tmp, "data"), exist_ok=True)
        self.cfg = os.path.join(self.tmp, "prosody.cfg.lua")
        with open(self.cfg, "w") as f:
            f.write("""daemonize = false
run_as_root = true
pidfile = "%(t)s/prosody.pid"
data_path = "%(t)s/data"
certificates = "%(t)s"
c2s_ports = { %(port)d }
c2s_interfaces = { "127.0.0.1" }
s2s_ports = { %(s2s)d }
s2s_interfaces = { "127.0.0.1" }
http_ports = {}
https_ports = {}
modules_enabled = { "roster", "saslauth", "tls", "disco", "ping", "register", "vcard_legacy", "offline", "version" }
c2s_require_encryption = %(req)s
allow_unencrypted_plain_auth = true
allow_registration = true
min_seconds_between_registrations = 0
authentication = "internal_hashed"
log = { info = "%(t)s/prosody.log" }
VirtualHost "localhost"
%(ssl)s
""" % {"t": self.tmp, "port": port, "s2s": free_port(), "req": "true" if tls else "false",
       "ssl": 'ssl = { certificate = "%s"; key = "%s"; }' % tls if tls else ""})
        for u, p in USERS.items():
            subprocess.run(["prosodyctl", "--config", self.cfg, "register", u, "localhost", p], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.log = open(os.path.join(self.tmp, "stdout.log"), "ab")
        self.proc = subprocess.Popen([PROSODY, "--config", self.cfg, "-F"], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_port(port, proc=self.proc, timeout=20)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def djabberd(daemon, tmp_path):
    """Our daemon alone (for console, hardening and storage checks)."""
    def start(*extra, env=None):
        return Djabberd(daemon, str(tmp_path), extra, env=env)
    return start


def make_cert(tmp):
    """A self-signed certificate for "localhost" (key, cert paths)."""
    key, crt = os.path.join(tmp, "tls.key"), os.path.join(tmp, "tls.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.chmod(key, 0o644)  # prosody reads it as its own user
    return crt, key


@pytest.fixture(params=["djabberd", "prosody"])
def xmpp_tls(request, daemon, tmp_path):
    """Both servers with require_tls on and a self-signed certificate; .cert for clients."""
    crt, key = make_cert(str(tmp_path))
    if request.param == "djabberd":
        srv = Djabberd(daemon, str(tmp_path), ["--require_tls=yes", "--tls_cert", crt, "--tls_key", key])
    else:
        if not PROSODY:
            pytest.fail("prosody is not installed (deploy/deps/djabberd.test lists it)")
        srv = Prosody(str(tmp_path), tls=(crt, key))
    srv.cert = crt
    yield srv
    srv.stop()


@pytest.fixture(params=["djabberd", "prosody"])
def xmpp(request, daemon, tmp_path):
    if request.param == "djabberd":
        srv = Djabberd(daemon, str(tmp_path))
    else:
        if not PROSODY:
            pytest.fail("prosody is not installed (deploy/deps/djabberd.test lists it)")
        srv = Prosody(str(tmp_path))
    yield srv
    srv.stop()


# ---- slixmpp ----------------------------------------------------------------------------

def make_client(server, jid, password, mech=None, plugins=(), register=False, tls=None):
    """tls: a CA certificate file -> STARTTLS verified against it; None -> plain TCP."""
    import pathlib

    import slixmpp

    class Client(slixmpp.ClientXMPP):
        def __init__(self):
            kw = {"sasl_mech": mech} if mech else {}
            super().__init__(jid, password, **kw)
            self["feature_mechanisms"].unencrypted_plain = True
            self.messages = asyncio.Queue()
            self.presences = asyncio.Queue()
            self.subscriptions = asyncio.Queue()
            self.ready = asyncio.get_event_loop().create_future()
            self.auth_failed = asyncio.get_event_loop().create_future()
            self.add_event_handler("session_start", self._start)
            self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
            self.add_event_handler("presence_available", lambda p: self.presences.put_nowait(p))
            self.add_event_handler("presence_unavailable", lambda p: self.presences.put_nowait(p))
            self.add_event_handler("changed_status", lambda p: self.presences.put_nowait(p))
            self.add_event_handler("presence_subscribed", lambda p: self.subscriptions.put_nowait(p))
            self.add_event_handler("failed_all_auth", self._failed)
            self.tls_done = False
            self.add_event_handler("tls_success", lambda e: setattr(self, "tls_done", True))
            if tls:
                self.ca_certs = pathlib.Path(tls)
            for p in plugins:
                self.register_plugin(p)
            if register:
                for p in ("xep_0030", "xep_0004", "xep_0066", "xep_0077"):
                    self.register_plugin(p)
                self["xep_0077"].force_registration = True
                # slixmpp queues stanzas before the session starts; registration must go first
                self._always_send_everything = True
                self.register_result = asyncio.get_event_loop().create_future()
                self.add_event_handler("register", self._register)

        async def _register(self, iq):
            resp = self.Iq()
            resp["type"] = "set"
            resp["register"]["username"] = self.boundjid.user
            resp["register"]["password"] = self.password
            try:
                await resp.send()
                if not self.register_result.done():
                    self.register_result.set_result("ok")
            except slixmpp.exceptions.IqError as e:
                if not self.register_result.done():
                    self.register_result.set_result(e.iq["error"]["condition"])
                self.disconnect()

        def _failed(self, *a):
            if not self.auth_failed.done():
                self.auth_failed.set_result(True)

        async def _start(self, event):
            await self.get_roster()
            self.send_presence()
            if not self.ready.done():
                self.ready.set_result(True)

    c = Client()
    if tls:
        c.connect((server.host, server.port))
    else:
        c.connect((server.host, server.port), disable_starttls=True)
    return c


async def online(server, jid, password, **kw):
    c = make_client(server, jid, password, **kw)
    await asyncio.wait_for(c.ready, 15)
    return c


async def closing(*clients):
    for c in clients:
        c.disconnect()
    await asyncio.sleep(0.2)


# ---- raw sockets --------------------------------------------------------------------------

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")


class Raw:
    """A bare TCP client speaking XMPP by hand, for wire-level tests."""

    def __init__(self, server, timeout=10):
        self.s = socket.create_connection((server.host, server.port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data.encode() if isinstance(data, str) else data)

    def until(self, pattern, timeout=10):
        deadline = time.time() + timeout
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern, re.S)
        while True:
            m = rx.search(self.buf)
            if m:
                out, self.buf = self.buf[:m.end()], self.buf[m.end():]
                return out.decode(errors="replace")
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no %r in %r" % (pattern, self.buf[-500:]))
            self.s.settimeout(left)
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("closed; buffer %r" % self.buf[-500:])
            self.buf += chunk

    def closed(self, timeout=10):
        """Read until EOF; returns everything that came."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.s.settimeout(max(0.01, deadline - time.time()))
            try:
                chunk = self.s.recv(65536)
            except ConnectionResetError:
                return self.buf.decode(errors="replace")
            if not chunk:
                return self.buf.decode(errors="replace")
            self.buf += chunk
        raise TimeoutError("still open; got %r" % self.buf[-500:])

    def login(self, user, password, resource="raw"):
        self.send(HEADER)
        self.until("</stream:features>")
        tok = base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>" % tok)
        self.until("<success[^>]*(/>|</success>)")
        self.send(HEADER)
        self.until("</stream:features>")
        self.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  "<resource>%s</resource></bind></iq>" % resource)
        self.until("</iq>")
        return self

    def close(self):
        self.s.close()
