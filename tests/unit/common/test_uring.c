/* uring and conn's end-of-iteration I/O, over loopback:
 *  - the batch itself: a receive on an empty socket answers -EAGAIN at once
 *    (nothing waits inside uring_run), sends and receives of one and of
 *    several pieces carry the bytes, EOF reads as 0, a full batch refuses
 *    more, the counters count runs and operations;
 *  - an echo server on conn three ways, each in a child process: io_uring
 *    on (STACK_IO_URING=1), io_uring wanted but refused by a seccomp filter
 *    (the fallback to epoll), and plain epoll. The same client checks
 *    pipelined replies, a 3 MB reply that the kernel takes in pieces (the
 *    write event finishes it), a reply still going out after the peer's
 *    half-close, two conns that arrive in one batch where the first pauses
 *    the second (its bytes already read must not reach on_read until it
 *    is resumed, and then must), a file segment (sendfile) between memory
 *    bytes arriving byte for byte, close after write; with the ring on, the
 *    reads of conns woken together run in one io_uring_enter. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/line.h"
#include "common/listen.h"
#include "common/loop.h"
#include "common/uring.h"
#include "tests/unit/unit.h"

/* ---- the batch on its own ---- */

struct result {
    uint64_t tag;
    int res;
};
static struct result results[16];
static int nresults;

static void collect(void *arg, uint64_t tag, int res)
{
    (void)arg;
    if (nresults < 16)
        results[nresults++] = (struct result){ tag, res };
}

static int result_of(uint64_t tag)
{
    for (int i = 0; i < nresults; i++)
        if (results[i].tag == tag)
            return results[i].res;
    return 12345;
}

static bool ring_available = true;

static void test_batch(void)
{
    struct uring_batch *u = uring_new(4);
    if (!u) {
        /* the kernel refuses io_uring here: the conn tests below then
         * check the fallback in every mode */
        fprintf(stderr, "note: io_uring unavailable (%s); only the epoll fallback is tested\n", strerror(errno));
        ring_available = false;
        return;
    }
    int sv[2];
    CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    char buf[64], b1[3], b2[64];
    struct msghdr m1, m2;
    struct iovec io1[2], io2[3];

    /* nothing to read: -EAGAIN, not a wait */
    io1[0] = (struct iovec){ buf, sizeof buf };
    CHECK(uring_recv(u, sv[1], &m1, io1, 1, 7));
    nresults = 0;
    CHECK_EQ_INT(uring_run(u, collect, NULL), 1);
    CHECK_EQ_INT(result_of(7), -EAGAIN);

    /* a send of three pieces, then a receive into two */
    io2[0] = (struct iovec){ "hel", 3 };
    io2[1] = (struct iovec){ "lo ", 3 };
    io2[2] = (struct iovec){ "world", 5 };
    CHECK(uring_send(u, sv[0], &m2, io2, 3, 1));
    io1[0] = (struct iovec){ "!", 1 };
    CHECK(uring_send(u, sv[0], &m1, io1, 1, 2));
    CHECK_EQ_INT(uring_room(u), 2);
    nresults = 0;
    CHECK_EQ_INT(uring_run(u, collect, NULL), 2);
    CHECK_EQ_INT(result_of(1), 11);
    CHECK_EQ_INT(result_of(2), 1);
    io1[0] = (struct iovec){ b1, sizeof b1 };
    io1[1] = (struct iovec){ b2, sizeof b2 };
    CHECK(uring_recv(u, sv[1], &m1, io1, 2, 3));
    nresults = 0;
    CHECK_EQ_INT(uring_run(u, collect, NULL), 1);
    CHECK_EQ_INT(result_of(3), 12);
    CHECK_MEM(b1, "hel", 3);
    CHECK_MEM(b2, "lo world!", 9);

    /* full: a fifth operation is refused until the batch runs */
    for (int i = 0; i < 4; i++) {
        io2[i % 3] = (struct iovec){ buf, sizeof buf };
        CHECK(uring_recv(u, sv[1], i % 2 ? &m1 : &m2, &io2[i % 3], 1, 10 + (uint64_t)i));
    }
    CHECK_EQ_INT(uring_room(u), 0);
    CHECK(!uring_recv(u, sv[1], &m1, io1, 1, 99));
    nresults = 0;
    CHECK_EQ_INT(uring_run(u, collect, NULL), 4);
    CHECK_EQ_INT(result_of(10), -EAGAIN);

    /* the peer's close reads as 0 */
    close(sv[0]);
    io1[0] = (struct iovec){ buf, sizeof buf };
    CHECK(uring_recv(u, sv[1], &m1, io1, 1, 5));
    nresults = 0;
    CHECK_EQ_INT(uring_run(u, collect, NULL), 1);
    CHECK_EQ_INT(result_of(5), 0);
    CHECK(!uring_broken(u));

    uint64_t runs, ops;
    uring_counters(u, &runs, &ops);
    CHECK_EQ_INT(runs, 5);
    CHECK_EQ_INT(ops, 9);
    close(sv[1]);
    uring_free(u);
}

