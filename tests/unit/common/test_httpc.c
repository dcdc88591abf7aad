/* httpc against a canned-response server thread over loopback: a
 * Content-Length body, a chunked body decoded and raw, a body until close,
 * 100-continue skipped, two requests on one kept-alive connection, a
 * malformed head and a broken chunk (HTTPC_BAD_RESPONSE), a refused
 * connect (HTTPC_CONNECT_FAILED), HEAD framing, and back-pressure. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/httpc.h"
#include "common/loop.h"
#include "tests/unit/unit.h"

static int srv_fd, srv_port;

static const struct {
    const char *path, *resp;
} canned[] = {
    { "/len", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" },
    { "/chunked",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\nT: v\r\n\r\n" },
    { "/close", "HTTP/1.0 200 OK\r\n\r\nuntil close" },
    { "/continue", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok" },
    { "/bad", "HTTP/1.1 2OO OK\r\n\r\n" },
    { "/badchunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" },
    { "/head", "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n" },
    { "/big", NULL },
};

/* One connection: answer each request head by its path, until EOF. */
static void *serve_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[8192];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - 1 - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = 0;
        char *end;
        while ((end = strstr(buf, "\r\n\r\n"))) {
            char path[64] = "";
            sscanf(buf, "%*s %63s", path);
            size_t used = (size_t)(end + 4 - buf);
            memmove(buf, buf + used, have - used + 1);
            have -= used;
            for (size_t i = 0; i < sizeof canned / sizeof canned[0]; i++) {
                if (strcmp(path, canned[i].path))
                    continue;
                if (canned[i].resp) {
                    if (write(fd, canned[i].resp, strlen(canned[i].resp)) < 0)
                        break;
                } else { /* /big: 1 MiB */
                    const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";
                    if (write(fd, h, strlen(h)) < 0)
                        break;
                    static char mb[65536];
                    memset(mb, 'x', sizeof mb);
                    for (int k = 0; k < 16; k++)
                        if (write(fd, mb, sizeof mb) < 0)
                            break;
                }
                if (!strcmp(path, "/close")) {
                    close(fd);
                    return NULL;
                }
            }
        }
    }
    close(fd);
    return NULL;
}

static void *server_main(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(srv_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        pthread_t t;
        pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
}

/* ---- the client side, one case after another on the loop ---- */

struct result {
    int status;
    char body[256];
    size_t body_len;
    size_t big_len;
    bool done, reusable, closed;
    enum httpc_failure failure;
    int heads;
};

static struct result res;
static int step;
static struct httpc *keep_hc;
static bool pause_big;

static void next_step(void);

static enum httpc_head_action on_head(struct httpc *hc, struct http_msg *resp)
{
    (void)hc;
    res.status = resp->status;
    res.heads++;
    return HTTPC_READ_BODY;
}

static bool resumed;

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    resumed = true;
    httpc_resume(arg);
}

static void on_body(struct httpc *hc, struct evbuffer *data)
{
    size_t n = evbuffer_get_length(data);
    res.big_len += n;
    if (res.body_len + n < sizeof res.body) {
        evbuffer_remove(data, res.body + res.body_len, n);
        res.body_len += n;
    }
    if (pause_big && res.big_len >= 65536) { /* back-pressure: pause, resume from a timer */
        pause_big = false;
        httpc_pause(hc);
        struct timeval tv = { 0, 50000 };
        event_base_once(hc->c->loop->base, -1, EV_TIMEOUT, resume_cb, hc, &tv);
    }
}

static void on_done(struct httpc *hc, bool reusable)
{
    res.done = true;
    res.reusable = reusable;
    if (hc == keep_hc && step == 4 && res.heads == 1) {
        /* the second request on the same connection */
        CHECK(reusable);
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "GET /len HTTP/1.1\r\nHost: x\r\n\r\n");
        res.body_len = 0;
        httpc_request(hc, HTTP_M_GET, b);
        evbuffer_free(b);
        return;
    }
    httpc_close(hc);
}

static void on_close(struct httpc *hc, enum conn_close_reason why)
{
    (void)why;
    res.closed = true;
    res.failure = hc->failure;
    if (hc == keep_hc)
        keep_hc = NULL;
    next_step();
}

