/* libschwartz: blocking client for schwartzd. Owns one TCP connection, a
 * bounded read buffer and the protocol's reply framing.
 * move the socket/buffer part to common/client when it lands. */
#include "schwartz/client/libschwartz.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SWC_MAX_LINE 8192
#define SWC_MAX_ARG (64u << 20)

struct sw_client {
    char host[256];
    char port[16];
    int timeout_ms;
    int fd;
    char *buf;          /* unread input: buf[off..len) */
    size_t off, len, cap;
    char err[300];
};

static int fail(struct sw_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct sw_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return -1;
}

static void drop(struct sw_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->off = c->len = 0;
}

struct sw_client *sw_client_new(const char *server, int timeout_ms)
{
    struct sw_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = -1;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
    const char *s = server && *server ? server : "127.0.0.1:7003";
    const char *colon = strrchr(s, ':');
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        size_t n = rb ? (size_t)(rb - s - 1) : strlen(s);
        snprintf(c->host, sizeof c->host, "%.*s", (int)n, s + 1);
        snprintf(c->port, sizeof c->port, "%s", rb && rb[1] == ':' ? rb + 2 : "7003");
    } else if (colon) {
        snprintf(c->host, sizeof c->host, "%.*s", (int)(colon - s), s);
        snprintf(c->port, sizeof c->port, "%s", colon + 1);
    } else {
        snprintf(c->host, sizeof c->host, "%s", s);
        snprintf(c->port, sizeof c->port, "7003");
    }
    return c;
}

void sw_client_free(struct sw_client *c)
{
    if (!c)
        return;
    drop(c);
    free(c->buf);
    free(c);
}

const char *sw_client_error(const struct sw_client *c) { return c->err; }

static int wait_fd(struct sw_client *c, short ev)
{
    struct pollfd p = { .fd = c->fd, .events = ev };
    int r;
    do
        r = poll(&p, 1, c->timeout_ms);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return fail(c, "timeout talking to %s:%s", c->host, c->port);
    return r < 0 ? fail(c, "poll: %s", strerror(errno)) : 0;
}

static int connect_now(struct sw_client *c)
{
    if (c->fd >= 0)
        return 0;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    int rc = getaddrinfo(c->host, c->port, &hints, &res);
    if (rc != 0)
        return fail(c, "%s: %s", c->host, gai_strerror(rc));
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0)
            continue;
        c->fd = fd;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 ||
            (errno == EINPROGRESS && wait_fd(c, POLLOUT) == 0)) {
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
            if (soerr == 0) {
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                freeaddrinfo(res);
                return 0;
            }
            fail(c, "connect %s:%s: %s", c->host, c->port, strerror(soerr));
        } else if (errno != EINPROGRESS)
            fail(c, "connect %s:%s: %s", c->host, c->port, strerror(errno));
        close(fd);
        c->fd = -1;
    }
    freeaddrinfo(res);
    return -1;
}

