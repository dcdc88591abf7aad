/* httpc: a small blocking HTTP/1.0 client for the tracker's query and job
 * threads (HEAD size checks, usage files, test writes, DELETE, replication
 * copies). Every call has a deadline; responses are parsed by common/http.
 *
 * move to common/httpc when it lands: that module is event-driven, while
 * these calls run on threads whose job is to wait. Never call from a loop. */
#include "mogilefs/mogilefs.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/http.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wait_fd(int fd, short ev, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = { .fd = fd, .events = ev };
        int r = poll(&p, 1, (int)left);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

struct url {
    char host[256];
    char port[8];
    const char *path;
};

static int parse_url(const char *url, struct url *u)
{
    if (strncmp(url, "http://", 7))
        return -1;
    const char *h = url + 7, *slash = strchr(h, '/');
    if (!slash)
        return -1;
    const char *colon = memchr(h, ':', (size_t)(slash - h));
    size_t hl = (size_t)((colon ? colon : slash) - h);
    if (hl == 0 || hl >= sizeof u->host)
        return -1;
    memcpy(u->host, h, hl);
    u->host[hl] = '\0';
    if (colon)
        snprintf(u->port, sizeof u->port, "%.*s", (int)(slash - colon - 1), colon + 1);
    else
        snprintf(u->port, sizeof u->port, "80");
    u->path = slash;
    return 0;
}

static int connect_to(const struct url *u, int64_t deadline, char *err, size_t errlen)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
    struct addrinfo *ai = NULL;
    if (getaddrinfo(u->host, u->port, &hints, &ai) != 0 || !ai) {
        snprintf(err, errlen, "cannot resolve %s", u->host);
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(ai);
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (r < 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "connect %s:%s: %s", u->host, u->port, strerror(errno));
        close(fd);
        return -1;
    }
    if (r < 0) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (wait_fd(fd, POLLOUT, deadline) < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
            snprintf(err, errlen, "connect %s:%s: %s", u->host, u->port, soerr ? strerror(soerr) : "timeout");
            close(fd);
            return -1;
        }
    }
    return fd;
}

static int send_all(int fd, const void *buf, size_t len, int64_t deadline)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(fd, POLLOUT, deadline) < 0)
                return -1;
        } else {
            return -1;
        }
    }
    return 0;
}

static ssize_t recv_some(int fd, void *buf, size_t len, int64_t deadline)
{
    for (;;) {
        ssize_t n = recv(fd, buf, len, 0);
        if (n >= 0)
            return n;
        if (errno != EAGAIN && errno != EINTR)
            return -1;
        if (wait_fd(fd, POLLIN, deadline) < 0)
            return -1;
    }
}

/* Read a response head into buf; returns head length, sets *have. */
static int read_head(int fd, char *buf, size_t cap, size_t *have, enum http_method m, struct http_msg *msg,
                     int64_t deadline)
{
    *have = 0;
    for (;;) {
        if (*have > 0) {
            int r = http_parse_response(buf, *have, m, NULL, msg);
            if (r > 0)
                return r;
            if (r < 0)
                return -1;
        }
        if (*have == cap)
            return -1;
        ssize_t n = recv_some(fd, buf + *have, cap - *have, deadline);
        if (n <= 0)
            return -1;
        *have += (size_t)n;
    }
}

int mog_http(const char *method, const char *url, const void *body, size_t body_len, size_t max_body, int timeout_ms,
             struct mog_http_res *res)
{
    return mog_http_ex(method, url, NULL, body, body_len, max_body, timeout_ms, res);
}

int mog_http_ex(const char *method, const char *url, const char *extra_headers, const void *body, size_t body_len,
                size_t max_body, int timeout_ms, struct mog_http_res *res)
{
    memset(res, 0, sizeof *res);
    res->status = -1;
    res->length = -1;
    struct url u;
    if (parse_url(url, &u) < 0) {
        snprintf(res->error, sizeof res->error, "bad url");
        return -1;
    }
    int64_t deadline = now_ms() + timeout_ms;
    int fd = connect_to(&u, deadline, res->error, sizeof res->error);
    if (fd < 0)
        return -1;
    char head[2048];
    int hl = snprintf(head, sizeof head, "%s %s HTTP/1.0\r\nHost: %s:%s\r\nConnection: close\r\n", method, u.path,
                      u.host, u.port);
    if (body || !strcmp(method, "PUT"))
        hl += snprintf(head + hl, sizeof head - (size_t)hl, "Content-Length: %zu\r\n", body_len);
    if (extra_headers)
        hl += snprintf(head + hl, sizeof head - (size_t)hl, "%s", extra_headers);
    hl += snprintf(head + hl, sizeof head - (size_t)hl, "\r\n");
    enum http_method m = http_method_parse(method, strlen(method));
    char buf[16384];
    size_t have = 0;
    struct http_msg msg;
    int rc = -1;
    if (send_all(fd, head, (size_t)hl, deadline) < 0 || (body_len && send_all(fd, body, body_len, deadline) < 0)) {
        snprintf(res->error, sizeof res->error, "send failed");
        goto out;
    }
    int h = read_head(fd, buf, sizeof buf, &have, m, &msg, deadline);
    if (h < 0) {
        snprintf(res->error, sizeof res->error, "bad or no response");
        goto out;
    }
    res->status = msg.status;
    size_t vl;
    const char *clv = http_header_value(&msg, "Content-Length", &vl);
    if (clv)
        res->length = strtoll(clv, NULL, 10);
    if (m == HTTP_M_GET && msg.status == 200) {
        size_t want = res->length >= 0 ? (size_t)res->length : max_body;
        if (want > max_body) {
            snprintf(res->error, sizeof res->error, "body too large");
            goto out;
        }
        res->body = malloc(want + 1);
        if (!res->body)
            goto out;
        size_t got = have - (size_t)h;
        if (got > want)
            got = want;
        memcpy(res->body, buf + h, got);
        while (got < want) {
            ssize_t n = recv_some(fd, res->body + got, want - got, deadline);
            if (n < 0) {
                snprintf(res->error, sizeof res->error, "read failed");
                goto out;
            }
            if (n == 0)
                break;
            got += (size_t)n;
        }
        if (res->length >= 0 && got != (size_t)res->length) {
            snprintf(res->error, sizeof res->error, "short body");
            goto out;
        }
        res->body[got] = '\0';
        res->body_len = got;
    }
    rc = 0;
out:
    close(fd);
    if (rc < 0 && res->status > 0 && !res->error[0])
        snprintf(res->error, sizeof res->error, "failed");
    return rc;
}

