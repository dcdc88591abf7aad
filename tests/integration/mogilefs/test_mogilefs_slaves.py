"""Read slaves as MogileFS 2.73 uses them: slave_keys and slave_<key>
server settings written as MogileFS::Admin's slave_add/slave_modify do; a
MySQL tracker reads a key's file row and devices for get_paths, file_info
and edit_file from a live slave; every write and every other read stays
on the master; a slave that cannot be reached is skipped for the master.
The "slave" here is a second database on the private MariaDB holding a
copy of the file tables, changed after the copy so each answer shows which
database it came from."""
import tempfile

import pytest

from . import mogclient
from .mog_cluster import Storage, Tracker, free_port, wait_until
from .mogclient import MogError


def slave_add(adm, key, dsn, user, password):
    """MogileFS::Admin::slave_add: the slave's setting, then slave_keys."""
    b = adm.backend
    keys = b.do_request("server_setting", {"key": "slave_keys"})["value"]
    b.do_request("set_server_setting", {"key": "slave_" + key, "value": "|".join((dsn, user, password))})
    b.do_request("set_server_setting", {"key": "slave_keys", "value": ",".join(filter(None, [keys, key]))})


def test_reads_go_to_a_live_slave_and_writes_to_the_master(mariadb):
    master = mariadb.create_database()
    slave = mariadb.create_database()
    dsn = "DBI:mysql:database=%s;host=127.0.0.1;port=%d" % (master, mariadb.port)
    tmp = tempfile.mkdtemp(prefix="mogsl-")
    stores = [Storage(tmp, "127.0.3.%d" % (i + 2), [i + 1]) for i in range(2)]
    tr = Tracker(tmp, dsn=dsn, conf_lines=["db_user = root", "db_pass = "])
    try:
        adm = mogclient.Admin([tr.addr])
        for i, s in enumerate(stores):
            adm.create_host("h%d" % i, s.ip, s.http_port)
            adm.create_device("h%d" % i, s.devids[0])
        adm.create_domain("sd")
        adm.create_class("sd", "one", 1)
        wait_until(lambda: all(d["observed_state"] == "writeable" for d in adm.get_devices()), what="writeable")
        cl = mogclient.Client("sd", [tr.addr])
        cl.store_content("k1", "one", b"slave test")
        fid = cl.file_info("k1")["fid"]
        for t in ("file", "file_on"):
            mariadb.sql("CREATE TABLE `%s`.%s LIKE `%s`.%s" % (slave, t, master, t))
            mariadb.sql("INSERT INTO `%s`.%s SELECT * FROM `%s`.%s" % (slave, t, master, t))
        mariadb.sql("UPDATE file SET dkey='only-on-slave' WHERE dkey='k1'", database=slave)
        sdsn = "DBI:mysql:database=%s;host=127.0.0.1;port=%d" % (slave, mariadb.port)
        slave_add(adm, "s1", sdsn, "root", "")
        assert adm.backend.do_request("server_setting", {"key": "slave_keys"})["value"] == "s1"
        # Each slave_* change bumps slave_version (the original's hook).
        assert adm.backend.do_request("server_setting", {"key": "slave_version"})["value"] == "2"
        # get_paths and file_info read the key through the slave.
        assert cl.get_file_data("only-on-slave") == b"slave test"
        assert cl.file_info("only-on-slave")["fid"] == fid
        with pytest.raises(MogError) as e:
            cl.get_paths("k1")
        assert e.value.code == "unknown_key"
        # Many clients at once: every read still goes to the slave (each
        # query thread has a slave connection of its own; a read sent to the
        # master would not find this key).
        import threading
        errors = []

        def reader():
            c2 = mogclient.Client("sd", [tr.addr])
            try:
                for _ in range(15):
                    assert len(c2.get_paths("only-on-slave", noverify=1)) >= 1
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
        threads = [threading.Thread(target=reader) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        # list_keys reads the master, as the original.
        assert cl.list_keys("")[1] == ["k1"]
        # Writes go to the master only.
        cl.store_content("k2", "one", b"second")
        assert mariadb.sql("SELECT COUNT(*) FROM file WHERE dkey='k2'", database=master).strip() == "1"
        assert mariadb.sql("SELECT COUNT(*) FROM file WHERE dkey='k2'", database=slave).strip() == "0"
        # A slave that cannot be reached (slave_modify to a dead port): the
        # master answers, and the key the slave renamed is found again.
        dead = "DBI:mysql:database=%s;host=127.0.0.1;port=%d" % (slave, free_port())
        adm.backend.do_request("set_server_setting", {"key": "slave_s1", "value": dead + "|root|"})
        assert cl.get_file_data("k1") == b"slave test"
        assert cl.get_file_data("k2") == b"second"
        with pytest.raises(MogError) as e:
            cl.get_paths("only-on-slave")
        assert e.value.code == "unknown_key"
        # slave_delete: the key's setting blanked (deleted) and slave_keys emptied.
        adm.backend.do_request("set_server_setting", {"key": "slave_s1", "value": ""})
        adm.backend.do_request("set_server_setting", {"key": "slave_keys", "value": ""})
        assert mariadb.sql("SELECT COUNT(*) FROM server_settings WHERE field='slave_s1'",
                           database=master).strip() == "0"
        assert adm.backend.do_request("server_setting", {"key": "slave_version"})["value"] == "5"
    finally:
        for p in [tr] + stores:
            try:
                p.stop()
            finally:
                p.kill9()


def test_an_sqlite_tracker_ignores_slaves_as_the_original(cluster):
    # MogileFS's SQLite store cannot have slaves: reads stay on the master.
    adm = cluster.admin
    slave_add(adm, "s9", "DBI:mysql:database=none;host=127.0.0.1;port=%d" % free_port(), "root", "")
    cl = cluster.client("testdom")
    cl.store_content("sq-slave", "one", b"x")
    assert cl.get_file_data("sq-slave") == b"x"
    adm.backend.do_request("set_server_setting", {"key": "slave_s9", "value": ""})
    adm.backend.do_request("set_server_setting", {"key": "slave_keys", "value": ""})


def test_set_server_setting_checks_values_as_the_original(cluster):
    b = cluster.admin.backend
    for key, value, code in (("zone_x", "10.20", "invalid_format"), ("zone_x", "bogus", "invalid_format"),
                             ("memcache_ttl", "soon", "invalid_format"), ("skip_devcount", "maybe", "invalid_format"),
                             ("fsck_checksum", "CRC", "invalid_format"), ("no_such_key", "1", "not_writable")):
        with pytest.raises(MogError) as e:
            b.do_request("set_server_setting", {"key": key, "value": value})
        assert e.value.code == code, (key, value)
    b.do_request("set_server_setting", {"key": "skip_devcount", "value": "on"})
    assert b.do_request("server_setting", {"key": "skip_devcount"})["value"] == "1"
    b.do_request("set_server_setting", {"key": "skip_devcount", "value": "No"})
    assert b.do_request("server_setting", {"key": "skip_devcount"})["value"] == "0"
    b.do_request("set_server_setting", {"key": "zone_x", "value": "10.1.0.0/16, 10.2.0.0/16"})
    assert b.do_request("server_setting", {"key": "zone_x"})["value"] == "10.1.0.0/16, 10.2.0.0/16"