/* ---- the echo server ---- */

static atomic_int violations;     /* on_read while paused */
static atomic_int unpaused_reads; /* the paused conn's read after resume */
static struct core_conn *paused_conn;
static char file_path[64];
#define FILE_BYTES 100000

static void resume_later(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct core_conn *c = arg;
    paused_conn = NULL;
    conn_resume_read(c);
}

static int srv_read(struct core_conn *c)
{
    if (c == paused_conn)
        atomic_fetch_add(&violations, 1);
    for (;;) {
        size_t len, used;
        enum line_status st;
        char *line = line_peek(conn_in(c), 64, &len, &used, &st);
        if (st != LINE_OK)
            return st == LINE_NEED_MORE ? 0 : -1;
        char cmd[65];
        memcpy(cmd, line, len);
        cmd[len] = '\0';
        evbuffer_drain(conn_in(c), used);
        if (!strcmp(cmd, "sleep")) {
            /* keep the loop away from its sockets so that what the client
             * sends meanwhile is found ready all at once */
            usleep(200 * 1000);
            evbuffer_add_printf(conn_out(c), "SLEPT\r\n");
        } else if (!strncmp(cmd, "big ", 4)) {
            long n = atol(cmd + 4);
            char chunk[4096];
            memset(chunk, 'B', sizeof chunk);
            for (long i = 0; i < n; i += (long)sizeof chunk)
                evbuffer_add(conn_out(c), chunk, (size_t)(n - i < (long)sizeof chunk ? n - i : (long)sizeof chunk));
            evbuffer_add(conn_out(c), "\r\n", 2);
        } else if (!strncmp(cmd, "file ", 5)) {
            /* a file segment in the output, as httpd's sendfile path makes
             * it: its bytes are not in memory, so the batch must leave it
             * to evbuffer_write (sendfile) */
            int fd = open(file_path, O_RDONLY);
            struct evbuffer *f = evbuffer_new();
            evbuffer_set_flags(f, EVBUFFER_FLAG_DRAINS_TO_FD);
            evbuffer_add_printf(conn_out(c), "FILE\r\n");
            if (fd < 0 || evbuffer_add_file(f, fd, atol(cmd + 5), FILE_BYTES - atol(cmd + 5)) < 0)
                evbuffer_add_printf(conn_out(c), "no file\r\n");
            evbuffer_add_buffer(conn_out(c), f);
            evbuffer_add_printf(conn_out(c), "\r\nEND\r\n");
            evbuffer_free(f);
        } else if (!strcmp(cmd, "stats")) {
            uint64_t b, o;
            conn_loop_io_counters(c->loop, &b, &o);
            evbuffer_add_printf(conn_out(c), "STATS %llu %llu\r\n", (unsigned long long)b, (unsigned long long)o);
        } else if (!strcmp(cmd, "quit")) {
            evbuffer_add_printf(conn_out(c), "BYE\r\n");
            conn_close_after_write(c);
            return 0;
        } else {
            if (!strcmp(cmd, "after-resume"))
                atomic_fetch_add(&unpaused_reads, 1);
            evbuffer_add_printf(conn_out(c), "ECHO %s\r\n", cmd);
        }
    }
}

