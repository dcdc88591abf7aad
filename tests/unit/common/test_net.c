/* conn, listen and tls at run time, over loopback:
 *  - conn_connect's contract: a NULL return calls nothing (socket() out of
 *    descriptors); a refused connect is one on_connect(false) + one on_close;
 *  - conn_connect_host resolves without blocking ("localhost" from
 *    /etc/hosts, numeric addresses);
 *  - listeners opened and closed while the loops run; a busy port refused
 *    (SO_REUSEPORT stays inside the process) unless sharing is opted in;
 *    a bare port bound to 127.0.0.1 when loopback_default is set;
 *  - unix socket paths: a regular file is never replaced, a live socket is
 *    refused, a stale one is replaced, and only our own socket is removed;
 *  - out of descriptors (in a child process), a waiting client gets a
 *    clean close from the listener's spare descriptor, not a hang, and
 *    clients are served again once descriptors are back;
 *  - STARTTLS both ways with conn_start_tls: plain replies before the
 *    switch go out in order, a peer's TLS bytes already buffered behind the
 *    command are fed to the handshake, SNI + host name checked, and a name
 *    mismatch fails the handshake with a reason. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/conn.h"
#include "common/line.h"
#include "common/listen.h"
#include "common/loop.h"
#include "common/tls.h"
#include "tests/unit/common/test_cert.h"
#include "tests/unit/unit.h"

static char dir[] = "/tmp/test_net.XXXXXX"; /* short: unix socket paths live here */

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* tcp_connect, retried for up to a second (the listener opens on the loop). */
static int tcp_connect_retry(int port)
{
    int fd = -1;
    for (int i = 0; i < 200 && (fd = tcp_connect(port)) < 0; i++)
        usleep(5000);
    return fd;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&sin, sizeof sin);
    socklen_t l = sizeof sin;
    getsockname(fd, (struct sockaddr *)&sin, &l);
    close(fd);
    return ntohs(sin.sin_port);
}

/* One loop (grace 1 s): start(arg) runs on it first, client(carg) (if any)
 * on a thread of its own; returns once the loop has stopped and the client
 * thread has ended. */
static void run_one_loop(void (*start)(void *), void *arg, void *(*client)(void *), void *carg)
{
    CHECK_EQ_INT(loop_init(1), 0);
    loop_set_grace(1);
    loop_call(loop_get(0), start, arg);
    pthread_t t;
    if (client)
        pthread_create(&t, NULL, client, carg);
    CHECK_EQ_INT(loop_run(), 0);
    if (client)
        pthread_join(t, NULL);
    loop_free();
}

/* On the loop: a listener on 127.0.0.1:port, on this loop only. */
static void listen_here(int port, void (*accept)(struct core_loop *, int, const struct sockaddr *, socklen_t, void *))
{
    char err[256], spec[32];
    snprintf(spec, sizeof spec, "127.0.0.1:%d", port);
    struct listen_opts o = { .single_loop = true };
    CHECK(listen_open(spec, 0, &o, accept, NULL, NULL, err, sizeof err) != NULL);
}

/* ---- a tiny line server: "PING" -> "PONG", "STARTTLS" -> "PROCEED" + TLS,
 * anything else echoed ---- */

static void *server_ctx, *client_ctx_ok, *client_ctx_verify;
static atomic_int accepted, server_tls_ok, server_tls_failed;

static int srv_read(struct core_conn *c)
{
    for (;;) {
        size_t len, used;
        enum line_status st;
        char *line = line_peek(conn_in(c), 256, &len, &used, &st);
        if (st != LINE_OK)
            return st == LINE_NEED_MORE ? 0 : -1;
        char copy[257];
        memcpy(copy, line, len);
        copy[len] = '\0';
        evbuffer_drain(conn_in(c), used);
        if (strcmp(copy, "PING") == 0)
            evbuffer_add_printf(conn_out(c), "PONG\n");
        else if (strcmp(copy, "STARTTLS") == 0) {
            evbuffer_add_printf(conn_out(c), "PROCEED\n");
            if (conn_start_tls(c, server_ctx, true, NULL) != 0)
                return -1;
            return 0; /* what follows is TLS: the filter has it now */
        } else
            evbuffer_add_printf(conn_out(c), "%s%s\n", conn_is_tls(c) ? "TLS " : "", copy);
    }
}

