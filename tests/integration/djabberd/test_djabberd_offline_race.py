"""Offline storage against initial presence: a sender floods messages to
bob's bare JID while bob logs in and sends his initial presence. Every
message must reach bob exactly once, live or from the offline store, on one
node and across a two-node cluster (the sender on one node, bob on the
other), for an account of the users file and one registered in-band (whose
existence check is a database query before the message is stored), and on
MariaDB. Then the same shape elsewhere: subscription requests stored by one
node while the account logs in on the other, and two contacts logging in on
two nodes at the same instant."""
import asyncio
import collections
import os
import random
import time

import pytest

from .conftest import HEADER, Raw, closing, free_port, make_client, online, wait_port
from .test_djabberd_cluster import at, stat

ROUNDS = 6
AFTER_READY = 60    # messages sent after bob's client has sent its initial presence
DEADLINE = 10.0     # seconds for every message of a round to arrive


def register(srv, user, password):
    raw = Raw(srv)
    raw.send(HEADER)
    raw.until("</stream:features>")
    raw.send("<iq type='set' id='r1'><query xmlns='jabber:iq:register'><username>%s</username>"
             "<password>%s</password></query></iq>" % (user, password))
    out = raw.until("</iq>|<iq[^>]*/>")
    raw.close()
    assert "type='result'" in out or 'type="result"' in out, out


def start_single(daemon, tmp):
    users = os.path.join(tmp, "users.txt")
    with open(users, "w") as f:
        f.write("alice:wonder\nbob:builder\n")
    d = daemon("djabberd", ["--require_tls=no", "--c2s_port", "{port}", "--vhost", "localhost",
                            "--users_file", users, "--inband_registration=on",
                            "--storage", "DBI:SQLite:dbname=%s" % os.path.join(tmp, "dj.sqlite"),
                            "--admin", "127.0.0.1:{admin}"])
    d.host = "127.0.0.1"
    return d, d


def start_cluster(daemon, tmp, db=None, users_extra=None):
    users = os.path.join(tmp, "users.txt")
    with open(users, "w") as f:
        f.write("alice:wonder\nbob:builder\n")
        if users_extra:
            f.write(open(users_extra).read())
    db = db or "DBI:SQLite:dbname=%s" % os.path.join(tmp, "shared.sqlite")
    net = "127.%d.%d" % (random.randint(16, 250), random.randint(0, 255))
    hosts = (net + ".21", net + ".22")
    addrs = ["%s:%d" % (h, free_port()) for h in hosts]
    nodes = []
    for i in range(2):
        d = daemon("djabberd", ["--require_tls=no", "--c2s_port", "{port}", "--listen", hosts[i],
                                "--vhost", "localhost", "--users_file", users, "--inband_registration=on",
                                "--storage", db, "--cluster_listen", addrs[i], "--cluster_peer", addrs[1 - i],
                                "--cluster_secret", "race", "--admin", "127.0.0.1:{admin}"], ready_port=None)
        d.host = hosts[i]
        wait_port(d.port, host=hosts[i], proc=d.proc)
        nodes.append(d)
    deadline = time.time() + 10
    while time.time() < deadline:
        if all(stat(d, "cluster_links_in") == 1 and stat(d, "cluster_links_out") == 1 for d in nodes):
            break
        time.sleep(0.05)
    assert all(stat(d, "cluster_links_in") == 1 for d in nodes)
    return nodes[0], nodes[1]


async def one_round(alice, bob_srv, bob, password, tag):
    """alice floods bob's bare JID from before bob connects until AFTER_READY
    messages after his client sent its initial presence. Returns (sent, got)."""
    b = make_client(bob_srv, "%s@localhost/r%s" % (bob, tag), password)
    sent, after, deadline = [], 0, time.time() + 30
    while after < AFTER_READY and time.time() < deadline:
        body = "%s-%d" % (tag, len(sent))
        alice.send_message(mto="%s@localhost" % bob, mbody=body, mtype="chat")
        sent.append(body)
        if b.ready.done():
            after += 1
        await asyncio.sleep(0.002 if random.random() < 0.8 else 0.01)
    assert b.ready.done(), "bob never got online"
    got = collections.Counter()
    end = time.time() + DEADLINE
    while time.time() < end and not set(sent) <= set(got):
        try:
            m = await asyncio.wait_for(b.messages.get(), max(0.01, end - time.time()))
        except asyncio.TimeoutError:
            break
        if m["type"] != "error" and m["body"].startswith(tag + "-"):
            got[m["body"]] += 1
    await asyncio.sleep(0.3)  # a second copy would come now
    while not b.messages.empty():
        m = b.messages.get_nowait()
        if m["type"] != "error" and m["body"].startswith(tag + "-"):
            got[m["body"]] += 1
    await closing(b)
    return sent, got


def flood_rounds(n1, n2, account):
    bob, password = ("bob", "builder") if account == "users_file" else ("dave", "digger")
    if account == "registered":
        register(at(n2), bob, password)

    async def go():
        alice = await online(at(n1), "alice@localhost/flood", "wonder")
        report = []
        for r in range(ROUNDS):
            sent, got = await one_round(alice, at(n2), bob, password, "m%d" % r)
            missing = [s for s in sent if got[s] == 0]
            twice = [s for s in sent if got[s] > 1]
            report.append((r, len(sent), len(missing), len(twice)))
            assert not missing and not twice, (
                "round %d: %d sent, %d never arrived (%s), %d arrived more than once (%s); rounds so far %r"
                % (r, len(sent), len(missing), missing[:8], len(twice), twice[:8], report))
        await closing(alice)
    asyncio.run(asyncio.wait_for(go(), 240))
    assert stat(n2, "offline_delivered") > 0  # the flood did race the login: some came from the store


