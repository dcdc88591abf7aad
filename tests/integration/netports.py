"""Free loopback ports for the integration tests (one copy, imported by
conftest.py and by the suites that keep their own fixtures)."""
import socket

# Ports this test process has handed out. The kernel may pick the same port
# for two binds made one after another, so `a, b = free_port(), free_port()`
# could name one port twice (a daemon then refuses its second listener); no
# port is handed out twice in one process. The ephemeral range (~28,000 ports)
# outlasts the ~2,000 a worker asks for in a full run.
_handed_out = set()


def free_port():
    """A TCP port nothing listens on right now (the kernel picks it), never
    one this process handed out before."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh free port after 1000 tries")


def free_ports(n):
    """n distinct free ports."""
    return [free_port() for _ in range(n)]