/* "hold A B": sent on conn A right before "after-resume" arrives on conn B
 * in the same wake-up: A's on_read pauses B (whichever of the two the
 * batch handles first; if B came first its read is simply earlier). */
static struct core_conn *conn_by_port[65536];

static int hold_read(struct core_conn *c)
{
    size_t len, used;
    enum line_status st;
    char *line = line_peek(conn_in(c), 64, &len, &used, &st);
    if (st == LINE_OK && len > 5 && !memcmp(line, "hold ", 5)) {
        int peer_port = atoi(line + 5);
        evbuffer_drain(conn_in(c), used);
        struct core_conn *other = peer_port > 0 && peer_port < 65536 ? conn_by_port[peer_port] : NULL;
        if (other && !conn_is_closing(other)) {
            conn_pause_read(other);
            paused_conn = other;
            struct timeval tv = { 0, 100 * 1000 };
            event_base_once(c->loop->base, -1, EV_TIMEOUT, resume_later, other, &tv);
        }
        evbuffer_add_printf(conn_out(c), "HELD\r\n");
    }
    return srv_read(c);
}

static void srv_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    if (c == paused_conn)
        paused_conn = NULL;
    for (int i = 0; i < 65536; i++)
        if (conn_by_port[i] == c)
            conn_by_port[i] = NULL;
}

static const struct conn_ops srv_ops = { .name = "echo", .on_read = hold_read, .on_close = srv_close };

static void on_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t len, void *arg)
{
    (void)arg;
    struct core_conn *c = conn_new(loop, fd, sa, len, &srv_ops, NULL);
    if (c && sa->sa_family == AF_INET)
        conn_by_port[ntohs(((const struct sockaddr_in *)sa)->sin_port)] = c;
}

/* ---- the client (its own thread) ---- */

static int port;
static atomic_int client_failures;
static unsigned long long seen_batches, seen_ops;
static unsigned long long batches0, ops0, batches1, ops1; /* around the wake-up with 12 conns ready */

#define FAIL(...)                                                                                                      \
    do {                                                                                                               \
        fprintf(stderr, "client failure at line %d: ", __LINE__);                                                      \
        fprintf(stderr, __VA_ARGS__);                                                                                  \
        fprintf(stderr, "\n");                                                                                         \
        atomic_fetch_add(&client_failures, 1);                                                                         \
    } while (0)

static int dial(int *local_port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = { 10, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
        close(fd);
        return -1;
    }
    if (local_port) {
        struct sockaddr_in me;
        socklen_t ml = sizeof me;
        getsockname(fd, (struct sockaddr *)&me, &ml);
        *local_port = ntohs(me.sin_port);
    }
    return fd;
}