@pytest.mark.parametrize("account", ["users_file", "registered"])
@pytest.mark.parametrize("layout", ["single", "cluster"])
def test_flood_during_initial_presence_arrives_exactly_once(daemon, tmp_path, layout, account):
    n1, n2 = (start_single if layout == "single" else start_cluster)(daemon, str(tmp_path))
    flood_rounds(n1, n2, account)


def test_flood_during_initial_presence_cluster_on_mariadb(daemon, tmp_path, mariadb):
    """The two nodes share a MariaDB database (InnoDB: ids are not commit
    order, and two nodes' fetches for one account contend for the rows)."""
    db = mariadb.create_database()
    n1, n2 = start_cluster(daemon, str(tmp_path),
                           "DBI:mysql:database=%s;host=127.0.0.1;port=%d;user=root" % (db, mariadb.port))
    flood_rounds(n1, n2, "users_file")
    assert mariadb.sql("SELECT COUNT(*) FROM dj_offline", db).strip() == "0"


# ---- the same shape for rosters: a subscription request to an account that
# is logging in on the other node ----------------------------------------------------------------

SENDERS = 12  # subscription requests per round


def test_subscription_requests_during_login_on_other_node_reach_the_user(daemon, tmp_path):
    """Users on node one send subscription requests to bob's bare JID while
    bob logs in on node two. Node one processes a request itself while it
    does not yet know bob is on node two (it stores the pending request in
    bob's roster); node two loads bob's roster at his login. Every request
    must reach bob: live, or re-sent at his initial presence from the roster."""
    tmp = str(tmp_path)
    rounds = 5
    names = ["s%d_%d" % (r, i) for r in range(rounds) for i in range(SENDERS)]
    with open(os.path.join(tmp, "extra.txt"), "w") as f:
        for n in names:
            f.write("%s:pw\n" % n)
    n1, n2 = start_cluster(daemon, tmp, users_extra=os.path.join(tmp, "extra.txt"))

    async def go():
        report = []
        for r in range(rounds):
            senders = [await online(at(n1), "s%d_%d@localhost/x" % (r, i), "pw") for i in range(SENDERS)]
            b = make_client(at(n2), "bob@localhost/r%d" % r, "builder")
            b.auto_authorize = None  # neither accept nor refuse: the requests stay pending
            asked = set()
            b.add_event_handler("presence_subscribe", lambda p: asked.add(str(p["from"].bare)))
            for s in senders:
                s.send_presence_subscription(pto="bob@localhost")
                await asyncio.sleep(0.004 if random.random() < 0.8 else 0.015)
            await asyncio.wait_for(b.ready, 15)
            want = {"s%d_%d@localhost" % (r, i) for i in range(SENDERS)}
            end = time.time() + DEADLINE
            while time.time() < end and not want <= asked:
                await asyncio.sleep(0.05)
            report.append((r, len(want - asked)))
            assert want <= asked, ("round %d: %d of %d subscription requests never reached bob (%s); rounds %r"
                                   % (r, len(want - asked), SENDERS, sorted(want - asked)[:6], report))
            await closing(b, *senders)
    asyncio.run(asyncio.wait_for(go(), 240))


# ---- and for presence: two contacts logging in on two nodes at once ----------------------------------


def test_contacts_logging_in_at_once_on_two_nodes_see_each_other(daemon, tmp_path):
    """alice and bob (subscribed both ways) log in at the same instant, alice
    on node one and bob on node two. Each node collects the contacts'
    presence at the initial presence from what it knows of the other node;
    each must end up seeing the other available."""
    n1, n2 = start_cluster(daemon, str(tmp_path))

    async def avail_from(c, bare, until):
        while time.time() < until:
            try:
                p = await asyncio.wait_for(c.presences.get(), max(0.01, until - time.time()))
            except asyncio.TimeoutError:
                return False
            if str(p["from"].bare) == bare and p["type"] not in ("unavailable", "error"):
                return True
        return False

    async def go():
        a = await online(at(n1), "alice@localhost/set", "wonder")
        b = await online(at(n2), "bob@localhost/set", "builder")
        a.send_presence_subscription(pto="bob@localhost")
        for _ in range(200):
            if (a.client_roster["bob@localhost"]["subscription"],
                    b.client_roster["alice@localhost"]["subscription"]) == ("both", "both"):
                break
            await asyncio.sleep(0.05)
        assert b.client_roster["alice@localhost"]["subscription"] == "both"
        await closing(a, b)
        await asyncio.sleep(0.5)
        report = []
        for r in range(8):
            a = make_client(at(n1), "alice@localhost/a%d" % r, "wonder")
            b = make_client(at(n2), "bob@localhost/b%d" % r, "builder")
            await asyncio.wait_for(asyncio.gather(a.ready, b.ready), 15)
            until = time.time() + DEADLINE
            seen = await asyncio.gather(avail_from(a, "bob@localhost", until), avail_from(b, "alice@localhost", until))
            report.append((r, seen))
            assert all(seen), "round %d: alice saw bob %s, bob saw alice %s; rounds %r" % (r, seen[0], seen[1], report)
            await closing(a, b)
            await asyncio.sleep(0.3)
    asyncio.run(asyncio.wait_for(go(), 240))
