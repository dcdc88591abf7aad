"""Hostile and broken clients against djabberd: restricted XML (billion
laughs, external entities), stanza and pre-auth bounds, bad UTF-8, silent
and unauthenticated clients — and other sessions keep being served."""
import asyncio
import errno
import os
import socket
import time

import pytest

from .conftest import HEADER, Raw, closing, online


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


LAUGHS = ("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>" +
          "".join("<!ENTITY lol%d '%s'>" % (i, ("&lol%d;" % (i - 1) if i > 1 else "&lol;") * 10)
                  for i in range(1, 10)) +
          "]><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
          "to='localhost' version='1.0'>&lol9;")


def test_billion_laughs_rejected_fast(djabberd):
    srv = djabberd()
    t0 = time.time()
    raw = Raw(srv)
    raw.send(LAUGHS)
    out = raw.closed(timeout=5)
    assert "restricted-xml" in out
    assert time.time() - t0 < 2.0
    assert "lol" not in out
    assert srv.stat("stream_errors") >= 1


def test_external_entity_never_read(djabberd, tmp_path):
    srv = djabberd()
    fifo = str(tmp_path / "secret.fifo")
    os.mkfifo(fifo)
    raw = Raw(srv)
    # a reader opening the FIFO would block the server; it must answer at once
    raw.send("<?xml version='1.0'?><!DOCTYPE stream:stream SYSTEM 'file://%s' "
             "[<!ENTITY xxe SYSTEM 'file://%s'>]>" % (fifo, fifo) + HEADER[len("<?xml version='1.0'?>"):] +
             "<message><body>&xxe;</body></message>")
    out = raw.closed(timeout=5)
    assert "restricted-xml" in out
    # nobody has the FIFO open for reading: a non-blocking writer gets ENXIO
    with pytest.raises(OSError) as e:
        os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    assert e.value.errno == errno.ENXIO
    # and the server still serves
    raw2 = Raw(srv).login("alice", "wonder")
    raw2.close()


def test_comment_and_processing_instruction_are_restricted(djabberd):
    srv = djabberd()
    for bad in ("<!-- hello -->", "<?php echo 1; ?>"):
        raw = Raw(srv).login("carol", "cat")
        raw.send(bad)
        assert "restricted-xml" in raw.closed(timeout=5)


def test_bad_utf8_is_not_well_formed(djabberd):
    srv = djabberd()
    raw = Raw(srv).login("alice", "wonder")
    raw.send(b"<message to='bob@localhost'><body>\xc3\x28 \xff</body></message>")
    assert "not-well-formed" in raw.closed(timeout=5)


def test_one_mib_stanza_refused_while_others_are_served(djabberd):
    srv = djabberd()

    async def go():
        b = await online(srv, "bob@localhost/r", "builder")
        c = await online(srv, "carol@localhost/r", "cat")
        raw = Raw(srv).login("alice", "wonder")
        raw.send("<message to='bob@localhost' type='chat'><body>")
        chunk = "A" * 65536
        sent = 0
        refused = False
        for i in range(16):
            try:
                raw.send(chunk)
                sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                refused = True
                break
            # the others keep talking meanwhile
            c.send_message(mto="bob@localhost", mbody="still here %d" % i, mtype="chat")
            m = await asyncio.wait_for(b.messages.get(), 10)
            assert m["body"] == "still here %d" % i
        try:
            out = raw.closed(timeout=10)
            assert "policy-violation" in out
        except (ConnectionResetError, BrokenPipeError):
            assert refused
        assert srv.stat("policy_violations") >= 1
        # the big message never reached bob
        await asyncio.sleep(0.3)
        while not b.messages.empty():
            assert len(b.messages.get_nowait()["body"]) < 1000
        await closing(b, c)
    run(go())


def test_preauth_byte_budget(djabberd):
    srv = djabberd("--preauth_bytes", "8k")
    raw = Raw(srv)
    raw.send(HEADER)
    raw.until("</stream:features>")
    try:
        for _ in range(16):
            raw.send(" " * 1024)
            time.sleep(0.01)
    except (BrokenPipeError, ConnectionResetError):
        return
    assert "policy-violation" in raw.closed(timeout=5)


def test_silent_client_closed_after_auth_timeout(djabberd):
    srv = djabberd("--auth_timeout", "1")
    t0 = time.time()
    raw = Raw(srv)
    raw.closed(timeout=5)  # nothing sent: the server hangs up
    assert time.time() - t0 < 4


def test_stanza_before_auth_is_not_authorized(djabberd):
    srv = djabberd()
    raw = Raw(srv)
    raw.send(HEADER)
    raw.until("</stream:features>")
    raw.send("<message to='bob@localhost'><body>spam</body></message>")
    assert "not-authorized" in raw.closed(timeout=5)