static void srv_tls(struct core_conn *c, bool ok)
{
    (void)c;
    atomic_fetch_add(ok ? &server_tls_ok : &server_tls_failed, 1);
}

static const struct conn_ops srv_ops = { .name = "srv", .on_read = srv_read, .on_tls = srv_tls };

static void srv_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
    atomic_fetch_add(&accepted, 1);
    conn_new(loop, fd, sa, salen, &srv_ops, NULL);
}

/* ---- conn_connect's contract ---- */

struct client_state {
    int connects_ok, connects_failed, closes;
    char error[128];
    char got[512];
    size_t got_len;
    int step;
    const char *sni;
    void *ctx;
    bool tls_done, tls_failed;
};

static void cl_connect(struct core_conn *c, bool ok)
{
    struct client_state *s = c->data;
    if (ok)
        s->connects_ok++;
    else {
        s->connects_failed++;
        conn_error_str(c, s->error, sizeof s->error);
    }
}

static void cl_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    struct client_state *s = c->data;
    s->closes++;
    loop_request_stop();
}

static const struct conn_ops refuse_ops = { .name = "refuse", .on_connect = cl_connect, .on_close = cl_close };

static int refuse_port;
static struct client_state refuse_state;
static bool sync_fail_called;

static void never(struct core_conn *c, enum conn_close_reason why)
{
    (void)c;
    (void)why;
    sync_fail_called = true;
}
static void never_connect(struct core_conn *c, bool ok)
{
    (void)c;
    (void)ok;
    sync_fail_called = true;
}
static const struct conn_ops never_ops = { .name = "never", .on_connect = never_connect, .on_close = never };

static void start_refused(void *arg)
{
    (void)arg;
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)refuse_port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* synchronous failure first: no descriptor left for the socket */
    struct rlimit old, low;
    getrlimit(RLIMIT_NOFILE, &old);
    int probe = dup(0);
    low.rlim_cur = (rlim_t)probe; /* every descriptor from here on fails */
    low.rlim_max = old.rlim_max;
    close(probe);
    setrlimit(RLIMIT_NOFILE, &low);
    errno = 0;
    struct core_conn *c = conn_connect(loop_current(), (struct sockaddr *)&sin, sizeof sin, &never_ops, NULL);
    int e = errno;
    setrlimit(RLIMIT_NOFILE, &old);
    CHECK(c == NULL);
    CHECK(e == EMFILE);
    CHECK(!sync_fail_called);
    CHECK_EQ_INT(conn_loop_current(loop_current()), 0);
    /* then an asynchronous one: refused */
    c = conn_connect(loop_current(), (struct sockaddr *)&sin, sizeof sin, &refuse_ops, &refuse_state);
    CHECK(c != NULL);
}

static void test_connect_contract(void)
{
    refuse_port = free_port();
    run_one_loop(start_refused, NULL, NULL, NULL);
    CHECK(!sync_fail_called);
    CHECK_EQ_INT(refuse_state.connects_failed, 1);
    CHECK_EQ_INT(refuse_state.connects_ok, 0);
    CHECK_EQ_INT(refuse_state.closes, 1);
    CHECK(strstr(refuse_state.error, "refused") != NULL);
}

/* ---- listeners at run time; conn_connect_host ---- */

static struct core_listener *rt_listener;
static int rt_port;
static atomic_int rt_phase;
static struct client_state host_state;
static char rt_bound[64];

