"""A small Python MogileFS client that sends, request for request, what the
Perl MogileFS::Client 1.17, MogileFS::Admin and mogadm send (argument names,
encoding, one request per socket at a time), so the tests drive the tracker
the way those tools do. Written from their public sources; no code copied.
"""
import http.client
import random
import re
import socket
import time
import urllib.parse

SAFE = re.compile(rb"[A-Za-z0-9_,\-./\\: ]")


def eurl(value):
    """MogileFS's escaping: everything but [A-Za-z0-9_,-./\\: ] as %XX, space as +."""
    if not isinstance(value, (str, bytes)):
        value = str(value)
    if isinstance(value, str):
        value = value.encode()
    out = []
    for b in value:
        c = bytes([b])
        if c == b" ":
            out.append("+")
        elif SAFE.match(c):
            out.append(c.decode())
        else:
            out.append("%%%02X" % b)
    return "".join(out)


def encode_args(args):
    return "&".join("%s=%s" % (eurl(k), eurl(v)) for k, v in args.items() if v is not None)


def decode_args(text):
    out = {}
    for pair in text.split("&"):
        if not pair:
            continue
        k, _, v = pair.partition("=")
        out[urllib.parse.unquote_plus(k)] = urllib.parse.unquote_plus(v)
    return out


class MogError(Exception):
    def __init__(self, code, text):
        super().__init__("%s %s" % (code, text))
        self.code = code
        self.text = text