/* Read exactly want bytes (or until EOF/timeout); returns how many. */
static size_t read_n(int fd, char *buf, size_t want)
{
    size_t got = 0;
    while (got < want) {
        ssize_t n = recv(fd, buf + got, want - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

static bool expect(int fd, const char *want)
{
    char buf[256];
    size_t n = strlen(want);
    size_t got = read_n(fd, buf, n);
    buf[got] = '\0';
    if (got != n || memcmp(buf, want, n) != 0) {
        FAIL("expected [%s] got [%s]", want, buf);
        return false;
    }
    return true;
}

static void say(int fd, const char *s)
{
    if (send(fd, s, strlen(s), MSG_NOSIGNAL) < 0)
        FAIL("send: %s", strerror(errno));
}

static void get_stats(int fd, unsigned long long *batches, unsigned long long *ops)
{
    say(fd, "stats\r\n");
    char buf[128];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    if (sscanf(buf, "STATS %llu %llu", batches, ops) != 2)
        FAIL("stats: [%s]", buf);
}

static void *client_main(void *arg)
{
    (void)arg;
    enum { N = 12 };
    int fds[N], ports[N];
    for (int i = 0; i < N; i++) {
        fds[i] = dial(&ports[i]);
        if (fds[i] < 0) {
            FAIL("connect");
            loop_request_stop();
            return NULL;
        }
    }
    /* pipelined, and split across sends */
    for (int i = 0; i < N; i++) {
        say(fds[i], "a\r\nb\r\nc");
        expect(fds[i], "ECHO a\r\nECHO b\r\n");
        say(fds[i], "\r\n");
        expect(fds[i], "ECHO c\r\n");
    }
    /* many conns ready in one wake-up */
    get_stats(fds[5], &batches0, &ops0);
    say(fds[0], "sleep\r\n");
    usleep(50 * 1000);
    for (int i = 1; i < N; i++)
        say(fds[i], "x\r\n");
    expect(fds[0], "SLEPT\r\n");
    for (int i = 1; i < N; i++)
        expect(fds[i], "ECHO x\r\n");
    get_stats(fds[5], &batches1, &ops1);

    /* a pause from another conn's on_read in the same wake-up: fds[2]'s
     * bytes may already be read by the batch, but on_read must not see
     * them before the resume 100 ms later */
    for (int round = 0; round < 3; round++) {
        char hold[32];
        snprintf(hold, sizeof hold, "hold %d\r\n", ports[2]);
        say(fds[0], "sleep\r\n");
        usleep(50 * 1000);
        say(fds[1], hold);
        say(fds[2], "after-resume\r\n");
        expect(fds[0], "SLEPT\r\n");
        expect(fds[1], "HELD\r\n");
        expect(fds[2], "ECHO after-resume\r\n");
    }

    /* 3 MB in one reply: more than the socket takes at once */
    {
        size_t big = 3u << 20;
        char cmd[32];
        snprintf(cmd, sizeof cmd, "big %zu\r\nafter\r\n", big);
        say(fds[3], cmd);
        char *buf = malloc(big + 2);
        size_t got = read_n(fds[3], buf, big + 2);
        bool ok = got == big + 2 && buf[big] == '\r' && buf[big + 1] == '\n';
        for (size_t i = 0; ok && i < big; i++)
            ok = buf[i] == 'B';
        if (!ok)
            FAIL("big reply: %zu bytes", got);
        free(buf);
        expect(fds[3], "ECHO after\r\n");
    }
    /* a reply still going out after the peer's half-close */
    {
        size_t big = 2u << 20;
        char cmd[32];
        snprintf(cmd, sizeof cmd, "big %zu\r\n", big);
        say(fds[4], cmd);
        shutdown(fds[4], SHUT_WR);
        char *buf = malloc(big + 16);
        size_t got = read_n(fds[4], buf, big + 16);
        if (got != big + 2)
            FAIL("half-closed peer got %zu of %zu bytes", got, big + 2);
        free(buf);
    }
    /* file segments (sendfile) behind and between memory bytes: byte for
     * byte, twice on one conn (the second time the conn's output may
     * hold the rest of the first) */
    for (int round = 0; round < 2; round++) {
        long off = round ? 12345 : 0;
        char cmd[32];
        snprintf(cmd, sizeof cmd, "file %ld\r\n", off);
        say(fds[7], cmd);
        size_t want = 6 + (size_t)(FILE_BYTES - off) + 7;
        char *buf = malloc(want + 1);
        size_t got = read_n(fds[7], buf, want);
        bool ok = got == want && !memcmp(buf, "FILE\r\n", 6) && !memcmp(buf + want - 7, "\r\nEND\r\n", 7);
        for (long i = 0; ok && i < FILE_BYTES - off; i++)
            ok = buf[6 + i] == (char)('a' + (off + i) % 23);
        if (!ok)
            FAIL("file reply from %ld: %zu of %zu bytes, or wrong bytes", off, got, want);
        free(buf);
    }
    get_stats(fds[5], &seen_batches, &seen_ops);
    say(fds[6], "quit\r\n");
    expect(fds[6], "BYE\r\n");
    char c;
    if (recv(fds[6], &c, 1, 0) != 0)
        FAIL("no close after BYE");
    for (int i = 0; i < N; i++)
        close(fds[i]);
    loop_request_stop();
    return NULL;
}

/* Runs the server and the client; exit status 0 when all went well. */
static int serve(bool expect_ring)
{
    snprintf(file_path, sizeof file_path, "/tmp/test_uring.%d", (int)getpid());
    {
        FILE *f = fopen(file_path, "w");
        for (long i = 0; f && i < FILE_BYTES; i++)
            fputc('a' + (int)(i % 23), f);
        if (f)
            fclose(f);
    }
    if (loop_init(1) != 0)
        return 10;
    loop_set_grace(2);
    char err[256];
    struct core_listener *l = listen_open("127.0.0.1:0", 0, NULL, on_accept, NULL, NULL, err, sizeof err);
    if (!l) {
        fprintf(stderr, "listen: %s\n", err);
        return 11;
    }
    port = listen_port(l);
    pthread_t t;
    pthread_create(&t, NULL, client_main, NULL);
    CHECK_EQ_INT(loop_run(), 0);
    pthread_join(t, NULL);
    CHECK_EQ_INT(atomic_load(&client_failures), 0);
    CHECK_EQ_INT(atomic_load(&violations), 0);
    CHECK_EQ_INT(atomic_load(&unpaused_reads), 3);
    CHECK_EQ_INT(conn_total_current(), 0);
    if (expect_ring) {
        /* the wake-up with 12 conns ready took their reads in one batch
         * and their replies in another: 24 operations (and the stats
         * exchange) in a handful of io_uring_enter calls */
        CHECK(seen_batches > 0);
        CHECK(ops1 - ops0 >= 24);
        CHECK(batches1 - batches0 <= 8); /* one per conn would be 24 */
    } else {
        CHECK_EQ_INT(seen_batches, 0);
        CHECK_EQ_INT(seen_ops, 0);
    }
    fprintf(stderr, "  io_uring batches %llu, operations %llu (12 conns woken together: %llu in %llu)\n", seen_batches,
            seen_ops, ops1 - ops0, batches1 - batches0);
    loop_free();
    unlink(file_path);
    return unit_checks_failed_in_test ? 1 : 0;
}

static void refuse_io_uring(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { .len = sizeof f / sizeof f[0], .filter = f };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("seccomp");
        _exit(12);
    }
}

enum mode { RING, REFUSED, EPOLL };

static int in_child(enum mode m)
{
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        if (m == EPOLL)
            unsetenv("STACK_IO_URING");
        else
            setenv("STACK_IO_URING", "1", 1);
        if (m == REFUSED)
            refuse_io_uring();
        _exit(serve(m == RING && ring_available));
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_conn_with_ring(void) { CHECK_EQ_INT(in_child(RING), 0); }
static void test_conn_ring_refused_falls_back(void) { CHECK_EQ_INT(in_child(REFUSED), 0); }
static void test_conn_epoll(void) { CHECK_EQ_INT(in_child(EPOLL), 0); }

int main(void)
{
    RUN(test_batch);
    RUN(test_conn_with_ring);
    RUN(test_conn_ring_refused_falls_back);
    RUN(test_conn_epoll);
    return unit_done();
}
