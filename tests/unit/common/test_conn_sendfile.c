/* conn + a file sent with sendfile(): libevent's Linux sendfile path
 * returns 0 when sendfile() fails with EAGAIN, which bufferevent_socket
 * takes for an EOF; conn must write the rest once the socket has room
 * (mogstored's replication reads ended early without it), and must still
 * close a conn whose file was cut short (sendfile 0 for good), not spin.
 *
 * sendfile() is interposed below (this program's definition wins over
 * libc's for libevent too): it fails with EAGAIN when asked to, else calls
 * the kernel. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/listen.h"
#include "common/loop.h"
#include "tests/unit/unit.h"

static atomic_int eagain_left;  /* calls after the next one that fail with EAGAIN */
static atomic_int pass_first;   /* the next call goes through before those */
static atomic_int zero_forever; /* every call returns 0 (a file cut short) */
static atomic_int calls, eagains;

ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
    atomic_fetch_add(&calls, 1);
    if (atomic_load(&zero_forever))
        return 0;
    if (atomic_exchange(&pass_first, 0) == 0 && atomic_load(&eagain_left) > 0) {
        atomic_fetch_sub(&eagain_left, 1);
        atomic_fetch_add(&eagains, 1);
        errno = EAGAIN;
        return -1;
    }
    return syscall(SYS_sendfile, out_fd, in_fd, offset, count);
}

/* libevent may be built to call the 64-bit name (the same call on 64-bit
 * Linux). */
ssize_t sendfile64(int out_fd, int in_fd, off_t *offset, size_t count);
ssize_t sendfile64(int out_fd, int in_fd, off_t *offset, size_t count)
{
    return sendfile(out_fd, in_fd, offset, count);
}

#define FILE_SIZE (24 << 20) /* more than a loopback socket's send buffer holds */
static char path[64];
static int port;
static atomic_int closed;

static int srv_read(struct core_conn *c)
{
    struct evbuffer *in = conn_in(c);
    if (evbuffer_get_length(in) == 0)
        return 0;
    evbuffer_drain(in, evbuffer_get_length(in));
    int fd = open(path, O_RDONLY);
    /* the conn's output drains to its socket: a sendfile chain */
    if (fd < 0 || evbuffer_add_file(conn_out(c), fd, 0, FILE_SIZE) < 0)
        return -1;
    conn_close_after_write(c);
    return 0;
}

static void srv_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)c;
    (void)why;
    atomic_fetch_add(&closed, 1);
}

static const struct conn_ops srv_ops = { .name = "file", .on_read = srv_read, .on_close = srv_close };

static void on_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t len, void *arg)
{
    (void)arg;
    conn_new(loop, fd, sa, len, &srv_ops, NULL);
}

/* Ask for the file, read until EOF (or 10 s of silence); bytes received. */
static long fetch(int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct timeval tv = { 10, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0 || send(fd, "go", 2, 0) != 2) {
        close(fd);
        return -1;
    }
    long total = 0;
    char buf[65536];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        total += n;
    }
    close(fd);
    return total;
}

static long got_whole, got_cut;
static double cut_seconds;

static void *client(void *arg)
{
    (void)arg;
    /* the first sendfile fills the socket; the three after it (from the
     * bufferevent, once the socket is writable) fail with EAGAIN */
    atomic_store(&pass_first, 1);
    atomic_store(&eagain_left, 3);
    got_whole = -2;
    {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int small = 16384;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        struct timeval tv = { 10, 0 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connect(fd, (struct sockaddr *)&sin, sizeof sin);
        send(fd, "go", 2, 0);
        /* not reading yet: the first sendfile fills the socket and stops
         * short (with a reader draining it at once, one call on an idle
         * machine sent all 24 MB and no EAGAIN was ever asked for) */
        usleep(300 * 1000);
        long total = 0;
        char buf[65536];
        for (;;) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0)
                break;
            total += n;
        }
        close(fd);
        got_whole = total;
    }
    /* a file that ends early: sendfile gives 0 for good */
    atomic_store(&zero_forever, 1);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    got_cut = fetch(0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    cut_seconds = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    atomic_store(&zero_forever, 0);
    loop_request_stop();
    return NULL;
}

static void test_sendfile_eagain_is_not_eof(void)
{
    snprintf(path, sizeof path, "/tmp/test_conn_sendfile.%d", (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    static char block[1 << 16];
    memset(block, 'f', sizeof block);
    for (int i = 0; i < FILE_SIZE / (int)sizeof block; i++)
        CHECK_EQ_INT(write(fd, block, sizeof block), (int)sizeof block);
    close(fd);
    CHECK_EQ_INT(loop_init(1), 0);
    loop_set_grace(1);
    char err[256];
    struct core_listener *l = listen_open("127.0.0.1:0", 0, NULL, on_accept, NULL, NULL, err, sizeof err);
    CHECK(l != NULL);
    if (!l)
        return;
    port = listen_port(l);
    pthread_t t;
    pthread_create(&t, NULL, client, NULL);
    CHECK_EQ_INT(loop_run(), 0);
    pthread_join(t, NULL);
    loop_free();
    unlink(path);
    CHECK_EQ_INT(atomic_load(&eagains), 3);
    CHECK_EQ_INT(got_whole, FILE_SIZE); /* every byte, despite the EAGAINs */
    CHECK(got_cut >= 0 && got_cut < FILE_SIZE);
    CHECK(cut_seconds < 8); /* closed after the bounded retries, not left hanging */
    CHECK_EQ_INT(atomic_load(&closed), 2);
}

int main(void)
{
    RUN(test_sendfile_eagain_is_not_eof);
    return unit_done();
}
