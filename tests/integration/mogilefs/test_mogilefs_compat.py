"""Behaviours compared with MogileFS 2.73's own code (Worker/Query.pm,
Device.pm) and MogileFS::Client's edit_file: the create_open destination
rule, edit_file, plugin commands without plugins, and what the client's
edit_file sends to a storage node (a WebDAV MOVE, partial PUTs).
The real Perl MogileFS::Client's edit_file (in place and with overwrite)
was run against these daemons from a scratch copy; these tests replay its
requests."""
import http.client
import urllib.parse

import pytest

from .mog_cluster import wait_until
from .mogclient import MogError, http_get, http_put


def http_req(method, url, headers=None, body=None):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.request(method, u.path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def test_create_open_multi_dest_skips_a_device_whose_devid_is_a_chosen_hostid(cluster_factory):
    # MogileFS 2.73's Device::not_on_hosts compares a device's devid with
    # the chosen destinations' hostids. One host (hostid 1) with devices 1
    # and 2: when device 1 is chosen first, device 2 is offered too; when
    # device 2 is chosen first, device 1 (devid 1 == hostid 1) is skipped.
    c = cluster_factory(nhosts=1, devs_per_host=2)
    c.admin.create_domain("md")
    cl = c.client("md")
    seen = set()
    for i in range(60):
        res = cl.new_file_open("k%d" % i, size=10)
        first = res["devid_1"]
        count = int(res["dev_count"])
        if first == "1":
            assert count == 2 and res["devid_2"] == "2"
        else:
            assert first == "2" and count == 1
        seen.add(first)
        if seen == {"1", "2"}:
            break
    assert seen == {"1", "2"}


def test_create_open_offers_distinct_host_devices_when_devids_match_hostids(cluster):
    # Three hosts with one device each (devid == hostid): three destinations.
    res = cluster.client("testdom").new_file_open("three", size=10)
    assert int(res["dev_count"]) == 3
    assert sorted(res["devid_%d" % i] for i in (1, 2, 3)) == ["1", "2", "3"]


def test_edit_file_moves_one_copy_to_a_new_fid_for_the_same_key(cluster):
    cl = cluster.client("testdom")
    cl.store_content("editme", "two", b"first version")
    wait_until(lambda: len(cl.get_paths("editme", noverify=1, pathcount=5)) == 2, what="2 copies")
    old_fid = cluster.admin.backend.do_request("file_info", {"domain": "testdom", "key": "editme"})["fid"]
    res = cl.backend.do_request("edit_file", {"domain": "testdom", "key": "editme"})
    assert set(res) == {"oldpath", "newpath", "fid", "devid", "class"}
    assert res["fid"] != old_fid
    assert res["oldpath"].endswith("/dev%s/0/000/000/%010d.fid" % (res["devid"], int(old_fid)))
    assert res["newpath"].endswith("/dev%s/0/000/000/%010d.fid" % (res["devid"], int(res["fid"])))
    # As MogileFS::Client's edit_file: MOVE the old copy to the new name.
    st, _ = http_req("MOVE", res["oldpath"], {"Destination": res["newpath"]})
    assert st == 201
    assert http_get(res["oldpath"])[0] == 404
    assert http_get(res["newpath"]) == (200, b"first version")
    # The edited file is then written and closed as the new fid.
    assert http_put(res["newpath"], b"second version") == 200
    cl.backend.do_request("create_close", {"fid": res["fid"], "devid": res["devid"], "domain": "testdom",
                                           "size": 14, "key": "editme", "path": res["newpath"]})
    assert cl.get_file_data("editme") == b"second version"
    info = cluster.admin.backend.do_request("file_info", {"domain": "testdom", "key": "editme"})
    assert info["fid"] == res["fid"]
    # The old fid's other copy is deleted; the new fid is replicated again.
    wait_until(lambda: all(b"first" not in http_get(u)[1] for u in cl.get_paths("editme", noverify=1, pathcount=5))
               and len(cl.get_paths("editme", noverify=1, pathcount=5)) == 2, what="new fid on 2 devices")


def test_edit_file_errors_as_the_original(cluster):
    b = cluster.client("testdom").backend
    for args, code in (({"key": "x"}, "no_domain"), ({"domain": "nodom", "key": "x"}, "unreg_domain"),
                       ({"domain": "testdom"}, "no_key"), ({"domain": "testdom", "key": "nokey"}, "unknown_key")):
        with pytest.raises(MogError) as e:
            b.do_request("edit_file", args)
        assert e.value.code == code


def test_plugin_commands_without_a_loaded_plugin_are_unknown_commands(cluster):
    # 2.73 registers plugin commands as "plugin_<name>" only when a plugin
    # is loaded; none is, so they are unknown commands like any other word.
    b = cluster.client("testdom").backend
    for cmd in ("plugin_filepaths_list_directory", "plugin_meta_get", "plugin_"):
        assert b.raw("%s domain=testdom&key=x" % cmd) == "ERR unknown_command Unknown+server+command"


def test_storage_node_move_as_webdav(cluster):
    s = cluster.stores[0]
    base = "http://%s:%d/dev1" % (s.ip, s.http_port)
    assert http_put(base + "/mv/a.fid", b"abc") == 200
    # On one keep-alive connection (one loop of the node, whose open-file
    # cache holds the file just served): after the MOVE the old name is
    # gone at once. Missing folders above the destination are made; 201
    # for a new name.
    conn = http.client.HTTPConnection(s.ip, s.http_port, timeout=30)

    def on_conn(method, path, headers=None):
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    assert on_conn("GET", "/dev1/mv/a.fid") == (200, b"abc")
    assert on_conn("MOVE", "/dev1/mv/a.fid", {"Destination": base + "/mv2/x/b.fid"})[0] == 201
    assert on_conn("GET", "/dev1/mv/a.fid")[0] == 404
    assert on_conn("GET", "/dev1/mv2/x/b.fid") == (200, b"abc")
    assert http_put(base + "/mv/c.fid", b"c") == 200
    # A path-only Destination works; Overwrite: F refuses an existing name.
    assert http_req("MOVE", base + "/mv/c.fid", {"Destination": "/dev1/mv2/x/b.fid", "Overwrite": "F"})[0] == 412
    assert http_req("MOVE", base + "/mv/c.fid", {"Destination": "/dev1/mv2/x/b.fid"})[0] == 204
    assert on_conn("GET", "/dev1/mv2/x/b.fid") == (200, b"c")  # not the replaced file's cached copy
    conn.close()
    assert http_req("MOVE", base + "/mv/none.fid", {"Destination": base + "/mv/z.fid"})[0] == 404
    for dest in ("", base + "/../../etc/passwd", "http://h:1/dev99/x.fid", "/dev1/"):
        hdrs = {"Destination": dest} if dest else {}
        assert http_req("MOVE", base + "/mv2/x/b.fid", hdrs)[0] == 400
    assert http_get(base + "/mv2/x/b.fid") == (200, b"c")


def test_storage_node_partial_put_writes_in_place(cluster):
    # "PUT" with Content-Range (MogileFS::ClientHTTPFile's writes after
    # edit_file): the bytes land at their offset; the rest of the file stays.
    s = cluster.stores[0]
    url = "http://%s:%d/dev1/pp/a.fid" % (s.ip, s.http_port)
    assert http_put(url, b"0123456789") == 200
    assert http_put(url, b"xy", {"Content-Range": "bytes 4-5/*"}) == 200
    assert http_get(url) == (200, b"0123xy6789")
    # Past the end the file grows; a new file is made.
    assert http_put(url, b"END", {"Content-Range": "bytes 10-12/13"}) == 200
    assert http_get(url) == (200, b"0123xy6789END")
    new = "http://%s:%d/dev1/pp/sub/b.fid" % (s.ip, s.http_port)
    assert http_put(new, b"ab", {"Content-Range": "bytes 0-1/*"}) == 200
    assert http_get(new) == (200, b"ab")
    # A range that does not match the body, or is malformed: 400, nothing written.
    for rng in ("bytes 0-5/*", "bytes 5-2/*", "bytes=0-1/*", "bytes 0-1/1"):
        assert http_put(url, b"zz", {"Content-Range": rng}) == 400, rng
    assert http_get(url) == (200, b"0123xy6789END")
    # Starting past the end (a hole) is refused.
    assert http_put(url, b"zz", {"Content-Range": "bytes 100-101/*"}) == 416
    assert http_put(new + "x", b"zz", {"Content-Range": "bytes 1-2/*"}) == 416
    assert http_get(url) == (200, b"0123xy6789END")
    assert http_put("http://%s:%d/dev9/x.fid" % (s.ip, s.http_port), b"zz",
                    {"Content-Range": "bytes 0-1/*"}) == 404


def test_edit_file_in_place_as_mogilefs_client_does(cluster):
    # MogileFS::Client::edit_file without overwrite: edit_file, MOVE, HEAD
    # for the length, a Content-Range PUT at the offset, create_close.
    cl = cluster.client("testdom")
    cl.store_content("inplace", "one", b"hello world")
    res = cl.backend.do_request("edit_file", {"domain": "testdom", "key": "inplace"})
    assert http_req("MOVE", res["oldpath"], {"Destination": res["newpath"]})[0] == 201
    st, _ = http_req("HEAD", res["newpath"])
    assert st == 200
    assert http_put(res["newpath"], b"WORLD", {"Content-Range": "bytes 6-10/*"}) == 200
    cl.backend.do_request("create_close", {"fid": res["fid"], "devid": res["devid"], "domain": "testdom",
                                           "size": 11, "key": "inplace", "path": res["newpath"]})
    assert cl.get_file_data("inplace") == b"hello WORLD"


def test_replication_policy_forms(cluster):
    # MogileFS-Network's policies are accepted as with it installed;
    # HostsPerNetwork needs zone=N pairs (N >= 1).
    adm = cluster.admin
    adm.create_domain("poldom")
    for i, pol in enumerate(("MultipleNetworks()", "MultipleNetworks(3)", "HostsPerNetwork(a=1, b=2)",
                             "HostsPerNetwork(east=2)")):
        adm.create_class("poldom", "ok%d" % i, 2, replpolicy=pol)
        assert adm.get_domains()["poldom"]["ok%d" % i]["replpolicy"] == pol
    for i, pol in enumerate(("HostsPerNetwork()", "HostsPerNetwork(a)", "HostsPerNetwork(a=0)",
                             "HostsPerNetwork(=1)", "MultipleNetworks(x)", "Bogus(1)")):
        with pytest.raises(MogError) as e:
            adm.create_class("poldom", "bad%d" % i, 2, replpolicy=pol)
        assert e.value.code == "invalid_replpolicy", pol


# Every command MogileFS 2.73's Worker/Query.pm answers.
COMMANDS_2_73 = (
    "clear_cache create_class create_close create_device create_domain create_host create_open delete "
    "delete_class delete_domain delete_host do_monitor_round edit_file file_debug file_info fsck_clearlog "
    "fsck_getlog fsck_reset fsck_start fsck_status fsck_stop get_devices get_domains get_hosts get_paths "
    "httpcopy list_fids list_keys noop rebalance_reset rebalance_set_policy rebalance_start rebalance_status "
    "rebalance_stop rebalance_test rename replicate_now server_setting server_settings set_server_setting "
    "set_state set_weight sleep test update_class update_host updateclass").split()


def test_every_command_without_arguments_or_with_empty_ones_gets_an_answer(cluster_factory):
    # Missing and empty arguments (a found crash: rebalance_set_policy
    # without a policy) must get OK or ERR, and the tracker goes on.
    c = cluster_factory(nhosts=1)
    b = c.client("x").backend
    for cmd in COMMANDS_2_73:
        for args in ("", "domain=&key=&class=&fid=&devid=&path=&host=&device=&state=&weight=&policy=&value=",
                     "domain=nodom&key=k&fid=abc&devid=abc&from=abc&to=abc&limit=abc&duration=0"):
            line = cmd + (" " + args if args else "")
            if cmd == "sleep":  # without a duration it sleeps 10 s, as the original
                line = "sleep duration=0&" + args
            reply = b.raw(line)
            assert reply.startswith(("OK", "ERR ")), (line, reply)
    assert b.raw("noop") == "OK "


def test_answers_aligned_with_the_perl_tracker_side_by_side(cluster_factory):
    # Each line was sent to the Perl 2.73 tracker and ours side by side;
    # these are the answers that differed before round 3.
    c = cluster_factory(nhosts=1)
    b = c.client("x").backend
    c.admin.create_domain("al")
    c.admin.create_class("al", "c1", 1)
    expect = [
        # create_close checks the domain before fid/devid/path
        ("create_close", "ERR no_domain No+domain+provided"),
        ("create_close fid=1", "ERR no_domain No+domain+provided"),
        ("create_close fid=99999&devid=1&path=http://x/y&domain=al", "ERR bogus_args bogus_args"),
        # updateclass of an unknown key
        ("updateclass domain=al&key=nokey&class=c1", "ERR invalid_key invalid_key"),
        # file_debug of an unknown fid by number is no error
        ("file_debug fid=99999", "OK checksum=NONE"),
        # set_weight without a weight sets 0; a negative one is refused
        ("set_weight host=host1&device=1", "OK "),
        ("set_weight host=host1&device=1&weight=-1",
         "ERR bad_params Invalid+parameters+to+command%3B+please+see+documentation"),
        ("set_weight host=host1&device=1&weight=100", "OK "),
        # a second host on an address already used
        ("create_host host=other&ip=%s&port=7500" % c.stores[0].ip, "ERR dup Duplicate+name/number+used."),
        # httpcopy: an unknown fid fails, an unknown device is a copy error
        ("httpcopy sdevid=1&ddevid=2&fid=999", "ERR failure Operation+failed"),
        # rebalance policies: the original's words for an unknown key; no
        # policy at all is accepted (the setting is removed)
        ("rebalance_set_policy policy=bogus", "ERR bad_rebal_pol Invalid+setting+bogus"),
        ("rebalance_set_policy", "OK "),
    ]
    for line, want in expect:
        assert b.raw(line) == want, line
    c.client("al").store_content("k", "c1", b"data")
    fid = c.admin.backend.do_request("file_info", {"domain": "al", "key": "k"})["fid"]
    assert b.raw("httpcopy sdevid=1&ddevid=77&fid=%s" % fid) == "ERR copy_err copy_err"


def test_plugins_setting_loads_zonelocal_and_refuses_others(tmp_path):
    # As MogileFS: a plugin that cannot be loaded stops the start, and
    # ZoneLocal needs local_network.
    import subprocess
    from .mog_cluster import bin_path, free_port
    for extra, want in (("plugins = FilePaths", "unable to load plugin FilePaths"),
                        ("plugins = ZoneLocal", "must define 'local_network'")):
        conf = tmp_path / "p.conf"
        conf.write_text("db_dsn = DBI:SQLite:dbname=%s\nlisten = 127.0.0.1:%d\n%s\n"
                        % (tmp_path / "p.sqlite", free_port(), extra))
        r = subprocess.run([bin_path("mogilefsd"), "-c", str(conf)], capture_output=True, timeout=30)
        assert r.returncode != 0
        assert want in r.stderr.decode(), r.stderr.decode()


def test_storage_node_survives_clients_leaving_during_move_and_partial_put(cluster):
    # The fsyncs of a MOVE or a partial PUT run on the node's disk pool;
    # a client gone meanwhile must leave nothing dangling.
    import socket
    s = cluster.stores[1]
    base = "http://%s:%d/dev2/gone" % (s.ip, s.http_port)
    for i in range(30):
        assert http_put("%s/f%d.fid" % (base, i), b"x" * 100) == 200
    for i in range(30):
        with socket.create_connection((s.ip, s.http_port), timeout=5) as c:
            if i % 2:
                c.sendall(("MOVE /dev2/gone/f%d.fid HTTP/1.1\r\nHost: x\r\nDestination: /dev2/gone/m%d.fid\r\n\r\n"
                           % (i, i)).encode())
            else:
                c.sendall(("PUT /dev2/gone/f%d.fid HTTP/1.1\r\nHost: x\r\nContent-Range: bytes 0-1/*\r\n"
                           "Content-Length: 2\r\n\r\nyy" % i).encode())
    # Still serving, and every request that arrived whole was carried out.
    assert http_put(base + "/after.fid", b"ok") == 200
    for i in range(30):
        if i % 2:
            wait_until(lambda: http_get("%s/m%d.fid" % (base, i))[0] == 200, timeout=10, what="moved")
        else:
            wait_until(lambda: http_get("%s/f%d.fid" % (base, i)) == (200, b"yy" + b"x" * 98), timeout=10,
                       what="written")