static int send_all(struct sw_client *c, const void *p, size_t n)
{
    const char *b = p;
    while (n) {
        ssize_t w = send(c->fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(c, POLLOUT) < 0)
                return -1;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return fail(c, "send: %s", strerror(errno));
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fill(struct sw_client *c)
{
    if (c->off > 0 && c->off == c->len)
        c->off = c->len = 0;
    if (c->len == c->cap) {
        if (c->off > 0) {
            memmove(c->buf, c->buf + c->off, c->len - c->off);
            c->len -= c->off;
            c->off = 0;
        } else {
            size_t cap = c->cap ? c->cap * 2 : 16384;
            char *b = realloc(c->buf, cap);
            if (!b)
                return fail(c, "out of memory");
            c->buf = b;
            c->cap = cap;
        }
    }
    for (;;) {
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (r > 0) {
            c->len += (size_t)r;
            return 0;
        }
        if (r == 0)
            return fail(c, "server closed the connection");
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return fail(c, "recv: %s", strerror(errno));
        if (wait_fd(c, POLLIN) < 0)
            return -1;
    }
}

/* Next reply line (NUL-ended, without CRLF), valid until the next read. */
static char *read_line(struct sw_client *c)
{
    for (;;) {
        char *nl = memchr(c->buf + c->off, '\n', c->len - c->off);
        if (nl) {
            char *line = c->buf + c->off;
            c->off = (size_t)(nl - c->buf) + 1;
            *nl = '\0';
            if (nl > line && nl[-1] == '\r')
                nl[-1] = '\0';
            return line;
        }
        if (c->len - c->off > SWC_MAX_LINE) {
            fail(c, "reply line too long");
            return NULL;
        }
        if (fill(c) < 0)
            return NULL;
    }
}

static int read_block(struct sw_client *c, unsigned char *dst, size_t n)
{
    size_t need = n + 2;
    size_t got = 0;
    while (got < need) {
        if (c->off == c->len && fill(c) < 0)
            return -1;
        size_t avail = c->len - c->off, take = need - got < avail ? need - got : avail;
        for (size_t i = 0; i < take; i++) {
            if (got + i < n)
                dst[got + i] = (unsigned char)c->buf[c->off + i];
        }
        c->off += take;
        got += take;
    }
    dst[n] = '\0';
    return 0;
}

/* Send a request (and optional block); the connection is (re)opened here. */
static int request(struct sw_client *c, const char *line, const void *block, size_t blen, bool with_block)
{
    if (connect_now(c) < 0)
        return -1;
    if (send_all(c, line, strlen(line)) < 0 || (with_block && (send_all(c, block, blen) < 0 || send_all(c, "\r\n", 2) < 0))) {
        drop(c);
        return -1;
    }
    return 0;
}

static int check_ok(struct sw_client *c, char **rest)
{
    char *l = read_line(c);
    if (!l) {
        drop(c);
        return -1;
    }
    if (!strncmp(l, "OK", 2) && (l[2] == '\0' || l[2] == ' ')) {
        if (rest)
            *rest = l[2] ? l + 3 : l + 2;
        return 0;
    }
    return fail(c, "%s", l);
}

/* Tokens must not carry spaces or newlines. */
static bool token_ok(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n' || *s == '\0')
            return false;
    return true;
}

int sw_client_insert(struct sw_client *c, const char *func, const void *arg, size_t len,
                     const struct sw_insert_opts *o, char *handle, size_t hlen)
{
    if (!token_ok(func) || (o && o->uniqkey && !token_ok(o->uniqkey)) || (o && o->coalesce && !token_ok(o->coalesce)))
        return fail(c, "function, uniqkey and coalesce must be non-empty and without spaces");
    char line[1024];
    int n = snprintf(line, sizeof line, "insert %s %zu", func, len);
    if (o && o->uniqkey)
        n += snprintf(line + n, sizeof line - (size_t)n, " uniqkey=%s", o->uniqkey);
    if (o && o->priority >= 0)
        n += snprintf(line + n, sizeof line - (size_t)n, " priority=%d", o->priority);
    if (o && o->run_after > 0)
        n += snprintf(line + n, sizeof line - (size_t)n, " run_after=%lld", o->run_after);
    if (o && o->coalesce)
        n += snprintf(line + n, sizeof line - (size_t)n, " coalesce=%s", o->coalesce);
    if ((size_t)n + 3 > sizeof line)
        return fail(c, "request too long");
    snprintf(line + n, sizeof line - (size_t)n, "\r\n");
    char *rest;
    if (request(c, line, arg ? arg : "", len, true) < 0 || check_ok(c, &rest) < 0)
        return -1;
    if (handle && hlen)
        snprintf(handle, hlen, "%s", rest);
    return 0;
}

void sw_client_jobs_free(struct sw_client_job *jobs, int n)
{
    if (!jobs)
        return;
    for (int i = 0; i < n; i++)
        free(jobs[i].arg);
    free(jobs);
}

int sw_client_grab(struct sw_client *c, const char *const *funcs, int nfuncs, int max, int grab_for,
                   struct sw_client_job **jobs)
{
    *jobs = NULL;
    char line[SWC_MAX_LINE];
    int n = snprintf(line, sizeof line, "grab %d %d", max, grab_for);
    for (int i = 0; i < nfuncs; i++) {
        if (!token_ok(funcs[i]) || strchr(funcs[i], '='))
            return fail(c, "bad function name");
        n += snprintf(line + n, sizeof line - (size_t)n, " %s", funcs[i]);
        if ((size_t)n + 3 >= sizeof line)
            return fail(c, "request too long");
    }
    snprintf(line + n, sizeof line - (size_t)n, "\r\n");
    if (request(c, line, NULL, 0, false) < 0)
        return -1;
    struct sw_client_job *out = calloc((size_t)(max > 0 ? max : 1), sizeof *out);
    if (!out)
        return fail(c, "out of memory");
    int got = 0;
    for (;;) {
        char *l = read_line(c);
        if (!l)
            goto lost;
        if (!strcmp(l, "END"))
            break;
        char h[64], f[256];
        size_t len;
        long long fails;
        if (strncmp(l, "JOB ", 4) || got >= max ||
            sscanf(l + 4, "%63s %255s %zu %lld", h, f, &len, &fails) != 4 || len > SWC_MAX_ARG) {
            fail(c, "%s", l);
            if (!strncmp(l, "ERR ", 4)) {
                sw_client_jobs_free(out, got);
                return -1;
            }
            goto lost;
        }
        struct sw_client_job *j = &out[got];
        snprintf(j->handle, sizeof j->handle, "%s", h);
        snprintf(j->func, sizeof j->func, "%s", f);
        j->failures = fails;
        j->arglen = len;
        j->arg = malloc(len + 1);
        if (!j->arg || read_block(c, j->arg, len) < 0)
            goto lost;
        got++;
    }
    *jobs = out;
    return got;
lost:
    sw_client_jobs_free(out, got + 1);
    drop(c);
    return -1;
}

static int simple(struct sw_client *c, const char *line, char **rest)
{
    if (request(c, line, NULL, 0, false) < 0)
        return -1;
    return check_ok(c, rest);
}

int sw_client_completed(struct sw_client *c, const char *handle)
{
    char line[128];
    if (!token_ok(handle) || strlen(handle) > 60)
        return fail(c, "bad handle");
    snprintf(line, sizeof line, "completed %s\r\n", handle);
    return simple(c, line, NULL);
}

int sw_client_failed(struct sw_client *c, const char *handle, const char *message, int exit_status, int permanent)
{
    char line[512];
    if (!token_ok(handle) || strlen(handle) > 60)
        return fail(c, "bad handle");
    int n = snprintf(line, sizeof line, "failed %s exit=%d%s", handle, exit_status < 0 ? 1 : exit_status,
                     permanent ? " permanent=1" : "");
    if (message && *message) {
        n += snprintf(line + n, sizeof line - (size_t)n, " :");
        for (const char *m = message; *m && n < 255 + 80; m++)
            line[n++] = (*m == '\r' || *m == '\n') ? ' ' : *m;
        line[n] = '\0';
    }
    snprintf(line + n, sizeof line - (size_t)n, "\r\n");
    char *rest;
    if (simple(c, line, &rest) < 0)
        return -1;
    return !strcmp(rest, "retry") ? 1 : 0;
}

int sw_client_declined(struct sw_client *c, const char *handle, long long run_after)
{
    char line[160];
    if (!token_ok(handle) || strlen(handle) > 60)
        return fail(c, "bad handle");
    if (run_after > 0)
        snprintf(line, sizeof line, "declined %s run_after=%lld\r\n", handle, run_after);
    else
        snprintf(line, sizeof line, "declined %s\r\n", handle);
    return simple(c, line, NULL);
}

int sw_client_lines(struct sw_client *c, const char *command, void (*fn)(const char *line, void *arg), void *arg)
{
    char line[SWC_MAX_LINE];
    if (strchr(command, '\n') || strlen(command) + 3 > sizeof line)
        return fail(c, "bad command");
    snprintf(line, sizeof line, "%s\r\n", command);
    if (request(c, line, NULL, 0, false) < 0)
        return -1;
    for (;;) {
        char *l = read_line(c);
        if (!l) {
            drop(c);
            return -1;
        }
        if (!strcmp(l, "END"))
            return 0;
        if (!strncmp(l, "ERR ", 4))
            return fail(c, "%s", l);
        if (fn)
            fn(l, arg);
    }
}
