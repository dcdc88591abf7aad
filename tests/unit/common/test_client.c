/* Unit tests for common/client, the blocking client-library kit: server
 * lists (good and bad), connecting by name (over every address it has:
 * the fallback runs where "localhost" resolves to ::1 first), refused
 * connects with a reason, the dead-server policy and its retry, buffered
 * lines and blocks arriving in pieces, line bounds, read timeouts, EOF,
 * and a big request sent while the peer's big reply comes back (no
 * deadlock: replies are buffered while sending). */
#include "common/client.h"
#include "tests/unit/unit.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void test_parse_lists(void)
{
    struct client_server *s = NULL;
    char err[256] = "";
    int n = client_parse_servers("a.example, b:11212 c:11213:5\t[::1]:99 /run/mc.sock fe80::1:2:3", 11211, true, &s,
                                 err, sizeof err);
    CHECK_EQ_INT(n, 6);
    if (n == 6) {
        CHECK_STR(s[0].host, "a.example");
        CHECK_EQ_INT(s[0].port, 11211);
        CHECK_EQ_INT(s[0].weight, 1);
        CHECK_STR(s[0].name, "a.example:11211");
        CHECK_EQ_INT(s[1].port, 11212);
        CHECK_EQ_INT(s[2].weight, 5);
        CHECK_STR(s[3].host, "::1");
        CHECK_EQ_INT(s[3].port, 99);
        CHECK_STR(s[3].name, "[::1]:99");
        CHECK_STR(s[4].host, "/run/mc.sock");
        CHECK_EQ_INT(s[4].port, 0);
        CHECK_STR(s[5].host, "fe80::1:2:3"); /* a bare IPv6 address */
        CHECK_EQ_INT(s[5].port, 11211);
        for (int i = 0; i < n; i++)
            CHECK_EQ_INT(s[i].fd, -1);
    }
    client_servers_free(s, n);
    /* without weights, host:port:x is an error, and "::1" is an address */
    n = client_parse_servers("h:1:2", 4730, false, &s, err, sizeof err);
    CHECK_EQ_INT(n, -1);
    n = client_parse_servers("::1,[fe80::2]", 4730, false, &s, err, sizeof err);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        CHECK_STR(s[0].host, "::1");
        CHECK_EQ_INT(s[0].port, 4730);
        CHECK_STR(s[1].host, "fe80::2");
    }
    client_servers_free(s, n);
    static const char *const bad[] = { "",      " , ",         "h:0",  "h:65536", "h:12x", "h:-1",
                                       "h:1:0", "h:1:1000001", "[::1", "[::1]x",  ":11211" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        s = (struct client_server *)1;
        CHECK_EQ_INT(client_parse_servers(bad[i], 11211, true, &s, err, sizeof err), -1);
        CHECK(s == NULL);
        CHECK(err[0] != '\0');
    }
    char longpath[200];
    memset(longpath, 'p', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    CHECK_EQ_INT(client_parse_servers(longpath, 1, true, &s, err, sizeof err), -1);
    CHECK(strstr(err, "too long") != NULL);
}

static int listener(struct sockaddr_in *sin)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sin->sin_family = AF_INET;
    sin->sin_port = 0;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)sin, sizeof *sin);
    listen(fd, 8);
    socklen_t l = sizeof *sin;
    getsockname(fd, (struct sockaddr *)sin, &l);
    return fd;
}

static void test_connect_every_address_and_refusal(void)
{
    struct sockaddr_in sin;
    int lfd = listener(&sin);
    int port = ntohs(sin.sin_port);
    /* "localhost" may resolve to ::1 first, where nobody listens: the kit
     * goes on to 127.0.0.1 within the one timeout */
    char list[64], err[256];
    snprintf(list, sizeof list, "localhost:%d", port);
    struct client_server *s = NULL;
    CHECK_EQ_INT(client_parse_servers(list, 1, false, &s, err, sizeof err), 1);
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
    bool v6_first = getaddrinfo("localhost", NULL, &hints, &ai) == 0 && ai->ai_family == AF_INET6;
    if (ai)
        freeaddrinfo(ai);
    CHECK_EQ_INT(client_connect(&s[0], 2000), CLIENT_OK);
    CHECK(s[0].fd >= 0);
    CHECK_EQ_INT(client_connect(&s[0], 2000), CLIENT_OK); /* already connected: no-op */
    if (!v6_first)
        fprintf(stderr, "note: localhost resolves to IPv4 first here; the fallback path was not needed\n");
    client_servers_free(s, 1);
    close(lfd);
    /* nobody there now: refused, with the reason */
    CHECK_EQ_INT(client_parse_servers(list, 1, false, &s, err, sizeof err), 1);
    snprintf(s[0].host, sizeof s[0].host, "127.0.0.1");
    CHECK_EQ_INT(client_connect(&s[0], 2000), CLIENT_CLOSED);
    CHECK(strstr(s[0].error, "refused") != NULL);
    CHECK_EQ_INT(s[0].fd, -1);
    /* dead after two failures in a row; not tried until its time; back after */
    CHECK(!client_failed(&s[0], 2, 60));
    CHECK(client_failed(&s[0], 2, 60));
    CHECK(s[0].dead);
    CHECK_EQ_INT(client_connect(&s[0], 2000), CLIENT_DEAD);
    CHECK(!client_revive(&s[0], 2));
    usleep(80000);
    CHECK(client_revive(&s[0], 2));
    CHECK(!s[0].dead);
    CHECK(client_failed(&s[0], 2, 60)); /* one more failure kills it again */
    client_ok(&s[0]);
    CHECK(!s[0].dead);
    CHECK_EQ_INT(s[0].failures, 0);
    client_servers_free(s, 1);
}

