"""Two trackers on one private MariaDB: the schema is created there, fids
never collide, admin changes made through one are seen by the other, and
each fid is replicated once (to exactly mindevcount copies)."""
import os
import tempfile
import threading

from . import mogclient
from .mog_cluster import Storage, Tracker, wait_until


def test_two_trackers_share_one_mariadb(mariadb):
    dbname = mariadb.create_database()
    dsn = "DBI:mysql:database=%s;host=127.0.0.1;port=%d" % (dbname, mariadb.port)
    tmp = tempfile.mkdtemp(prefix="mogmy-")
    stores = [Storage(tmp, "127.0.2.%d" % (i + 2), [i + 1]) for i in range(3)]
    conf = ["db_user = root", "db_pass = "]
    ta = Tracker(tmp, dsn=dsn, conf_lines=conf)
    tb = Tracker(tmp, dsn=dsn, conf_lines=conf)
    try:
        tables = mariadb.sql("SHOW TABLES", database=dbname).split()
        assert {"domain", "class", "file", "tempfile", "file_on", "host", "device", "file_to_replicate",
                "file_to_delete2", "server_settings", "checksum", "fsck_log"} <= set(tables)
        assert mariadb.sql("SELECT value FROM server_settings WHERE field='schema_version'",
                           database=dbname).strip() == "17"
        adm_a = mogclient.Admin([ta.addr])
        adm_b = mogclient.Admin([tb.addr])
        for i, s in enumerate(stores):
            adm_a.create_host("h%d" % i, s.ip, s.http_port)
            adm_a.create_device("h%d" % i, s.devids[0])
        adm_b.create_domain("shared")
        adm_a.create_class("shared", "two", 2)
        assert "two" in adm_b.get_domains()["shared"]
        wait_until(lambda: all(d["observed_state"] == "writeable" for d in adm_b.get_devices()),
                   what="devices writeable on tracker b")
        errors, fids = [], []

        def upload(addr, tag):
            c = mogclient.Client("shared", [addr])
            try:
                for i in range(15):
                    c.store_content("%s-%d" % (tag, i), "two", b"%s %d" % (tag.encode(), i))
                    fids.append(c.file_info("%s-%d" % (tag, i))["fid"])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
        threads = [threading.Thread(target=upload, args=(t.addr, tag)) for t, tag in
                   ((ta, "a"), (tb, "b"), (ta, "c"), (tb, "d"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(fids) == 60 and len(set(fids)) == 60
        ca, cb = mogclient.Client("shared", [ta.addr]), mogclient.Client("shared", [tb.addr])
        for tag in "abcd":
            for i in range(15):
                key = "%s-%d" % (tag, i)
                assert cb.get_file_data(key) == ca.get_file_data(key) == b"%s %d" % (tag.encode(), i)
        wait_until(lambda: mariadb.sql("SELECT COUNT(*) FROM file_to_replicate", database=dbname).strip() == "0",
                   timeout=60, what="replication queue drained")
        counts = mariadb.sql("SELECT fid, COUNT(*) FROM file_on GROUP BY fid", database=dbname).split("\n")
        per_fid = [int(l.split()[1]) for l in counts if l.strip()]
        assert len(per_fid) == 60 and all(n == 2 for n in per_fid), per_fid
        ca.delete("a-0")
        try:
            cb.get_paths("a-0")
            raise AssertionError("deleted key still served by the other tracker")
        except mogclient.MogError as e:
            assert e.code == "unknown_key"
    finally:
        ta.stop()
        tb.stop()
        for s in stores:
            s.stop()