static int host_read(struct core_conn *c)
{
    struct client_state *s = c->data;
    size_t n = evbuffer_get_length(conn_in(c));
    if (n > sizeof s->got - 1 - s->got_len)
        n = sizeof s->got - 1 - s->got_len;
    evbuffer_remove(conn_in(c), s->got + s->got_len, n);
    s->got_len += n;
    if (strstr(s->got, "PONG\n"))
        return -1; /* done: close */
    return 0;
}

static void host_connect(struct core_conn *c, bool ok)
{
    cl_connect(c, ok);
    if (ok)
        evbuffer_add_printf(conn_out(c), "PING\n");
}

static void host_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    struct client_state *s = c->data;
    s->closes++;
}

static const struct conn_ops host_ops = {
    .name = "host", .on_read = host_read, .on_connect = host_connect, .on_close = host_close
};

static void *rt_driver(void *arg)
{
    (void)arg;
    /* the listener opened from the loop is reachable */
    for (int i = 0; i < 200 && atomic_load(&rt_phase) < 1; i++)
        usleep(5000);
    int fd = tcp_connect(rt_port);
    CHECK(fd >= 0);
    if (fd >= 0) {
        write(fd, "PING\n", 5);
        char buf[16] = "";
        ssize_t n = read(fd, buf, sizeof buf - 1);
        CHECK(n == 5 && memcmp(buf, "PONG\n", 5) == 0);
        close(fd);
    }
    atomic_store(&rt_phase, 2);
    for (int i = 0; i < 200 && atomic_load(&rt_phase) < 3; i++)
        usleep(5000);
    /* closed at run time: refused, and the port can be bound again */
    int refused = -1;
    for (int i = 0; i < 100; i++) {
        fd = tcp_connect(rt_port);
        if (fd < 0) {
            refused = 1;
            break;
        }
        close(fd);
        usleep(5000);
    }
    CHECK_EQ_INT(refused, 1);
    int b = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)rt_port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ_INT(bind(b, (struct sockaddr *)&sin, sizeof sin), 0);
    close(b);
    loop_request_stop();
    return NULL;
}

static void rt_open(void *arg)
{
    (void)arg;
    char err[256];
    struct listen_opts o = { .loopback_default = true };
    rt_listener = listen_open("0", 0, &o, srv_accept, NULL, NULL, err, sizeof err);
    CHECK(rt_listener != NULL);
    if (!rt_listener)
        return;
    rt_port = listen_port(rt_listener);
    listen_addr_str(rt_listener, rt_bound, sizeof rt_bound);
    /* resolve by name without blocking, through /etc/hosts */
    CHECK(conn_connect_host(loop_current(), "localhost", rt_port, &host_ops, &host_state) != NULL);
    atomic_store(&rt_phase, 1);
}

static void rt_close_cb(evutil_socket_t fd, short what, void *arg);

static void rt_close(void *arg)
{
    (void)arg;
    if (atomic_load(&rt_phase) < 2 || host_state.closes == 0) {
        struct timeval tv = { 0, 10000 };
        event_base_once(loop_current()->base, -1, EV_TIMEOUT, rt_close_cb, NULL, &tv);
        return;
    }
    listen_close(rt_listener);
    listen_close(rt_listener); /* twice is harmless */
    atomic_store(&rt_phase, 3);
}

static void rt_close_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rt_close(arg);
}

static void test_listen_at_run_time(void)
{
    CHECK_EQ_INT(loop_init(2), 0);
    loop_set_grace(1);
    loop_call(loop_get(1), rt_open, NULL);
    loop_call(loop_get(1), rt_close, NULL);
    pthread_t t;
    pthread_create(&t, NULL, rt_driver, NULL);
    CHECK_EQ_INT(loop_run(), 0);
    pthread_join(t, NULL);
    loop_free();
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%d", rt_port);
    CHECK_STR(rt_bound, want); /* a bare port binds loopback */
    CHECK_EQ_INT(host_state.connects_ok, 1);
    CHECK(strstr(host_state.got, "PONG") != NULL);
}

/* ---- an idle timeout turned off stays off ---- */

static atomic_int timeout_closes, idle_accepted;

