"""Helpers for the perlbal integration tests: start our perlbal from a config
text, a real nginx backend, and small Python backends (echo, reproxy, slow,
failing) running in threads of the test process."""
import hashlib
import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time

from conftest import free_port, wait_port


def console(port, *lines, timeout=5):
    """Send lines to a management port; return what it answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(("".join(l + "\r\n" for l in lines) + "quit\r\n").encode())
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return out.decode()


def mgmt_conf(mport, name="mgmt"):
    """The config lines of a management service on 127.0.0.1:mport."""
    return "CREATE SERVICE %s\n  SET role = management\n  SET listen = 127.0.0.1:%d\nENABLE %s\n" % (name, mport, name)


def wait_for(cond, timeout=10):
    """Poll cond until it returns something true (returned) or timeout
    passes (then its last value)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    return cond()


def recv_all(s):
    """Everything a socket sends until it closes."""
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def start_perlbal(daemon, tmp, conf_text, ready_port, name="perlbal.conf", extra_args=()):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(conf_text)
    return daemon("perlbal", ["-c", path] + list(extra_args), ready_port=str(ready_port))


def get(port, path="/", host="127.0.0.1", headers=None, method="GET", body=None, timeout=10):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def raw(port, data, timeout=5, read_until_close=True):
    """Send raw bytes; return everything read until close or timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if not read_until_close:
                    break
        except socket.timeout:
            pass
    return out


class Nginx:
    """nginx-light serving root on a free port (keep-alive on); with
    access_log, every request it sees is logged to self.access_log."""

    def __init__(self, tmp, root, access_log=False):
        self.port = free_port()
        self.dir = os.path.join(tmp, "nginx-%d" % self.port)
        os.makedirs(self.dir)
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(("user root;\n" if os.geteuid() == 0 else "") + """
worker_processes 1;
daemon off;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log;
events { worker_connections 4096; }
http {
  %(log)s
  client_body_temp_path %(d)s; proxy_temp_path %(d)s; fastcgi_temp_path %(d)s;
  uwsgi_temp_path %(d)s; scgi_temp_path %(d)s;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:%(p)d; root %(r)s; }
}
""" % {"d": self.dir, "p": self.port, "r": root,
       "log": ("log_format req '$request $status $request_length';\n  access_log %s/access.log req;" % self.dir)
              if access_log else "access_log off;"})
        self.access_log = os.path.join(self.dir, "access.log")
        self.proc = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", conf, "-p", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Backend:
    """A threaded HTTP/1.1 backend. behaviour(handler) -> (status, headers, body)
    or None to use the default echo (JSON of method, path, headers, body)."""

    def __init__(self, behaviour=None, port=0, threaded=True, host="127.0.0.1"):
        self.requests = []
        self.conns = []
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                with outer.lock:
                    outer.conns.append(self.connection)

            def _body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        line = self.rfile.readline()
                        n = int(line.split(b";")[0].strip(), 16)
                        if n == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return data
                        data += self.rfile.read(n)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _handle(self):
                t_head = time.time()      # the request head has been read
                body = self._body()
                info = {"method": self.command, "path": self.path, "headers": dict(self.headers.items()),
                        "body_len": len(body), "version": self.request_version,
                        "port": outer.port, "t_head": t_head, "t_body": time.time(),
                        "body_sha": hashlib.sha1(body).hexdigest()}
                with outer.lock:
                    outer.requests.append(info)
                res = behaviour(self, info) if behaviour else None
                if res is None:
                    out = json.dumps(info).encode()
                    res = (200, {"Content-Type": "application/json"}, out)
                status, headers, out = res
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_HEAD = do_OPTIONS = do_DELETE = _handle

        class S(http.server.ThreadingHTTPServer if threaded else http.server.HTTPServer):
            # threaded=False: one connection at a time, the rest wait in the
            # listen backlog (an application server with one process)
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 64
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self.server = S((host, port), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, method=None):
        with self.lock:
            return sum(1 for r in self.requests if method is None or r["method"] == method)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