/* ---- I/O over a socketpair ---- */

static struct client_server pair_server(int fds[2])
{
    socketpair(AF_UNIX, SOCK_STREAM, 0, fds);
    fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    struct client_server s = { .fd = fds[0], .port = 0 };
    snprintf(s.name, sizeof s.name, "pair");
    return s;
}

struct dribble {
    int fd;
    const char *data;
    size_t len;
    int gap_us;
};

static void *dribbler(void *arg)
{
    struct dribble *d = arg;
    for (size_t i = 0; i < d->len; i += 3) {
        size_t n = d->len - i < 3 ? d->len - i : 3;
        if (write(d->fd, d->data + i, n) < 0)
            break;
        usleep((useconds_t)d->gap_us);
    }
    return NULL;
}

static void test_lines_and_blocks_in_pieces(void)
{
    int fds[2];
    struct client_server s = pair_server(fds);
    static const char msg[] = "VALUE k 0 5\r\nhello\r\nEND\r\nlast line no cr\n";
    struct dribble d = { fds[1], msg, sizeof msg - 1, 2000 };
    pthread_t t;
    pthread_create(&t, NULL, dribbler, &d);
    uint64_t dl = client_deadline(5000);
    char *line, *block;
    size_t len;
    CHECK_EQ_INT(client_read_line(&s, dl, 100, &line, &len), CLIENT_OK);
    CHECK_STR(line, "VALUE k 0 5");
    CHECK_EQ_INT(len, 11);
    CHECK_EQ_INT(client_read_block(&s, 7, dl, &block), CLIENT_OK);
    CHECK_MEM(block, "hello\r\n", 7);
    CHECK_EQ_INT(client_read_line(&s, dl, 100, &line, &len), CLIENT_OK);
    CHECK_STR(line, "END");
    CHECK_EQ_INT(client_read_line(&s, dl, 100, &line, &len), CLIENT_OK);
    CHECK_STR(line, "last line no cr");
    pthread_join(t, NULL);
    /* peek and consume for binary framing */
    CHECK_EQ_INT(write(fds[1], "\0\1\2\3", 4), 4);
    CHECK_EQ_INT(client_read_more(&s, dl), CLIENT_OK);
    size_t have = 0;
    const char *b = client_buffered(&s, &have);
    CHECK_EQ_INT(have, 4);
    CHECK(b[3] == 3);
    client_consume(&s, 3);
    b = client_buffered(&s, &have);
    CHECK_EQ_INT(have, 1);
    client_consume(&s, 10);
    b = client_buffered(&s, &have);
    CHECK_EQ_INT(have, 0);
    /* bounds: a line over max is refused */
    CHECK_EQ_INT(write(fds[1], "0123456789ABCDEF\r\n", 18), 18);
    CHECK_EQ_INT(client_read_line(&s, dl, 8, &line, &len), CLIENT_TOO_LONG);
    /* silence: the deadline holds */
    uint64_t t0 = client_now_ms();
    CHECK_EQ_INT(client_read_line(&s, client_deadline(100), 100, &line, &len), CLIENT_TIMEOUT);
    CHECK(client_now_ms() - t0 >= 100);
    CHECK(strstr(s.error, "timed out") != NULL);
    /* the peer closes: CLOSED */
    close(fds[1]);
    CHECK_EQ_INT(client_read_line(&s, dl, 100, &line, &len), CLIENT_CLOSED);
    client_close(&s);
    free(s.in);
}

/* The peer writes a big reply and only then reads our big request: a
 * sender that did not read meanwhile would block forever. */
enum { BIG = 4 << 20 };

static void *big_peer(void *arg)
{
    int fd = *(int *)arg;
    char *out = malloc(BIG);
    memset(out, 'r', BIG);
    size_t off = 0;
    while (off < BIG) {
        ssize_t n = write(fd, out + off, BIG - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    size_t got = 0;
    char buf[65536];
    while (got < BIG) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    free(out);
    *(int *)arg = got == BIG ? 1 : 0;
    return NULL;
}

static void test_send_all_reads_meanwhile(void)
{
    int fds[2];
    struct client_server s = pair_server(fds);
    int peer = fds[1];
    pthread_t t;
    pthread_create(&t, NULL, big_peer, &peer);
    char *req = malloc(BIG);
    memset(req, 'q', BIG);
    uint64_t dl = client_deadline(20000);
    CHECK_EQ_INT(client_send_all(&s, req, BIG, dl), CLIENT_OK);
    char *block;
    CHECK_EQ_INT(client_read_block(&s, BIG, dl, &block), CLIENT_OK);
    CHECK(block[0] == 'r' && block[BIG - 1] == 'r');
    pthread_join(t, NULL);
    CHECK_EQ_INT(peer, 1);
    free(req);
    close(fds[1]);
    client_close(&s);
    free(s.in);
}

int main(void)
{
    RUN(test_parse_lists);
    RUN(test_connect_every_address_and_refusal);
    RUN(test_lines_and_blocks_in_pieces);
    RUN(test_send_all_reads_meanwhile);
    return unit_done();
}