static void idle_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)c;
    if (why == CONN_CLOSE_TIMEOUT)
        atomic_fetch_add(&timeout_closes, 1);
}

static const struct conn_ops idle_ops = { .name = "idle", .on_read = srv_read, .on_close = idle_close };

static void idle_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
    struct core_conn *c = conn_new(loop, fd, sa, salen, &idle_ops, NULL);
    conn_set_timeouts(c, 100, 0);
    conn_set_timeouts(c, 0, 0); /* userdbd's case: no idle timeout after all */
    atomic_fetch_add(&idle_accepted, 1);
}

static int idle_port;

static void idle_listen(void *arg)
{
    (void)arg;
    listen_here(idle_port, idle_accept);
}

static void *idle_client(void *arg)
{
    (void)arg;
    int fd = tcp_connect_retry(idle_port);
    usleep(400000); /* four times the timeout that was switched off */
    char buf[16];
    CHECK_EQ_INT(write(fd, "PING\n", 5), 5);
    CHECK_EQ_INT(read(fd, buf, sizeof buf), 5); /* still served */
    close(fd);
    loop_request_stop();
    return NULL;
}

static void test_idle_timeout_switched_off(void)
{
    idle_port = free_port();
    run_one_loop(idle_listen, NULL, idle_client, NULL);
    CHECK_EQ_INT(atomic_load(&idle_accepted), 1);
    CHECK_EQ_INT(atomic_load(&timeout_closes), 0);
}

/* ---- dialing a name with several addresses ---- */

struct dial_state {
    const char *name;
    int connects_ok, connects_failed, closes;
    char peer[64], error[128];
};

static struct dial_state dials[3] = { { .name = "twoaddr" }, { .name = "twoaddr-b" }, { .name = "deadhost" } };
static int dial_port;

static void dial_connect(struct core_conn *c, bool ok)
{
    struct dial_state *d = c->data;
    if (ok) {
        d->connects_ok++;
        conn_peer_str(c, d->peer, sizeof d->peer);
        conn_close(c);
    } else {
        d->connects_failed++;
        conn_error_str(c, d->error, sizeof d->error);
    }
}

static void dial_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    struct dial_state *d = c->data;
    d->closes++;
    if (dials[0].closes && dials[1].closes && dials[2].closes)
        loop_request_stop();
}

static const struct conn_ops dial_ops = { .name = "dial", .on_connect = dial_connect, .on_close = dial_close };

static void dial_start(void *arg)
{
    (void)arg;
    listen_here(dial_port, srv_accept);
    for (int i = 0; i < 3; i++)
        CHECK(conn_connect_host(loop_current(), dials[i].name, dial_port, &dial_ops, &dials[i]) != NULL);
    errno = 0;
    CHECK(conn_connect_host(loop_current(), "", dial_port, &dial_ops, NULL) == NULL); /* nothing called */
    CHECK_EQ_INT(errno, EINVAL);
}

static void test_dial_every_address(void)
{
    /* 127.0.0.2 refuses (the listener is on 127.0.0.1 only), in either
     * order of the resolver's answer */
    char hosts[128];
    snprintf(hosts, sizeof hosts, "%s/hosts", dir);
    FILE *f = fopen(hosts, "w");
    fputs("127.0.0.2 twoaddr\n127.0.0.1 twoaddr\n127.0.0.1 twoaddr-b\n127.0.0.2 twoaddr-b\n127.0.0.2 deadhost\n", f);
    fclose(f);
    setenv("CORE_HOSTS_FILE", hosts, 1);
    dial_port = free_port();
    run_one_loop(dial_start, NULL, NULL, NULL);
    unsetenv("CORE_HOSTS_FILE");
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%d", dial_port);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(dials[i].connects_ok, 1);
        CHECK_EQ_INT(dials[i].connects_failed, 0);
        CHECK_EQ_INT(dials[i].closes, 1);
        CHECK_STR(dials[i].peer, want);
    }
    CHECK_EQ_INT(dials[2].connects_ok, 0);
    CHECK_EQ_INT(dials[2].connects_failed, 1); /* once, after its one address */
    CHECK_EQ_INT(dials[2].closes, 1);
    CHECK(strstr(dials[2].error, "refused") != NULL);
}

