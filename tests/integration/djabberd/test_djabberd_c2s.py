"""C2S with slixmpp: the same client scripts against djabberd and Prosody
(the `xmpp` fixture runs each test on both)."""
import asyncio

import pytest

from .conftest import HEADER, Raw, closing, make_client, online  # tests/integration/djabberd/conftest.py


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.mark.parametrize("mech", ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_two_users_exchange_messages(xmpp, mech):
    if xmpp.kind == "prosody" and mech == "SCRAM-SHA-256":
        # Prosody 0.12 with internal_hashed keeps SHA-1 keys only: it does not offer SCRAM-SHA-256
        raw = Raw(xmpp)
        raw.send(HEADER)
        feats = raw.until("</stream:features>")
        raw.close()
        assert "SCRAM-SHA-1" in feats and "SCRAM-SHA-256" not in feats
        return

    async def go():
        a = await online(xmpp, "alice@localhost/r1", "wonder", mech=mech)
        b = await online(xmpp, "bob@localhost/r2", "builder", mech=mech)
        a.send_message(mto="bob@localhost", mbody="hello bob", mtype="chat")
        m = await asyncio.wait_for(b.messages.get(), 10)
        assert m["body"] == "hello bob"
        assert str(m["from"]) == "alice@localhost/r1"
        b.send_message(mto=m["from"], mbody="hi alice", mtype="chat")
        m = await asyncio.wait_for(a.messages.get(), 10)
        assert m["body"] == "hi alice" and str(m["from"]) == "bob@localhost/r2"
        await closing(a, b)
    run(go())


def test_wrong_password_is_not_authorized(xmpp):
    async def go():
        c = make_client(xmpp, "alice@localhost/x", "not-the-password", mech="PLAIN")
        assert await asyncio.wait_for(c.auth_failed, 15)
        assert not c.ready.done()
        c.disconnect()
        c2 = make_client(xmpp, "nobody@localhost/x", "whatever", mech="SCRAM-SHA-256")
        assert await asyncio.wait_for(c2.auth_failed, 15)
        c2.disconnect()
        await asyncio.sleep(0.2)
    run(go())


def test_subscription_both_ways_and_presence(xmpp):
    async def go():
        a = await online(xmpp, "alice@localhost/r1", "wonder")
        b = await online(xmpp, "bob@localhost/r1", "builder")
        # slixmpp answers subscribe with subscribed and subscribes back (auto_authorize/auto_subscribe)
        a.send_presence_subscription(pto="bob@localhost")
        for _ in range(100):
            ra = a.client_roster["bob@localhost"]["subscription"]
            rb = b.client_roster["alice@localhost"]["subscription"]
            if ra == "both" and rb == "both":
                break
            await asyncio.sleep(0.1)
        assert (ra, rb) == ("both", "both")
        # both see the other's presence now; a fresh status travels both ways
        b.send_presence(pstatus="busy building", pshow="dnd")
        while True:
            p = await asyncio.wait_for(a.presences.get(), 10)
            if str(p["from"]) == "bob@localhost/r1" and p["status"] == "busy building":
                break
        a.send_presence(pstatus="reading")
        while True:
            p = await asyncio.wait_for(b.presences.get(), 10)
            if str(p["from"]) == "alice@localhost/r1" and p["status"] == "reading":
                break
        # the roster survives a new login (stored)
        await closing(a)
        a2 = await online(xmpp, "alice@localhost/r2", "wonder")
        assert a2.client_roster["bob@localhost"]["subscription"] == "both"
        # the probe on login brings bob's presence; bob going away is seen too
        while True:
            p = await asyncio.wait_for(a2.presences.get(), 10)
            if str(p["from"]) == "bob@localhost/r1" and p["type"] != "unavailable":
                break
        b.disconnect()
        while True:
            p = await asyncio.wait_for(a2.presences.get(), 10)
            if str(p["from"]) == "bob@localhost/r1" and p["type"] == "unavailable":
                break
        await closing(a2)
    run(go())


def test_two_resources(xmpp):
    async def go():
        a1 = await online(xmpp, "alice@localhost/desk", "wonder")
        a2 = await online(xmpp, "alice@localhost/phone", "wonder")
        b = await online(xmpp, "bob@localhost/r", "builder")
        b.send_message(mto="alice@localhost/phone", mbody="only phone", mtype="chat")
        m = await asyncio.wait_for(a2.messages.get(), 10)
        assert m["body"] == "only phone"
        b.send_message(mto="alice@localhost", mbody="to the bare jid", mtype="chat")
        bodies = []
        for c in (a1, a2):
            while True:
                m = await asyncio.wait_for(c.messages.get(), 10)
                if m["body"] != "only phone":
                    break
            bodies.append(m["body"])
        assert bodies == ["to the bare jid", "to the bare jid"]
        assert a1.messages.empty()
        await closing(a1, a2, b)
    run(go())


def test_resource_conflict_replaces_old_session(xmpp):
    async def go():
        old = await online(xmpp, "carol@localhost/same", "cat")
        gone = asyncio.get_event_loop().create_future()
        old.add_event_handler("disconnected", lambda e: gone.done() or gone.set_result(True))
        new = await online(xmpp, "carol@localhost/same", "cat")
        assert await asyncio.wait_for(gone, 10)
        assert str(new.boundjid) == "carol@localhost/same"
        await closing(new)
    run(go())


def test_offline_message_with_delay(xmpp):
    async def go():
        a = await online(xmpp, "alice@localhost/r", "wonder")
        a.send_message(mto="bob@localhost", mbody="while you were out", mtype="chat")
        await asyncio.sleep(0.5)  # stored server-side
        b = make_client(xmpp, "bob@localhost/r", "builder", plugins=("xep_0203",))
        m = await asyncio.wait_for(b.messages.get(), 15)
        assert m["body"] == "while you were out"
        assert str(m["from"]) == "alice@localhost/r"
        assert m["delay"]["stamp"] is not None
        await closing(a, b)
    run(go())


def test_vcard_set_get(xmpp):
    async def go():
        a = await online(xmpp, "alice@localhost/r", "wonder", plugins=("xep_0054",))
        b = await online(xmpp, "bob@localhost/r", "builder", plugins=("xep_0054",))
        v = a["xep_0054"].make_vcard()
        v["FN"] = "Alice Liddell"
        v["NICKNAME"] = "al"
        await a["xep_0054"].publish_vcard(v)
        got = await b["xep_0054"].get_vcard("alice@localhost", cached=False)
        assert got["vcard_temp"]["FN"] == "Alice Liddell"
        assert got["vcard_temp"]["NICKNAME"] in ("al", ["al"])
        mine = await a["xep_0054"].get_vcard(cached=False)
        assert mine["vcard_temp"]["FN"] == "Alice Liddell"
        await closing(a, b)
    run(go())


def test_ping_and_disco(xmpp):
    async def go():
        a = await online(xmpp, "alice@localhost/r", "wonder", plugins=("xep_0030", "xep_0199"))
        rtt = await a["xep_0199"].ping(jid="localhost", timeout=10)
        assert rtt is not None and rtt >= 0
        info = await a["xep_0030"].get_info(jid="localhost", cached=False)
        feats = set(info["disco_info"]["features"])
        for f in ("urn:xmpp:ping", "vcard-temp", "jabber:iq:version",
                  "http://jabber.org/protocol/disco#info"):
            assert f in feats
        ids = info["disco_info"]["identities"]
        assert any(i[0] == "server" and i[1] == "im" for i in ids)
        items = await a["xep_0030"].get_items(jid="localhost")
        assert items["type"] == "result"
        await closing(a)
    run(go())


def test_inband_registration(xmpp):
    async def go():
        c = make_client(xmpp, "newbie@localhost/r", "fresh-pass", register=True)
        assert await asyncio.wait_for(c.register_result, 15) == "ok"
        await asyncio.wait_for(c.ready, 15)
        await closing(c)
        # the new account logs in again with SCRAM
        c = await online(xmpp, "newbie@localhost/r2", "fresh-pass", mech="SCRAM-SHA-1")
        await closing(c)
        c = await online(xmpp, "newbie@localhost/r2", "fresh-pass", mech="PLAIN")
        await closing(c)
        c = make_client(xmpp, "newbie@localhost/r2", "wrong-pass", mech="PLAIN")
        assert await asyncio.wait_for(c.auth_failed, 15)
        c.disconnect()
        # a taken name is a conflict
        c = make_client(xmpp, "newbie@localhost/r3", "other", register=True)
        assert await asyncio.wait_for(c.register_result, 15) == "conflict"
        c.disconnect()
        await asyncio.sleep(0.2)
    run(go())


def test_stream_management_acks(xmpp):
    """XEP-0198 without resumption: slixmpp enables it and its stanzas get acked."""
    if xmpp.kind == "prosody":
        # Prosody 0.12 (Debian) has no mod_smacks: it does not offer stream management
        raw = Raw(xmpp)
        raw.send(HEADER)
        raw.until("</stream:features>")
        raw.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHdvbmRlcg==</auth>")
        raw.until("<success")
        raw.send(HEADER)
        assert "urn:xmpp:sm" not in raw.until("</stream:features>")
        raw.close()
        return

    async def go():
        a = make_client(xmpp, "alice@localhost/sm", "wonder", plugins=("xep_0198",))
        enabled = asyncio.get_event_loop().create_future()
        acked = []
        a.add_event_handler("sm_enabled", lambda e: enabled.done() or enabled.set_result(True))
        a.add_event_handler("stanza_acked", lambda st: acked.append(st))
        await asyncio.wait_for(a.ready, 15)
        assert await asyncio.wait_for(enabled, 10)
        b = await online(xmpp, "bob@localhost/r", "builder")
        for i in range(12):
            a.send_message(mto="bob@localhost", mbody="sm %d" % i, mtype="chat")
        for i in range(12):
            m = await asyncio.wait_for(b.messages.get(), 10)
            assert m["body"] == "sm %d" % i
        a["xep_0198"].request_ack()
        for _ in range(100):
            if not a["xep_0198"].unacked_queue:
                break
            await asyncio.sleep(0.05)
        assert len(acked) >= 12 and not a["xep_0198"].unacked_queue
        await closing(a, b)
    run(go())