static const struct httpc_ops ops = {
    .on_head = on_head, .on_body = on_body, .on_done = on_done, .on_close = on_close
};

static void start(const char *path, enum http_method m, bool raw, int port)
{
    memset(&res, 0, sizeof res);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    struct httpc *hc = httpc_connect(loop_get(0), (struct sockaddr *)&sa, sizeof sa, 2000, &ops, NULL);
    CHECK(hc != NULL);
    if (!hc) {
        loop_request_stop();
        return;
    }
    hc->raw_body = raw;
    hc->read_ms = 3000;
    if (step == 4)
        keep_hc = hc;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "%s %s HTTP/1.1\r\nHost: x\r\n\r\n", m == HTTP_M_HEAD ? "HEAD" : "GET", path);
    httpc_request(hc, m, b); /* sent before the connect completes: queued */
    evbuffer_free(b);
}

static int dead_port;

static void next_step(void)
{
    /* check the case that just ended, then start the next */
    switch (step) {
    case 1:
        CHECK(res.done && res.status == 200 && res.body_len == 5 && !memcmp(res.body, "hello", 5));
        CHECK(res.reusable && res.failure == HTTPC_OK);
        break;
    case 2: CHECK(res.done && res.body_len == 9 && !memcmp(res.body, "wikipedia", 9)); break;
    case 3: {
        const char *raw = "4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\nT: v\r\n\r\n";
        CHECK(res.done && res.body_len == strlen(raw) && !memcmp(res.body, raw, strlen(raw)));
        break;
    }
    case 4: CHECK(res.heads == 2 && res.done && res.body_len == 5); break;
    case 5: CHECK(res.done && !res.reusable && res.body_len == 11 && !memcmp(res.body, "until close", 11)); break;
    case 6: CHECK(res.done && res.status == 201 && res.heads == 1 && res.body_len == 2); break;
    case 7: CHECK(!res.done && res.failure == HTTPC_BAD_RESPONSE); break;
    case 8: CHECK(!res.done && res.failure == HTTPC_BAD_RESPONSE); break;
    case 9: CHECK(!res.done && res.failure == HTTPC_CONNECT_FAILED); break;
    case 10: CHECK(res.done && res.status == 200 && res.body_len == 0 && res.reusable); break;
    case 11: CHECK(res.done && res.big_len == 1048576 && resumed); break;
    }
    step++;
    switch (step) {
    case 1: start("/len", HTTP_M_GET, false, srv_port); break;
    case 2: start("/chunked", HTTP_M_GET, false, srv_port); break;
    case 3: start("/chunked", HTTP_M_GET, true, srv_port); break;
    case 4: start("/len", HTTP_M_GET, false, srv_port); break;
    case 5: start("/close", HTTP_M_GET, false, srv_port); break;
    case 6: start("/continue", HTTP_M_GET, false, srv_port); break;
    case 7: start("/bad", HTTP_M_GET, false, srv_port); break;
    case 8: start("/badchunk", HTTP_M_GET, false, srv_port); break;
    case 9: start("/len", HTTP_M_GET, false, dead_port); break;
    case 10: start("/head", HTTP_M_HEAD, false, srv_port); break;
    case 11:
        pause_big = true;
        start("/big", HTTP_M_GET, false, srv_port);
        break;
    default: loop_request_stop(); break;
    }
}

static void kickoff(void *arg)
{
    (void)arg;
    next_step();
}

static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    socklen_t sl = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sl) < 0 || listen(fd, 16) < 0)
        return -1;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void test_httpc_cases(void)
{
    srv_fd = listen_any(&srv_port);
    CHECK(srv_fd >= 0);
    int dfd = listen_any(&dead_port); /* a port with nobody listening */
    close(dfd);
    pthread_t t;
    pthread_create(&t, NULL, server_main, NULL);
    CHECK_EQ_INT(loop_init(1), 0);
    loop_call(loop_get(0), kickoff, NULL);
    CHECK_EQ_INT(loop_run(), 0);
    loop_free();
    CHECK_EQ_INT(step, 12);
    shutdown(srv_fd, SHUT_RDWR);
    close(srv_fd);
    pthread_join(t, NULL);
}

int main(void)
{
    RUN(test_httpc_cases);
    return unit_done();
}