/* ---- busy ports ---- */

static void test_busy_port_refused(void)
{
    CHECK_EQ_INT(loop_init(2), 0);
    char err[256] = "";
    int port = free_port();
    char spec[32];
    snprintf(spec, sizeof spec, "127.0.0.1:%d", port);
    struct core_listener *a = listen_open(spec, 0, NULL, srv_accept, NULL, NULL, err, sizeof err);
    CHECK(a != NULL);
    /* a second daemon (here: a second listener) on the same port is refused,
     * whether it would use one socket or one per loop */
    struct listen_opts one = { .single_loop = true };
    CHECK(listen_open(spec, 0, NULL, srv_accept, NULL, NULL, err, sizeof err) == NULL);
    CHECK(strstr(err, "in use") != NULL);
    err[0] = '\0';
    CHECK(listen_open(spec, 0, &one, srv_accept, NULL, NULL, err, sizeof err) == NULL);
    CHECK(strstr(err, "in use") != NULL);
    /* a plain program that takes the port first makes us refuse too */
    int port2 = free_port();
    int held = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port2) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int onev = 1;
    setsockopt(held, SOL_SOCKET, SO_REUSEPORT, &onev, sizeof onev);
    CHECK_EQ_INT(bind(held, (struct sockaddr *)&sin, sizeof sin), 0);
    CHECK_EQ_INT(listen(held, 8), 0);
    snprintf(spec, sizeof spec, "127.0.0.1:%d", port2);
    CHECK(listen_open(spec, 0, NULL, srv_accept, NULL, NULL, err, sizeof err) == NULL);
    /* ... unless sharing is asked for */
    struct listen_opts share = { .reuseport = true };
    struct core_listener *b = listen_open(spec, 0, &share, srv_accept, NULL, NULL, err, sizeof err);
    CHECK(b != NULL);
    close(held);
    listen_close_all();
    loop_free(); /* runs the queued closes */
    /* closed: the port is free again */
    int again = socket(AF_INET, SOCK_STREAM, 0);
    sin.sin_port = htons((uint16_t)port);
    CHECK_EQ_INT(bind(again, (struct sockaddr *)&sin, sizeof sin), 0);
    close(again);
}

/* ---- unix socket paths ---- */

static void test_unix_paths(void)
{
    CHECK_EQ_INT(loop_init(1), 0);
    char err[256] = "", path[100], spec[140];
    snprintf(path, sizeof path, "%s/file", dir);
    FILE *f = fopen(path, "w");
    fputs("precious", f);
    fclose(f);
    snprintf(spec, sizeof spec, "unix:%s", path);
    CHECK(listen_open(spec, 0, NULL, srv_accept, NULL, NULL, err, sizeof err) == NULL);
    CHECK(strstr(err, "not a socket") != NULL);
    struct stat st;
    CHECK(stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 8); /* untouched */
    /* a stale socket (its owner died without removing it) is replaced */
    snprintf(path, sizeof path, "%s/stale.sock", dir);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    CHECK_EQ_INT(bind(s, (struct sockaddr *)&sun, sizeof sun), 0);
    close(s);
    snprintf(spec, sizeof spec, "unix:%s", path);
    struct core_listener *l = listen_open(spec, 0, NULL, srv_accept, NULL, NULL, err, sizeof err);
    CHECK(l != NULL);
    /* a live one is refused */
    err[0] = '\0';
    CHECK(listen_open(spec, 0, NULL, srv_accept, NULL, NULL, err, sizeof err) == NULL);
    CHECK(strstr(err, "in use") != NULL);
    /* closing removes our socket */
    listen_close(l);
    loop_free();
    CHECK(lstat(path, &st) < 0 && errno == ENOENT);
    /* ... but not a file someone put in its place meanwhile */
    CHECK_EQ_INT(loop_init(1), 0);
    l = listen_open(spec, 0, NULL, srv_accept, NULL, NULL, err, sizeof err);
    CHECK(l != NULL);
    char other[140];
    snprintf(other, sizeof other, "%s/other", dir);
    f = fopen(other, "w");
    fclose(f);
    CHECK_EQ_INT(rename(other, path), 0);
    listen_close(l);
    loop_free();
    CHECK(lstat(path, &st) == 0 && S_ISREG(st.st_mode));
}

