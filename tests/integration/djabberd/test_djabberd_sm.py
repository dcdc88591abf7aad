"""XEP-0198 stream resumption on the wire: a connection that drops without
closing its stream leaves a resumable session; stanzas sent meanwhile wait
and come with <resumed/>; an unknown id fails; the session ends for real when
the resume window passes. (Prosody 0.12 in Debian has no stream management.)"""
import base64
import re
import time

from .conftest import HEADER, Raw


def login_until_bind(srv, user, password):
    raw = Raw(srv)
    raw.send(HEADER)
    raw.until("</stream:features>")
    tok = base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()
    raw.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>" % tok)
    raw.until("<success[^>]*(/>|</success>)")
    raw.send(HEADER)
    raw.until("</stream:features>")
    return raw


def test_resume_after_a_dropped_connection(djabberd):
    srv = djabberd()
    a = login_until_bind(srv, "alice", "wonder")
    a.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource>"
           "</bind></iq>")
    a.until("</iq>")
    a.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    m = re.search(r"<enabled xmlns='urn:xmpp:sm:3' id='([0-9a-f]+)' resume='true' max='(\d+)'/>",
                  a.until("<enabled[^>]*/>"))
    assert m
    sm_id = m.group(1)
    a.send("<presence/>")
    b = Raw(srv).login("bob", "builder", resource="desk")
    b.send("<message to='alice@localhost/phone' type='chat'><body>first</body></message>")
    seen = a.until("first</body></message>")
    handled = seen.count("<presence") + seen.count("<message")  # what the phone got (its own presence too)
    # the phone's connection drops without a closing tag
    a.s.close()
    time.sleep(0.2)
    assert "alice@localhost/phone" in srv.console("users") and "detached" in srv.console("users")
    b.send("<message to='alice@localhost/phone' type='chat'><body>while you were gone</body></message>")
    # a stale id fails
    x = login_until_bind(srv, "alice", "wonder")
    x.send("<resume xmlns='urn:xmpp:sm:3' previd='00ff' h='0'/>")
    assert "item-not-found" in x.until("</failed>")
    x.close()
    # the real resume: h acks what the phone handled; the rest comes again
    a2 = login_until_bind(srv, "alice", "wonder")
    a2.send("<resume xmlns='urn:xmpp:sm:3' previd='%s' h='%d'/>" % (sm_id, handled))
    out = a2.until("while you were gone")
    assert "<resumed xmlns='urn:xmpp:sm:3' previd='%s' h='" % sm_id in out
    assert "first" not in out.split("<resumed", 1)[1]  # acked, not sent again
    # the session goes on as before, same full JID
    b.send("<message to='alice@localhost/phone' type='chat'><body>after</body></message>")
    a2.until("after")
    assert srv.stat("sm_resumed") == 1
    assert "detached" not in srv.console("users")
    a2.close()
    b.close()
    # the console can end a detached session before its window passes
    c = Raw(srv).login("carol", "cat", resource="r")
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    c.until("<enabled[^>]*/>")
    c.s.close()
    deadline = time.time() + 5
    while time.time() < deadline and "carol@localhost/r - unavailable detached" not in srv.console("users"):
        time.sleep(0.05)
    assert "carol@localhost/r - unavailable detached" in srv.console("users")
    assert "KICKED 1" in srv.console("kick carol@localhost/r")
    assert "carol@localhost/r" not in srv.console("users")


def test_detached_session_ends_after_the_resume_window(djabberd):
    srv = djabberd("--sm_resume_timeout", "1")
    a = Raw(srv).login("alice", "wonder", resource="r")
    a.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/><presence/>")
    a.until("<enabled[^>]*/>")
    a.s.close()
    deadline = time.time() + 10
    while time.time() < deadline and srv.stat("sm_expired") != 1:
        time.sleep(0.05)
    assert srv.stat("sm_expired") == 1
    assert "alice@localhost/r" not in srv.console("users")
    # a clean close is not resumable at all
    c = Raw(srv).login("carol", "cat", resource="r")
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    c.until("<enabled[^>]*/>")
    c.send("</stream:stream>")
    c.closed(timeout=5)
    time.sleep(0.2)
    assert "carol@localhost/r" not in srv.console("users")