class Backend:
    """MogileFS::Backend: trackers tried in random order, 3 s reply timeout."""

    def __init__(self, hosts, timeout=3.0):
        self.hosts = list(hosts)
        self.timeout = timeout
        self.sock = None
        self.f = None
        self.dead = {}

    def _connect(self):
        hosts = self.hosts[:]
        random.shuffle(hosts)
        last = None
        for h in hosts:
            if self.dead.get(h, 0) > time.time():
                continue
            host, port = h.rsplit(":", 1)
            try:
                s = socket.create_connection((host, int(port)), timeout=0.25 if len(hosts) > 1 else 2)
                s.settimeout(self.timeout)
                self.sock = s
                self.f = s.makefile("rwb")
                return
            except OSError as e:
                last = e
                self.dead[h] = time.time() + 5
        raise ConnectionError("no tracker reachable: %s" % last)

    def raw(self, line):
        """Send one line, return the reply line (str, without CRLF)."""
        for attempt in range(2):
            if self.sock is None:
                self._connect()
            try:
                self.f.write(line.encode() + b"\r\n")
                self.f.flush()
                reply = self.f.readline()
                if not reply:
                    raise ConnectionError("tracker closed")
                return reply.decode().rstrip("\r\n")
            except (OSError, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise ConnectionError("unreachable")

    def do_request(self, cmd, args):
        reply = self.raw("%s %s" % (cmd, encode_args(args)))
        m = re.match(r"^OK\s+\d*\s*(\S*)", reply)
        if m:
            return decode_args(m.group(1))
        m = re.match(r"^ERR\s+(\w+)\s*(\S*)", reply)
        if m:
            raise MogError(m.group(1), urllib.parse.unquote_plus(m.group(2)))
        raise MogError("bad_reply", reply)

    def close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.f = None


def http_put(url, data, headers=None):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    h = {"Content-Length": str(len(data))}
    h.update(headers or {})
    c.putrequest("PUT", u.path, skip_accept_encoding=True)
    for k, v in h.items():
        c.putheader(k, v)
    c.endheaders()
    if data:
        c.send(data)
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def http_get(url, headers=None):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.request("GET", u.path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


class Client:
    """MogileFS::Client's calls."""

    def __init__(self, domain, hosts):
        self.domain = domain
        self.backend = Backend(hosts)

    def new_file_open(self, key, cls=None, size=None):
        args = {"domain": self.domain, "class": cls, "key": key, "fid": 0, "multi_dest": 1}
        if size is not None:
            args["size"] = size
        return self.backend.do_request("create_open", args)

    def store_content(self, key, cls, data, checksum=None, checksumverify=None):
        """new_file + print + close, as store_content does: PUT to the first
        destination (HTTP/1.0 with Content-length), then create_close."""
        res = self.new_file_open(key, cls, size=len(data))
        dests = [(res["devid_%d" % i], res["path_%d" % i]) for i in range(1, int(res["dev_count"]) + 1)]
        devid, path = dests[0]
        status = http_put(path, data)
        if status // 100 != 2:
            raise MogError("put_failed", "HTTP %d" % status)
        args = {"fid": res["fid"], "devid": devid, "domain": self.domain, "size": len(data), "key": key, "path": path}
        if checksum:
            args["checksum"] = checksum
        if checksumverify:
            args["checksumverify"] = 1
        self.backend.do_request("create_close", args)
        return len(data)

    def get_paths(self, key, noverify=0, pathcount=None, zone=None):
        args = {"domain": self.domain, "key": key, "noverify": 1 if noverify else 0, "zone": zone}
        if pathcount:
            args["pathcount"] = pathcount
        res = self.backend.do_request("get_paths", args)
        return [res["path%d" % i] for i in range(1, int(res["paths"]) + 1)]

    def get_file_data(self, key):
        for url in self.get_paths(key, noverify=1):
            try:
                status, body = http_get(url)
            except OSError:
                continue
            if status == 200:
                return body
        raise MogError("no_paths", key)

    def delete(self, key):
        self.backend.do_request("delete", {"domain": self.domain, "key": key})

    def rename(self, fkey, tkey):
        self.backend.do_request("rename", {"domain": self.domain, "from_key": fkey, "to_key": tkey})

    def update_class(self, key, cls):
        self.backend.do_request("updateclass", {"domain": self.domain, "key": key, "class": cls})

    def file_info(self, key, devices=0):
        return self.backend.do_request("file_info", {"domain": self.domain, "key": key, "devices": devices})

    def list_keys(self, prefix, after=None, limit=None):
        try:
            res = self.backend.do_request("list_keys", {"domain": self.domain, "prefix": prefix, "after": after,
                                                        "limit": limit})
        except MogError as e:
            if e.code == "none_match":
                return None, []
            raise
        keys = [res["key_%d" % i] for i in range(1, int(res["key_count"]) + 1)]
        return res["next_after"], keys

    def foreach_key(self, prefix=""):
        after = None
        while True:
            after, keys = self.list_keys(prefix, after, 1000)
            if not keys:
                return
            for k in keys:
                yield k


class Admin:
    """MogileFS::Admin / mogadm calls."""

    def __init__(self, hosts):
        self.backend = Backend(hosts)

    def get_domains(self):
        res = self.backend.do_request("get_domains", {})
        out = {}
        for i in range(1, int(res["domains"]) + 1):
            classes = {}
            for j in range(1, int(res["domain%dclasses" % i]) + 1):
                classes[res["domain%dclass%dname" % (i, j)]] = {
                    "mindevcount": int(res["domain%dclass%dmindevcount" % (i, j)]),
                    "replpolicy": res.get("domain%dclass%dreplpolicy" % (i, j)),
                    "hashtype": res.get("domain%dclass%dhashtype" % (i, j)),
                }
            out[res["domain%d" % i]] = classes
        return out

    def create_domain(self, domain):
        return self.backend.do_request("create_domain", {"domain": domain})

    def delete_domain(self, domain):
        return self.backend.do_request("delete_domain", {"domain": domain})

    def create_class(self, domain, cls, mindevcount, replpolicy=None, hashtype=None):
        return self.backend.do_request("create_class", {"domain": domain, "class": cls, "mindevcount": mindevcount,
                                                        "replpolicy": replpolicy, "hashtype": hashtype})

    def update_class(self, domain, cls, mindevcount, replpolicy=None, hashtype=None):
        return self.backend.do_request("update_class", {"domain": domain, "class": cls, "mindevcount": mindevcount,
                                                        "replpolicy": replpolicy, "hashtype": hashtype})

    def delete_class(self, domain, cls):
        return self.backend.do_request("delete_class", {"domain": domain, "class": cls})

    def create_host(self, host, ip, port, status="alive"):
        return self.backend.do_request("create_host", {"host": host, "ip": ip, "port": port, "status": status})

    def update_host(self, host, **kw):
        args = {"host": host}
        args.update(kw)
        return self.backend.do_request("update_host", args)

    def delete_host(self, host):
        return self.backend.do_request("delete_host", {"host": host})

    def get_hosts(self):
        res = self.backend.do_request("get_hosts", {})
        return [{k: res.get("host%d_%s" % (i, k)) for k in
                 ("hostid", "status", "hostname", "hostip", "http_port", "http_get_port", "altip", "altmask")}
                for i in range(1, int(res["hosts"]) + 1)]

    def create_device(self, hostname, devid, state="alive"):
        return self.backend.do_request("create_device", {"hostname": hostname, "devid": devid, "state": state})

    def get_devices(self):
        res = self.backend.do_request("get_devices", {})
        return [{k: res.get("dev%d_%s" % (i, k)) for k in
                 ("devid", "hostid", "status", "observed_state", "utilization", "mb_total", "mb_used", "weight")}
                for i in range(1, int(res["devices"]) + 1)]

    def change_device_state(self, host, device, state):
        return self.backend.do_request("set_state", {"host": host, "device": device, "state": state})

    def change_device_weight(self, host, device, weight):
        return self.backend.do_request("set_weight", {"host": host, "device": device, "weight": weight})

    def list_fids(self, fromfid, count):
        res = self.backend.do_request("list_fids", {"from": fromfid, "to": count})
        return {int(res["fid_%d_fid" % i]): {k: res["fid_%d_%s" % (i, k)] for k in
                                             ("key", "length", "class", "domain", "devcount")}
                for i in range(1, int(res["fid_count"]) + 1)}

    def replicate_now(self):
        return self.backend.do_request("replicate_now", {})