void mog_http_res_free(struct mog_http_res *res)
{
    free(res->body);
    res->body = NULL;
}

int mog_http_copy(const char *src_url, const char *dst_url, int timeout_ms, int64_t *length, unsigned char *md5,
                  char *err, size_t errlen)
{
    struct url su, du;
    if (parse_url(src_url, &su) < 0 || parse_url(dst_url, &du) < 0) {
        snprintf(err, errlen, "bad url");
        return -1;
    }
    /* The deadline is per step: a large file gets timeout_ms between bytes. */
    int64_t deadline = now_ms() + timeout_ms;
    int sfd = connect_to(&su, deadline, err, errlen), dfd = -1, rc = -1;
    EVP_MD_CTX *ctx = NULL;
    if (sfd < 0)
        return -1;
    char head[2048], buf[65536];
    int hl = snprintf(head, sizeof head, "GET %s HTTP/1.0\r\nHost: %s:%s\r\nConnection: close\r\n\r\n", su.path,
                      su.host, su.port);
    size_t have = 0;
    struct http_msg msg;
    if (send_all(sfd, head, (size_t)hl, deadline) < 0) {
        snprintf(err, errlen, "source send failed");
        goto out;
    }
    int h = read_head(sfd, buf, sizeof buf, &have, HTTP_M_GET, &msg, deadline);
    size_t vl;
    const char *clv = h < 0 ? NULL : http_header_value(&msg, "Content-Length", &vl);
    if (h < 0 || msg.status != 200 || !clv) {
        snprintf(err, errlen, "source %s: %s", src_url, h < 0 ? "no response" : "bad status");
        goto out;
    }
    uint64_t total = strtoull(clv, NULL, 10), sent = 0;
    dfd = connect_to(&du, now_ms() + timeout_ms, err, errlen);
    if (dfd < 0)
        goto out;
    hl = snprintf(head, sizeof head, "PUT %s HTTP/1.0\r\nHost: %s:%s\r\nContent-Length: %llu\r\n\r\n", du.path, du.host,
                  du.port, (unsigned long long)total);
    if (send_all(dfd, head, (size_t)hl, now_ms() + timeout_ms) < 0) {
        snprintf(err, errlen, "dest send failed");
        goto out;
    }
    ctx = EVP_MD_CTX_new();
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_md5(), NULL))
        goto out;
    size_t chunk = have - (size_t)h;
    const char *p = buf + h;
    for (;;) {
        if (chunk > total - sent)
            chunk = (size_t)(total - sent);
        if (chunk) {
            EVP_DigestUpdate(ctx, p, chunk);
            if (send_all(dfd, p, chunk, now_ms() + timeout_ms) < 0) {
                snprintf(err, errlen, "dest write failed");
                goto out;
            }
            sent += chunk;
        }
        if (sent == total)
            break;
        ssize_t n = recv_some(sfd, buf, sizeof buf, now_ms() + timeout_ms);
        if (n <= 0) {
            snprintf(err, errlen, "source read failed");
            goto out;
        }
        p = buf;
        chunk = (size_t)n;
    }
    have = 0;
    h = read_head(dfd, head, sizeof head, &have, HTTP_M_PUT, &msg, now_ms() + timeout_ms * 4);
    if (h < 0 || msg.status < 200 || msg.status > 299) {
        snprintf(err, errlen, "dest %s: %s %d", dst_url, h < 0 ? "no response" : "status", h < 0 ? 0 : msg.status);
        goto out;
    }
    unsigned int dl = 0;
    unsigned char dig[EVP_MAX_MD_SIZE];
    EVP_DigestFinal_ex(ctx, dig, &dl);
    if (md5)
        memcpy(md5, dig, 16);
    *length = (int64_t)total;
    rc = 0;
out:
    if (ctx)
        EVP_MD_CTX_free(ctx);
    if (sfd >= 0)
        close(sfd);
    if (dfd >= 0)
        close(dfd);
    return rc;
}

int mog_tcp_connect(const char *host, const char *port, int timeout_ms)
{
    struct url u;
    snprintf(u.host, sizeof u.host, "%s", host);
    snprintf(u.port, sizeof u.port, "%s", port);
    u.path = "/";
    char err[128];
    return connect_to(&u, now_ms() + timeout_ms, err, sizeof err);
}