/* ---- out of descriptors ---- */

/* In a child process (the descriptor limit is process-wide): a listener
 * on a loop that answers "HI" and closes. With the limit lowered so that
 * no new descriptor can be had, clients that connect get a clean close at
 * once (the listener's spare descriptor takes each and closes it), not a
 * hang in the backlog; once the limit is back, clients are served; and a
 * second shortage is handled the same way (the spare was taken back).
 * Exit status: the number of failed checks. */
static int emfile_child_port;

static void emfile_child_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t len, void *arg)
{
    (void)loop;
    (void)sa;
    (void)len;
    (void)arg;
    ssize_t w = send(fd, "HI\n", 3, MSG_NOSIGNAL);
    (void)w;
    close(fd);
}

static void emfile_child_start(void *arg)
{
    (void)arg;
    listen_here(emfile_child_port, emfile_child_accept);
}

/* What a client connected to the port reads until the server closes:
 * "HI\n" or "" (closed at once); "TIMEOUT" if it does not close. Reading
 * to the close also means the server's descriptor is gone before the
 * next round counts the free ones. */
static const char *emfile_read(int fd)
{
    static char buf[16];
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? "TIMEOUT" : "ERROR";
        if (n == 0 || (got += (size_t)n) == sizeof buf - 1)
            break;
    }
    buf[got] = '\0';
    return buf;
}

static int emfile_fails;
#define EMFILE_CHECK(cond)                                                                                             \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "emfile child: line %d: %s\n", __LINE__, #cond);                                           \
            emfile_fails++;                                                                                            \
        }                                                                                                              \
    } while (0)

/* One shortage: n clients made beforehand connect while no descriptor is
 * left; each must read a close. */
static void emfile_round(int n)
{
    int cl[8];
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)emfile_child_port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < n; i++)
        cl[i] = socket(AF_INET, SOCK_STREAM, 0);
    struct rlimit old, low;
    getrlimit(RLIMIT_NOFILE, &old);
    low = old;
    int probe = open("/dev/null", O_RDONLY); /* the lowest free descriptor: none from it on */
    low.rlim_cur = (rlim_t)probe;
    close(probe);
    EMFILE_CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
    EMFILE_CHECK(open("/dev/null", O_RDONLY) < 0 && errno == EMFILE); /* really none left */
    for (int i = 0; i < n; i++)
        EMFILE_CHECK(connect(cl[i], (struct sockaddr *)&sin, sizeof sin) == 0);
    for (int i = 0; i < n; i++) {
        const char *got = emfile_read(cl[i]);
        if (strcmp(got, "") != 0)
            fprintf(stderr, "emfile child: client %d read [%s], want a close\n", i, got);
        EMFILE_CHECK(strcmp(got, "") == 0);
    }
    EMFILE_CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
    for (int i = 0; i < n; i++)
        close(cl[i]);
}

static void *emfile_child_client(void *arg)
{
    (void)arg;
    int fd = tcp_connect_retry(emfile_child_port);
    EMFILE_CHECK(fd >= 0 && strcmp(emfile_read(fd), "HI\n") == 0); /* served while descriptors last */
    close(fd);
    uint64_t before = listen_fd_exhausted();
    emfile_round(4);
    EMFILE_CHECK(listen_fd_exhausted() - before >= 4);
    fd = tcp_connect(emfile_child_port);
    EMFILE_CHECK(fd >= 0 && strcmp(emfile_read(fd), "HI\n") == 0); /* descriptors back: served again */
    close(fd);
    emfile_round(3); /* the spare was taken back: the same again */
    EMFILE_CHECK(listen_fd_exhausted() - before >= 7);
    fd = tcp_connect(emfile_child_port);
    EMFILE_CHECK(fd >= 0 && strcmp(emfile_read(fd), "HI\n") == 0);
    close(fd);
    loop_request_stop();
    return NULL;
}

