"""The test fixtures themselves: a private MariaDB answers SQL, and network
namespaces behave as separate hosts that reach each other over the bridge
but not the test machine's loopback."""
import subprocess
import sys


def test_mariadb_fixture_answers_sql(mariadb):
    db = mariadb.create_database()
    mariadb.sql("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))", database=db)
    mariadb.sql("INSERT INTO t VALUES (1, 'one')", database=db)
    assert mariadb.sql("SELECT v FROM t WHERE id = 1", database=db).strip() == "one"


SERVER = ("import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
          "s.bind(('0.0.0.0',7777));s.listen();print('up',flush=True);c,a=s.accept();"
          "c.sendall(('hello '+a[0]).encode());c.close()")
CLIENT = ("import socket,sys;c=socket.create_connection((sys.argv[1],7777),timeout=5);"
          "print(c.recv(100).decode())")


def test_netns_hosts_talk_over_the_bridge(netns):
    a, b = netns(2)
    assert a.ip != b.ip
    srv = a.popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "up"
        out = b.run([sys.executable, "-c", CLIENT, a.ip], capture_output=True, text=True, timeout=20)
        assert out.stdout.strip() == "hello " + b.ip
    finally:
        srv.kill()
        srv.wait()
    # each namespace has its own loopback: nothing of the host's is there
    lo = b.run(["ip", "-o", "addr", "show"], capture_output=True, text=True)
    assert a.ip not in lo.stdout and b.ip in lo.stdout
