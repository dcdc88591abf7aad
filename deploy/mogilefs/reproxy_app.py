#!/usr/bin/python3
"""A minimal application behind perlbal that serves MogileFS files the way
LiveJournal did: it asks the tracker for the file's paths (get_paths) and
answers with an empty response carrying X-REPROXY-URL; perlbal then fetches
the bytes from the storage node itself and streams them to the client.

    reproxy_app.py --listen 127.0.0.1:9001 --trackers 127.0.0.1:7001 --domain files

GET /<key> -> 200 + X-REPROXY-URL (404 when the key is unknown). Python's
standard library only."""
import argparse
import http.server
import random
import socket
import urllib.parse


def tracker_request(trackers, cmd, args, timeout=3.0):
    line = cmd + " " + "&".join("%s=%s" % (urllib.parse.quote_plus(k), urllib.parse.quote_plus(str(v)))
                                for k, v in args.items()) + "\r\n"
    hosts = trackers[:]
    random.shuffle(hosts)
    for h in hosts:
        host, port = h.rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=timeout) as s:
                s.sendall(line.encode())
                f = s.makefile("rb")
                reply = f.readline().decode().rstrip("\r\n")
        except OSError:
            continue
        if reply.startswith("OK"):
            return dict(urllib.parse.parse_qsl(reply[2:].strip(), keep_blank_values=True)), None
        return None, reply.split(" ")[1] if " " in reply else reply
    return None, "no_tracker"


def make_handler(trackers, domain):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            key = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path.lstrip("/"))
            res, err = tracker_request(trackers, "get_paths", {"domain": domain, "key": key, "noverify": 1})
            if res is None or int(res.get("paths", 0)) == 0:
                status = 404 if err in ("unknown_key", None) else 503
                body = ("%s\n" % (err or "no paths")).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            urls = [res["path%d" % i] for i in range(1, int(res["paths"]) + 1)]
            self.send_response(200)
            self.send_header("X-REPROXY-URL", " ".join(urls))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, fmt, *args):
            pass

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:9001")
    ap.add_argument("--trackers", default="127.0.0.1:7001")
    ap.add_argument("--domain", default="files")
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    srv = http.server.ThreadingHTTPServer((host, int(port)), make_handler(a.trackers.split(","), a.domain))
    srv.serve_forever()


if __name__ == "__main__":
    main()