static void test_emfile_closes_waiting_clients(void)
{
    emfile_child_port = free_port();
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        unit_checks_failed_in_test = 0;
        run_one_loop(emfile_child_start, NULL, emfile_child_client, NULL);
        _exit(emfile_fails + unit_checks_failed_in_test > 100 ? 100 : emfile_fails + unit_checks_failed_in_test);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ_INT(WEXITSTATUS(status), 0);
}

/* ---- STARTTLS ---- */

static int tls_port;
static struct client_state tls_state;

static int tls_cl_read(struct core_conn *c)
{
    struct client_state *s = c->data;
    size_t n = evbuffer_get_length(conn_in(c));
    if (n > sizeof s->got - 1 - s->got_len)
        n = sizeof s->got - 1 - s->got_len;
    evbuffer_remove(conn_in(c), s->got + s->got_len, n);
    s->got_len += n;
    s->got[s->got_len] = '\0';
    if (s->step == 1 && strstr(s->got, "PROCEED\n")) {
        s->step = 2;
        if (conn_start_tls(c, s->ctx, false, s->sni) != 0)
            return -1;
        evbuffer_add_printf(conn_out(c), "SECRET\n"); /* waits for the handshake */
    }
    if (strstr(s->got, "TLS SECRET\n"))
        return -1; /* done */
    return 0;
}

static void tls_cl_connect(struct core_conn *c, bool ok)
{
    struct client_state *s = c->data;
    cl_connect(c, ok);
    if (!ok)
        return;
    /* a plain request, then the switch, in one write */
    evbuffer_add_printf(conn_out(c), "PING\nSTARTTLS\n");
    s->step = 1;
}

static void tls_cl_tls(struct core_conn *c, bool ok)
{
    struct client_state *s = c->data;
    if (ok)
        s->tls_done = true;
    else {
        s->tls_failed = true;
        conn_error_str(c, s->error, sizeof s->error);
    }
}

static const struct conn_ops tls_cl_ops = { .name = "tls-client",
                                            .on_read = tls_cl_read,
                                            .on_connect = tls_cl_connect,
                                            .on_close = cl_close,
                                            .on_tls = tls_cl_tls };

static void tls_start(void *arg)
{
    (void)arg;
    listen_here(tls_port, srv_accept);
    CHECK(conn_connect_host(loop_current(), "127.0.0.1", tls_port, &tls_cl_ops, &tls_state) != NULL);
}

static void run_tls(void *ctx, const char *sni)
{
    memset(&tls_state, 0, sizeof tls_state);
    tls_state.ctx = ctx;
    tls_state.sni = sni;
    atomic_store(&server_tls_ok, 0);
    atomic_store(&server_tls_failed, 0);
    tls_port = free_port();
    run_one_loop(tls_start, NULL, NULL, NULL);
}

/* The pipelining client: blocking socket, OpenSSL over memory BIOs until
 * the plain replies are read, then over the socket. */
static char pipelined_got[128];
static int pipelined_ok;

static void pipelined_listen(void *arg)
{
    (void)arg;
    listen_here(tls_port, srv_accept);
}