def test_unknown_host_and_bad_namespace(djabberd):
    srv = djabberd()
    raw = Raw(srv)
    raw.send(HEADER.replace("to='localhost'", "to='elsewhere.example'"))
    assert "host-unknown" in raw.closed(timeout=5)
    raw = Raw(srv)
    raw.send("<stream:stream xmlns:stream='urn:wrong' to='localhost' version='1.0'>")
    assert "invalid-namespace" in raw.closed(timeout=5)


def test_garbage_and_half_open(djabberd):
    srv = djabberd()
    raw = Raw(srv)
    raw.send(os.urandom(4096))
    out = raw.closed(timeout=5)
    assert "stream:error" in out
    # a client that vanishes mid-stanza costs nothing lasting
    for _ in range(20):
        r = Raw(srv).login("carol", "cat", resource="h%d" % _)
        r.send("<message to='bob@localhost'><body>half")
        r.close()
    deadline = time.time() + 5
    while srv.stat("c2s_connections") != 0 and time.time() < deadline:
        time.sleep(0.05)
    assert srv.stat("c2s_connections") == 0
    Raw(srv).login("alice", "wonder").close()


def test_stream_management_counts_on_the_wire(djabberd):
    srv = djabberd()
    raw = Raw(srv)
    raw.send(HEADER)
    raw.until("</stream:features>")
    raw.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHdvbmRlcg==</auth>")
    raw.until("<success")
    raw.send(HEADER)
    feats = raw.until("</stream:features>")
    assert "<sm xmlns='urn:xmpp:sm:3'/>" in feats
    raw.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    assert "unexpected-request" in raw.until("</failed>")  # before binding
    raw.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    raw.until("</iq>")
    raw.send("<enable xmlns='urn:xmpp:sm:3'/>")
    out = raw.until("<enabled[^>]*/>")
    assert "resume" not in out  # not asked for, not given
    raw.send("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq><presence/><r xmlns='urn:xmpp:sm:3'/>")
    assert "h='2'" in raw.until("<a xmlns='urn:xmpp:sm:3' h='[0-9]+'/>")
    raw.send("<enable xmlns='urn:xmpp:sm:3'/>")  # twice
    assert "unexpected-request" in raw.until("</failed>")
    raw.send("<resume xmlns='urn:xmpp:sm:3' previd='x' h='0'/>")  # only instead of binding
    assert "unexpected-request" in raw.until("</failed>")
    raw.close()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_client_that_never_reads_is_bounded(djabberd):
    # (an ASan build keeps freed memory in quarantine; keep it small so RSS means something)
    srv = djabberd("--max_output", "256k", env={"ASAN_OPTIONS": "quarantine_size_mb=1:detect_leaks=1"})
    slow = Raw(srv).login("bob", "builder", resource="slow")
    slow.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.send("<presence/>")
    fast = Raw(srv).login("alice", "wonder", resource="fast")
    base = rss_kib(srv.d.pid)
    body = "x" * 4000
    # ~24 MiB towards bob, who reads nothing (headlines: nothing is stored
    # offline once bob is cut off, so RSS shows only what is buffered)
    for i in range(6000):
        fast.send("<message to='bob@localhost/slow' type='headline'><body>%d %s</body></message>" % (i, body))
    # the daemon still answers alice, and bob was cut off instead of buffered
    fast.send("<iq type='get' id='alive'><ping xmlns='urn:xmpp:ping'/></iq>")
    fast.until("id='alive'", timeout=30)
    assert srv.stat("slow_consumers") >= 1
    assert rss_kib(srv.d.pid) - base < 16 * 1024  # far below the 24 MiB sent
    fast.close()
    slow.close()


def test_offline_flood_is_bounded(djabberd):
    srv = djabberd("--max_offline", "50")
    fast = Raw(srv).login("alice", "wonder", resource="fast")
    body = "y" * 2000
    for i in range(400):
        fast.send("<message to='carol@localhost' type='chat'><body>%d %s</body></message>" % (i, body))
    fast.send("<iq type='get' id='alive'><ping xmlns='urn:xmpp:ping'/></iq>")
    out = fast.until("id='alive'", timeout=30)
    # stores finish on the db thread: wait until none is queued or in flight
    deadline = time.time() + 20
    while time.time() < deadline and (srv.stat("db_waiting") or
                                      srv.stat("messages_offline") + out.count("type='error'") < 400):
        try:
            out += fast.until("type='error'", timeout=0.2)
        except TimeoutError:
            pass
    assert srv.stat("messages_offline") == 50  # max_offline per account
    # the rest were refused to the sender, not silently dropped
    assert out.count("type='error'") + srv.stat("offline_refused") >= 1
    fast.close()
