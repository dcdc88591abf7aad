"""Cluster delivery: two djabberd nodes serve one domain from one database,
share where users are connected over authenticated cluster links, and
deliver messages and presence to users connected to the other node."""
import asyncio
import os
import random
import re
import socket
import time

from .conftest import Server, closing, free_port, make_client, online, wait_port


def at(d):
    srv = Server(d.port)
    srv.host = d.host
    return srv


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def console(d, line):
    with socket.create_connection(("127.0.0.1", d.admin), timeout=5) as s:
        s.sendall(line.encode() + b"\r\nquit\r\n")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return out.decode()


def stat(d, name):
    m = re.search(r"STAT %s (\d+)" % name, console(d, "stats"))
    return int(m.group(1)) if m else None


def start_nodes(daemon, tmp, secrets=("c-secret", "c-secret")):
    users = os.path.join(tmp, "users.txt")
    with open(users, "w") as f:
        f.write("alice:wonder\nbob:builder\ncarol:cat\n")
    db = "DBI:SQLite:dbname=%s" % os.path.join(tmp, "shared.sqlite")
    # each node on its own loopback address, as on separate hosts
    net = "127.%d.%d" % (random.randint(16, 250), random.randint(0, 255))
    hosts = (net + ".11", net + ".12")
    a_addr, b_addr = "%s:%d" % (hosts[0], free_port()), "%s:%d" % (hosts[1], free_port())
    nodes = []
    for host, me, peer, secret in ((hosts[0], a_addr, b_addr, secrets[0]), (hosts[1], b_addr, a_addr, secrets[1])):
        d = daemon("djabberd", ["--require_tls=no", "--c2s_port", "{port}", "--listen", host,
                                "--vhost", "localhost", "--users_file", users, "--storage", db,
                                "--cluster_listen", me, "--cluster_peer", peer, "--cluster_secret", secret,
                                "--admin", "127.0.0.1:{admin}"], ready_port=None)
        d.host = host
        wait_port(d.port, host=host, proc=d.proc)
        nodes.append(d)
    deadline = time.time() + 10
    while time.time() < deadline:
        if all(stat(d, "cluster_links_in") == 1 and stat(d, "cluster_links_out") == 1 for d in nodes):
            break
        time.sleep(0.05)
    return nodes


def test_message_and_presence_to_a_user_on_the_other_node(daemon, tmp_path):
    n1, n2 = start_nodes(daemon, str(tmp_path))
    assert stat(n1, "cluster_links_in") == 1 and stat(n2, "cluster_links_in") == 1

    async def go():
        a = await online(at(n1), "alice@localhost/one", "wonder")
        b = await online(at(n2), "bob@localhost/two", "builder")
        # the locations travel: node one lists bob as connected to node two,
        # and available once node two has taken his initial presence (a
        # message to his bare JID before that is kept offline, as for any
        # account with no available resource)
        def bob_there():
            return any(l.startswith("bob@localhost/two node:%s:" % n2.host) and l.endswith(" available")
                       for l in console(n1, "users").splitlines())

        for _ in range(200):
            if bob_there():
                break
            await asyncio.sleep(0.05)
        assert bob_there()
        a.send_message(mto="bob@localhost", mbody="across nodes", mtype="chat")
        m = await asyncio.wait_for(b.messages.get(), 10)
        assert m["body"] == "across nodes" and str(m["from"]) == "alice@localhost/one"
        b.send_message(mto="alice@localhost/one", mbody="and back", mtype="chat")
        m = await asyncio.wait_for(a.messages.get(), 10)
        assert m["body"] == "and back"
        # subscription and presence across nodes
        a.send_presence_subscription(pto="bob@localhost")
        for _ in range(200):
            ra = a.client_roster["bob@localhost"]["subscription"]
            rb = b.client_roster["alice@localhost"]["subscription"]
            if (ra, rb) == ("both", "both"):
                break
            await asyncio.sleep(0.05)
        assert (ra, rb) == ("both", "both")
        b.send_presence(pstatus="on node two")
        while True:
            p = await asyncio.wait_for(a.presences.get(), 10)
            if str(p["from"]) == "bob@localhost/two" and p["status"] == "on node two":
                break
        # bob leaves: alice sees it; a message to him now waits offline, and
        # he gets it from whichever node he logs in to
        b.disconnect()
        while True:
            p = await asyncio.wait_for(a.presences.get(), 10)
            if str(p["from"]) == "bob@localhost/two" and p["type"] == "unavailable":
                break
        await asyncio.sleep(0.3)
        a.send_message(mto="bob@localhost", mbody="kept for later", mtype="chat")
        await asyncio.sleep(0.5)
        b2 = make_client(at(n1), "bob@localhost/back", "builder", plugins=("xep_0203",))
        m = await asyncio.wait_for(b2.messages.get(), 10)
        assert m["body"] == "kept for later" and m["delay"]["stamp"] is not None
        await closing(a, b2)
    run(go())
    assert stat(n1, "cluster_forwarded") >= 1 and stat(n2, "cluster_forwarded") >= 1
    assert "ClusterDeliverMessage: links" in console(n1, "hooks")


def test_wrong_cluster_secret_is_refused(daemon, tmp_path):
    n1, n2 = start_nodes(daemon, str(tmp_path), secrets=("right", "wrong"))
    deadline = time.time() + 5
    while time.time() < deadline and not (stat(n1, "cluster_auth_failed") and stat(n2, "cluster_auth_failed")):
        time.sleep(0.05)
    assert stat(n1, "cluster_auth_failed") >= 1 and stat(n2, "cluster_auth_failed") >= 1
    assert stat(n1, "cluster_links_in") == 0 and stat(n2, "cluster_links_in") == 0