static void *pipelined_client(void *ctx)
{
    int fd = tcp_connect_retry(tls_port);
    SSL *ssl = SSL_new(ctx);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set1_host(ssl, "localhost");
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rb, wb);
    SSL_connect(ssl); /* wants to read: the ClientHello is in wb */
    char hello[4096];
    int hn = BIO_read(wb, hello, sizeof hello);
    char msg[4200];
    memcpy(msg, "PING\nSTARTTLS\n", 14);
    memcpy(msg + 14, hello, (size_t)hn);
    ssize_t w = write(fd, msg, 14 + (size_t)hn); /* one write: command + TLS */
    CHECK(w == 14 + hn);
    char plain[14] = "";
    size_t got = 0;
    while (got < 13) {
        ssize_t n = read(fd, plain + got, 13 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    BIO *sb = BIO_new_socket(fd, BIO_NOCLOSE);
    SSL_set_bio(ssl, sb, sb); /* the rest of the handshake over the socket */
    char reply[64] = "";
    if (SSL_connect(ssl) == 1 && SSL_write(ssl, "SECRET\n", 7) == 7) {
        int n = 0, r;
        while (n < 11 && (r = SSL_read(ssl, reply + n, (int)sizeof reply - 1 - n)) > 0)
            n += r;
        pipelined_ok = 1;
    }
    snprintf(pipelined_got, sizeof pipelined_got, "%s|%s", plain, reply);
    SSL_free(ssl);
    close(fd);
    loop_request_stop();
    return NULL;
}

static void run_pipelined(void *ctx)
{
    atomic_store(&server_tls_ok, 0);
    tls_port = free_port();
    run_one_loop(pipelined_listen, NULL, pipelined_client, ctx);
}

static void test_starttls(void)
{
    char cert[128], key[128], err[256] = "";
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    CHECK_EQ_INT(test_make_cert(cert, key), 0);
    server_ctx = tls_server_ctx_new(cert, key, NULL, err, sizeof err);
    client_ctx_verify = tls_client_ctx_new(cert, true, NULL, NULL, err, sizeof err); /* trusts our CA */
    client_ctx_ok = tls_client_ctx_new(NULL, false, NULL, NULL, err, sizeof err);
    CHECK(server_ctx && client_ctx_verify && client_ctx_ok);
    CHECK(tls_client_ctx_new("/nonexistent/ca.pem", true, NULL, NULL, err, sizeof err) == NULL);
    CHECK(strstr(err, "/nonexistent/ca.pem") != NULL);
    CHECK(tls_client_ctx_new(NULL, true, cert, NULL, err, sizeof err) == NULL);

    /* client waits for PROCEED; the name is verified */
    run_tls(client_ctx_verify, "localhost");
    CHECK(tls_state.tls_done);
    CHECK_EQ_INT(atomic_load(&server_tls_ok), 1);
    CHECK_STR(tls_state.got, "PONG\nPROCEED\nTLS SECRET\n");

    /* a client that sends its ClientHello right behind STARTTLS, in the
     * same write: the server finds those bytes already buffered when it
     * switches, and must hand them to the handshake */
    run_pipelined(client_ctx_verify);
    CHECK_EQ_INT(pipelined_ok, 1);
    CHECK_EQ_INT(atomic_load(&server_tls_ok), 1);
    CHECK_STR(pipelined_got, "PONG\nPROCEED\n|TLS SECRET\n");

    /* the wrong name fails the handshake, with the reason */
    run_tls(client_ctx_verify, "example.org");
    CHECK(tls_state.tls_failed);
    CHECK(!tls_state.tls_done);
    CHECK(strstr(tls_state.error, "hostname mismatch") != NULL);
    CHECK(strstr(tls_state.got, "TLS SECRET") == NULL);

    /* an unverified context talks to anyone */
    run_tls(client_ctx_ok, "example.org");
    CHECK(tls_state.tls_done);
    tls_ctx_free(server_ctx);
    tls_ctx_free(client_ctx_verify);
    tls_ctx_free(client_ctx_ok);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_connect_contract);
    RUN(test_listen_at_run_time);
    RUN(test_idle_timeout_switched_off);
    RUN(test_dial_every_address);
    RUN(test_busy_port_refused);
    RUN(test_unix_paths);
    RUN(test_emfile_closes_waiting_clients);
    RUN(test_starttls);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return unit_done();
}
