"""djabberd's console, metrics, durable storage across restarts (SQLite and
a real MariaDB) and start-up refusals."""
import asyncio
import os
import subprocess
import urllib.request

from .conftest import Djabberd, Raw, closing, free_port, make_client, online


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_console_users_sessions_kick_reload_hooks(djabberd, tmp_path):
    srv = djabberd()
    a = Raw(srv).login("alice", "wonder", resource="desk")
    b = Raw(srv).login("bob", "builder", resource="phone")
    out = srv.console("users")
    assert "alice@localhost/desk 127.0.0.1:" in out and "bob@localhost/phone" in out
    assert "localhost 2" in srv.console("sessions")
    hooks = srv.console("hooks")
    assert "GetCreds: users_file db" in hooks
    assert "deliver: offline" in hooks
    assert "c2s-iq: ping version vcard" in hooks
    assert "KICKED 1" in srv.console("kick alice@localhost/desk")
    assert "policy-violation" in a.closed(timeout=5)
    assert "localhost 1" in srv.console("sessions")
    # reload picks up a new users_file line
    with open(os.path.join(str(tmp_path), "users.txt"), "a") as f:
        f.write("dave:d4ve\n")
    assert "OK 4 accounts" in srv.console("reload")
    Raw(srv).login("dave", "d4ve").close()
    b.close()
    stats = srv.console("stats")
    for k in ("c2s_sessions", "auth_ok", "stanzas_in", "messages_routed", "db_commits"):
        assert "STAT %s " % k in stats


def test_metrics_and_no_secret_in_settings(djabberd):
    port = free_port()
    srv = djabberd("--metrics", "127.0.0.1:%d" % port)
    Raw(srv).login("alice", "wonder").close()
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    assert "djabberd_auth_ok" in body
    settings = srv.console("show settings")
    assert "users_file" in settings and "wonder" not in settings


def test_roster_and_offline_survive_restart(djabberd):
    srv = djabberd()

    async def phase1():
        a = await online(srv, "alice@localhost/r", "wonder")
        b = await online(srv, "bob@localhost/r", "builder")
        a.send_presence_subscription(pto="bob@localhost")
        for _ in range(100):
            if a.client_roster["bob@localhost"]["subscription"] == "both":
                break
            await asyncio.sleep(0.05)
        await closing(b)
        await asyncio.sleep(0.2)
        a.send_message(mto="bob@localhost", mbody="kept across restart", mtype="chat")
        await asyncio.sleep(0.5)
        await closing(a)
    run(phase1())
    srv.d.restart()  # SIGTERM, clean exit asserted, start again on the same files

    async def phase2():
        b = make_client(srv, "bob@localhost/r", "builder", plugins=("xep_0203",))
        m = await asyncio.wait_for(b.messages.get(), 15)
        assert m["body"] == "kept across restart" and m["delay"]["stamp"] is not None
        await asyncio.wait_for(b.ready, 10)
        assert b.client_roster["alice@localhost"]["subscription"] == "both"
        await closing(b)
    run(phase2())


def test_mariadb_storage(daemon, tmp_path, mariadb):
    db = mariadb.create_database()
    dsn = "DBI:mysql:database=%s;host=127.0.0.1;port=%d;user=root" % (db, mariadb.port)
    srv = Djabberd(daemon, str(tmp_path), ["--storage", dsn])

    async def go():
        a = await online(srv, "alice@localhost/r", "wonder", plugins=("xep_0054",))
        v = a["xep_0054"].make_vcard()
        v["FN"] = "Alice in MariaDB"
        await a["xep_0054"].publish_vcard(v)
        a.send_message(mto="carol@localhost", mbody="to mariadb", mtype="chat")
        a.update_roster("carol@localhost", name="Carol", groups=["friends"])
        await asyncio.sleep(0.5)
        await closing(a)
    run(go())
    assert "Alice in MariaDB" in mariadb.sql("SELECT xml FROM dj_vcard", db)
    assert "to mariadb" in mariadb.sql("SELECT xml FROM dj_offline", db)
    row = mariadb.sql("SELECT owner, contact, name, grp FROM dj_roster", db)
    assert "alice@localhost\tcarol@localhost\tCarol\tfriends" in row

    async def later():
        c = make_client(srv, "carol@localhost/r", "cat", plugins=("xep_0203",))
        m = await asyncio.wait_for(c.messages.get(), 15)
        assert m["body"] == "to mariadb"
        await closing(c)
    run(later())
    assert mariadb.sql("SELECT COUNT(*) FROM dj_offline", db).strip() == "0"


def test_refuses_require_tls_without_a_certificate(tmp_path):
    binary = os.path.join(os.environ.get("BUILD_DIR", "build"), "bin", "djabberd")
    r = subprocess.run([binary, "--c2s_port", str(free_port()), "--storage",
                        "DBI:SQLite:dbname=%s" % (tmp_path / "x.sqlite")],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "require_tls" in r.stderr


def test_refuses_bad_dsn(tmp_path):
    binary = os.path.join(os.environ.get("BUILD_DIR", "build"), "bin", "djabberd")
    r = subprocess.run([binary, "--require_tls=no", "--c2s_port", str(free_port()), "--storage", "postgres://x"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "storage" in r.stderr


def test_alter_presence_hook_adds_avatar_hash(djabberd):
    """The bundled vcard_update plugin (AlterPresence chain, answering after
    a VCardGet database query) stamps XEP-0153 avatar hashes into presence."""
    import hashlib
    srv = djabberd()
    photo = bytes(range(256)) * 4

    async def go():
        a = await online(srv, "alice@localhost/one", "wonder", plugins=("xep_0054",))
        watcher = await online(srv, "alice@localhost/two", "wonder")
        v = a["xep_0054"].make_vcard()
        v["FN"] = "Alice"
        v["PHOTO"]["TYPE"] = "image/png"
        v["PHOTO"]["BINVAL"] = photo
        await a["xep_0054"].publish_vcard(v)
        a.send_presence(pstatus="with avatar")
        want = hashlib.sha1(photo).hexdigest()
        while True:
            p = await asyncio.wait_for(watcher.presences.get(), 10)
            if str(p["from"]) == "alice@localhost/one" and p["status"] == "with avatar":
                break
        el = p.xml.find("{vcard-temp:x:update}x/{vcard-temp:x:update}photo")
        assert el is not None and el.text == want
        await closing(a, watcher)
    run(go())
    assert "AlterPresence: vcard_update" in srv.console("hooks")
    assert "DiscoInfo: version" in srv.console("hooks")
