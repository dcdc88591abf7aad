/* libmc: the memcached client library (see libmc.h for the contract).
 *
 * Each server has one lazily opened non-blocking socket and a read buffer;
 * every wait is a poll() bounded by the call's deadline. A request is
 * written whole while replies are drained into the read buffer, so a big
 * pipelined multi-get cannot deadlock against a server that stops reading
 * while its own output is full. Server selection is common/hash.c's ketama
 * continuum, rebuilt whenever a server dies or comes back. */
#include "memcached/client/libmc.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/hash.h"

#define KEY_MAX 250
#define GET_BATCH 100   /* keys per get line in a multi-get */

struct server {
    char host[256];
    int port;                 /* 0 for a unix socket */
    uint32_t weight;
    char name[300];
    int fd;
    int failures;             /* in a row */
    bool dead;
    uint64_t retry_at_ms;
    char *rbuf;               /* unparsed input: rbuf[rpos..rlen) */
    size_t rpos, rlen, rcap;
};

struct mc_client {
    struct server *servers;
    size_t n;
    struct mc_client_options o;
    struct hash_ketama ring;
    bool ring_ok;
};

/* ------------------------------------------------------------------ */
/* time, errors */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

const char *mc_client_strerror(int rc)
{
    switch (rc) {
    case MC_CLIENT_OK: return "success";
    case MC_CLIENT_NOT_FOUND: return "not found";
    case MC_CLIENT_NOT_STORED: return "not stored";
    case MC_CLIENT_EXISTS: return "exists (cas mismatch)";
    case MC_CLIENT_SERVER_ERROR: return "server error";
    case MC_CLIENT_TIMEOUT: return "timeout";
    case MC_CLIENT_CONNECTION: return "connection failure";
    case MC_CLIENT_NO_SERVER: return "no server alive";
    case MC_CLIENT_BAD_ARGUMENT: return "bad argument";
    case MC_CLIENT_NO_MEMORY: return "out of memory";
    case MC_CLIENT_PROTOCOL: return "unexpected reply";
    default: return "unknown error";
    }
}

/* ------------------------------------------------------------------ */
/* server list and continuum */

static int rebuild_ring(struct mc_client *c)
{
    struct hash_ketama_server *ks = calloc(c->n ? c->n : 1, sizeof *ks);
    if (!ks)
        return -1;
    for (size_t i = 0; i < c->n; i++) {
        ks[i].host = c->servers[i].host;
        ks[i].port = c->servers[i].port;
        ks[i].weight = c->servers[i].weight;
        ks[i].dead = c->servers[i].dead;
    }
    int rc = hash_ketama_build(&c->ring, ks, c->n);
    free(ks);
    c->ring_ok = rc == 0;
    return rc;
}

static int parse_servers(struct mc_client *c, const char *spec, char *err, size_t errlen)
{
    char *copy = strdup(spec ? spec : "");
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t cap = 0;
    char *save = NULL;
    int rc = 0;
    for (char *tok = strtok_r(copy, ", \t\n", &save); tok; tok = strtok_r(NULL, ", \t\n", &save)) {
        if (c->n == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            struct server *ns = realloc(c->servers, ncap * sizeof *ns);
            if (!ns) {
                snprintf(err, errlen, "out of memory");
                rc = -1;
                break;
            }
            c->servers = ns;
            cap = ncap;
        }
        struct server *s = &c->servers[c->n];
        memset(s, 0, sizeof *s);
        s->fd = -1;
        s->weight = 1;
        if (tok[0] == '/') {
            if (strlen(tok) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
                snprintf(err, errlen, "socket path too long: %s", tok);
                rc = -1;
                break;
            }
            snprintf(s->host, sizeof s->host, "%s", tok);
            snprintf(s->name, sizeof s->name, "%s", tok);
            c->n++;
            continue;
        }
        /* host[:port[:weight]]; [v6]:port */
        char *host = tok, *rest = NULL;
        if (tok[0] == '[') {
            char *close = strchr(tok, ']');
            if (!close) {
                snprintf(err, errlen, "bad server address: %s", tok);
                rc = -1;
                break;
            }
            *close = 0;
            host = tok + 1;
            rest = close[1] == ':' ? close + 2 : NULL;
        } else {
            char *colon = strchr(tok, ':');
            if (colon) {
                *colon = 0;
                rest = colon + 1;
            }
        }
        s->port = 11211;
        if (rest) {
            char *w = strchr(rest, ':');
            if (w)
                *w++ = 0;
            char *end;
            long p = strtol(rest, &end, 10);
            if (*end || p <= 0 || p > 65535) {
                snprintf(err, errlen, "bad port in server %s", tok);
                rc = -1;
                break;
            }
            s->port = (int)p;
            if (w) {
                long wt = strtol(w, &end, 10);
                if (*end || wt <= 0 || wt > 1000000) {
                    snprintf(err, errlen, "bad weight in server %s", tok);
                    rc = -1;
                    break;
                }
                s->weight = (uint32_t)wt;
            }
        }
        if (!*host || strlen(host) >= sizeof s->host) {
            snprintf(err, errlen, "bad host in server list");
            rc = -1;
            break;
        }
        snprintf(s->host, sizeof s->host, "%s", host);
        snprintf(s->name, sizeof s->name, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, s->port);
        c->n++;
    }
    free(copy);
    if (rc == 0 && c->n == 0) {
        snprintf(err, errlen, "no servers given");
        rc = -1;
    }
    return rc;
}

struct mc_client *mc_client_new(const char *servers, const struct mc_client_options *opts, char *err, size_t errlen)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof dummy;
    }
    struct mc_client *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (opts)
        c->o = *opts;
    if (c->o.connect_timeout_ms <= 0)
        c->o.connect_timeout_ms = 1000;
    if (c->o.io_timeout_ms <= 0)
        c->o.io_timeout_ms = 1000;
    if (c->o.failure_limit <= 0)
        c->o.failure_limit = 2;
    if (c->o.retry_interval_ms <= 0)
        c->o.retry_interval_ms = 2000;
    if (parse_servers(c, servers, err, errlen) < 0 || rebuild_ring(c) < 0) {
        if (err[0] == 0)
            snprintf(err, errlen, "cannot build the server continuum");
        mc_client_free(c);
        return NULL;
    }
    return c;
}

static void server_close(struct server *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->rpos = s->rlen = 0;
}

void mc_client_free(struct mc_client *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        server_close(&c->servers[i]);
        free(c->servers[i].rbuf);
    }
    free(c->servers);
    hash_ketama_free(&c->ring);
    free(c);
}

size_t mc_client_server_count(const struct mc_client *c) { return c->n; }
const char *mc_client_server_name(const struct mc_client *c, size_t i) { return i < c->n ? c->servers[i].name : NULL; }
bool mc_client_server_alive(const struct mc_client *c, size_t i) { return i < c->n && !c->servers[i].dead; }

/* Put back dead servers whose retry time has come. */
static void revive(struct mc_client *c)
{
    uint64_t now = 0;
    bool changed = false;
    for (size_t i = 0; i < c->n; i++) {
        struct server *s = &c->servers[i];
        if (!s->dead)
            continue;
        if (!now)
            now = now_ms();
        if (now >= s->retry_at_ms) {
            s->dead = false;
            s->failures = c->o.failure_limit - 1;   /* one more failure kills it again */
            changed = true;
        }
    }
    if (changed)
        rebuild_ring(c);
}

/* A call to s failed at the transport level. */
static void server_failed(struct mc_client *c, struct server *s)
{
    server_close(s);
    if (++s->failures >= c->o.failure_limit && !s->dead) {
        s->dead = true;
        s->retry_at_ms = now_ms() + (uint64_t)c->o.retry_interval_ms;
        rebuild_ring(c);
    }
}

static void server_ok(struct server *s) { s->failures = 0; }

static bool key_ok(const char *key, size_t nkey)
{
    if (!key || nkey == 0 || nkey > KEY_MAX)
        return false;
    for (size_t i = 0; i < nkey; i++) {
        unsigned char ch = (unsigned char)key[i];
        if (ch <= ' ' || ch == 0x7f)
            return false;
    }
    return true;
}

static struct server *pick(struct mc_client *c, const char *key, size_t nkey)
{
    revive(c);
    if (!c->ring_ok)
        return NULL;
    int i = hash_ketama_server_for(&c->ring, key, nkey);
    return i < 0 ? NULL : &c->servers[i];
}

int mc_client_server_for_key(struct mc_client *c, const char *key, size_t nkey)
{
    struct server *s = pick(c, key, nkey);
    return s ? (int)(s - c->servers) : -1;
}

/* ------------------------------------------------------------------ */
/* transport */

static int wait_fd(int fd, short events, uint64_t deadline, short *revents)
{
    for (;;) {
        uint64_t now = now_ms();
        if (now >= deadline)
            return MC_CLIENT_TIMEOUT;
        struct pollfd p = { .fd = fd, .events = events };
        int r = poll(&p, 1, (int)(deadline - now));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return MC_CLIENT_CONNECTION;
        if (r == 0)
            return MC_CLIENT_TIMEOUT;
        *revents = p.revents;
        return MC_CLIENT_OK;
    }
}

static int server_connect(struct mc_client *c, struct server *s)
{
    if (s->fd >= 0)
        return MC_CLIENT_OK;
    uint64_t deadline = now_ms() + (uint64_t)c->o.connect_timeout_ms;
    struct sockaddr_storage ss;
    socklen_t sl;
    int family;
    if (s->port == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        memset(un, 0, sizeof *un);
        un->sun_family = AF_UNIX;
        size_t pl = strnlen(s->host, sizeof un->sun_path - 1);   /* checked when parsed */
        memcpy(un->sun_path, s->host, pl);
        sl = sizeof *un;
        family = AF_UNIX;
    } else {
        /* Name lookup blocks; it happens once per (re)connect. */
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai = NULL;
        char port[16];
        snprintf(port, sizeof port, "%d", s->port);
        if (getaddrinfo(s->host, port, &hints, &ai) != 0 || !ai)
            return MC_CLIENT_CONNECTION;
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        sl = ai->ai_addrlen;
        family = ai->ai_family;
        freeaddrinfo(ai);
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return MC_CLIENT_CONNECTION;
    if (family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0) {
        if (errno != EINPROGRESS) {
            close(fd);
            return MC_CLIENT_CONNECTION;
        }
        short rev = 0;
        int rc = wait_fd(fd, POLLOUT, deadline, &rev);
        if (rc != MC_CLIENT_OK) {
            close(fd);
            return rc;
        }
        int soerr = 0;
        socklen_t el = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) < 0 || soerr != 0) {
            close(fd);
            return MC_CLIENT_CONNECTION;
        }
    }
    s->fd = fd;
    s->rpos = s->rlen = 0;
    return MC_CLIENT_OK;
}

/* Read what is there into rbuf. Returns OK (maybe 0 bytes), or an error. */
static int fill(struct server *s)
{
    if (s->rpos > 0 && s->rpos == s->rlen)
        s->rpos = s->rlen = 0;
    if (s->rcap - s->rlen < 16384) {
        if (s->rpos > 0) {
            memmove(s->rbuf, s->rbuf + s->rpos, s->rlen - s->rpos);
            s->rlen -= s->rpos;
            s->rpos = 0;
        }
        if (s->rcap - s->rlen < 16384) {
            size_t ncap = s->rcap ? s->rcap * 2 : 65536;
            char *nb = realloc(s->rbuf, ncap);
            if (!nb)
                return MC_CLIENT_NO_MEMORY;
            s->rbuf = nb;
            s->rcap = ncap;
        }
    }
    ssize_t r = recv(s->fd, s->rbuf + s->rlen, s->rcap - s->rlen, 0);
    if (r > 0) {
        s->rlen += (size_t)r;
        return MC_CLIENT_OK;
    }
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return MC_CLIENT_OK;
    return MC_CLIENT_CONNECTION;   /* EOF or error */
}

/* Write all of buf, draining replies meanwhile. */
static int send_all(struct server *s, const char *buf, size_t len, uint64_t deadline)
{
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(s->fd, buf + off, len - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return MC_CLIENT_CONNECTION;
        short rev = 0;
        int rc = wait_fd(s->fd, POLLOUT | POLLIN, deadline, &rev);
        if (rc != MC_CLIENT_OK)
            return rc;
        if (rev & POLLIN) {
            rc = fill(s);
            if (rc != MC_CLIENT_OK)
                return rc;
        } else if (rev & (POLLERR | POLLHUP | POLLNVAL)) {
            return MC_CLIENT_CONNECTION;
        }
    }
    return MC_CLIENT_OK;
}

/* Wait until s is readable (or the deadline) and append what arrived. */
static int read_more(struct server *s, uint64_t deadline)
{
    short rev = 0;
    int rc = wait_fd(s->fd, POLLIN, deadline, &rev);
    if (rc != MC_CLIENT_OK)
        return rc;
    size_t before = s->rlen;
    rc = fill(s);
    if (rc != MC_CLIENT_OK)
        return rc;
    if (s->rlen == before && (rev & (POLLERR | POLLHUP | POLLNVAL)))
        return MC_CLIENT_CONNECTION;
    return MC_CLIENT_OK;
}

/* The next line (without CRLF, NUL-terminated in place). */
static int read_line(struct server *s, uint64_t deadline, char **line, size_t *len)
{
    for (;;) {
        char *start = s->rbuf ? s->rbuf + s->rpos : NULL;
        char *nl = s->rlen > s->rpos ? memchr(start, '\n', s->rlen - s->rpos) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - start);
            s->rpos += n + 1;
            if (n > 0 && start[n - 1] == '\r')
                n--;
            start[n] = 0;
            *line = start;
            *len = n;
            return MC_CLIENT_OK;
        }
        if (s->rlen - s->rpos > (1u << 20))
            return MC_CLIENT_PROTOCOL;   /* no line is that long */
        int rc = read_more(s, deadline);
        if (rc != MC_CLIENT_OK)
            return rc;
    }
}

/* n bytes of value plus its CRLF; *data points into rbuf (valid until the
 * next read on s). */
static int read_data(struct server *s, size_t n, uint64_t deadline, char **data)
{
    while (s->rlen - s->rpos < n + 2) {
        /* Make room in one go for a big value. */
        size_t need = n + 2 - (s->rlen - s->rpos);
        if (s->rcap - s->rlen < need + 16384) {
            memmove(s->rbuf, s->rbuf + s->rpos, s->rlen - s->rpos);
            s->rlen -= s->rpos;
            s->rpos = 0;
            if (s->rcap - s->rlen < need + 16384) {
                size_t ncap = s->rlen + need + 65536;
                char *nb = realloc(s->rbuf, ncap);
                if (!nb)
                    return MC_CLIENT_NO_MEMORY;
                s->rbuf = nb;
                s->rcap = ncap;
            }
        }
        int rc = read_more(s, deadline);
        if (rc != MC_CLIENT_OK)
            return rc;
    }
    char *d = s->rbuf + s->rpos;
    if (d[n] != '\r' || d[n + 1] != '\n')
        return MC_CLIENT_PROTOCOL;
    d[n] = 0;
    s->rpos += n + 2;
    *data = d;
    return MC_CLIENT_OK;
}

static bool is_transport_error(int rc)
{
    return rc == MC_CLIENT_TIMEOUT || rc == MC_CLIENT_CONNECTION || rc == MC_CLIENT_PROTOCOL;
}

/* After a call on s: a transport error drops the connection (its stream
 * position is unknown) and counts towards marking the server dead. */
static int finish(struct mc_client *c, struct server *s, int rc)
{
    if (is_transport_error(rc))
        server_failed(c, s);
    else
        server_ok(s);
    return rc;
}

static int status_of(const char *line)
{
    if (!strncmp(line, "SERVER_ERROR", 12) || !strncmp(line, "CLIENT_ERROR", 12) || !strcmp(line, "ERROR"))
        return MC_CLIENT_SERVER_ERROR;
    return MC_CLIENT_PROTOCOL;
}

/* ------------------------------------------------------------------ */
/* a growable request buffer */

struct req {
    char *p;
    size_t len, cap;
    bool oom;
};

static void req_add(struct req *r, const void *d, size_t n)
{
    if (r->oom)
        return;
    if (r->len + n > r->cap) {
        size_t ncap = r->cap ? r->cap : 512;
        while (ncap < r->len + n)
            ncap *= 2;
        char *np = realloc(r->p, ncap);
        if (!np) {
            r->oom = true;
            return;
        }
        r->p = np;
        r->cap = ncap;
    }
    memcpy(r->p + r->len, d, n);
    r->len += n;
}

static void req_printf(struct req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void req_printf(struct req *r, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) {
        r->oom = true;
        return;
    }
    req_add(r, buf, (size_t)n);
}

/* ------------------------------------------------------------------ */
/* single-key calls */

/* Connect (if needed) and send a request; on failure the server is charged. */
static int start_call(struct mc_client *c, struct server *s, const struct req *r, uint64_t deadline)
{
    if (r->oom)
        return MC_CLIENT_NO_MEMORY;
    int rc = server_connect(c, s);
    if (rc == MC_CLIENT_OK)
        rc = send_all(s, r->p, r->len, deadline);
    return rc;
}

static uint64_t deadline_of(struct mc_client *c) { return now_ms() + (uint64_t)c->o.io_timeout_ms; }

/* Parse "VALUE <key> <flags> <bytes> [<cas>]". */
static bool parse_value_line(char *line, char **key, size_t *nkey, uint32_t *flags, size_t *bytes, uint64_t *cas)
{
    char *save = NULL;
    char *t0 = strtok_r(line, " ", &save), *k = strtok_r(NULL, " ", &save), *f = strtok_r(NULL, " ", &save),
         *b = strtok_r(NULL, " ", &save), *cs = strtok_r(NULL, " ", &save);
    if (!t0 || strcmp(t0, "VALUE") || !k || !f || !b)
        return false;
    char *end;
    unsigned long long fv = strtoull(f, &end, 10);
    if (*end || fv > UINT32_MAX)
        return false;
    unsigned long long bv = strtoull(b, &end, 10);
    if (*end || bv > (1ull << 31))
        return false;
    unsigned long long cv = 0;
    if (cs) {
        cv = strtoull(cs, &end, 10);
        if (*end)
            return false;
    }
    *key = k;
    *nkey = strlen(k);
    *flags = (uint32_t)fv;
    *bytes = (size_t)bv;
    *cas = cv;
    return true;
}

/* Meta reply "VA <n> <flags>*" or "HD <flags>*": pick f, c, k tokens. */
static bool parse_meta_flags(char *rest, uint32_t *flags, uint64_t *cas, char **key, size_t *nkey)
{
    char *save = NULL;
    for (char *t = strtok_r(rest, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        char *end;
        switch (t[0]) {
        case 'f': {
            unsigned long long v = strtoull(t + 1, &end, 10);
            if (*end || v > UINT32_MAX)
                return false;
            *flags = (uint32_t)v;
            break;
        }
        case 'c':
            *cas = strtoull(t + 1, &end, 10);
            if (*end)
                return false;
            break;
        case 'k':
            if (key) {
                *key = t + 1;
                *nkey = strlen(t + 1);
            }
            break;
        default:
            break;
        }
    }
    return true;
}

void mc_client_value_free(struct mc_client_value *v)
{
    if (v) {
        free(v->data);
        v->data = NULL;
        v->len = 0;
    }
}

struct get_one {
    const char *key;
    size_t nkey;
    struct mc_client_value *out;
    bool found;
    bool oom;
};

static void get_one_cb(const char *key, size_t nkey, const char *data, size_t len, uint32_t flags, uint64_t cas,
                       void *arg)
{
    struct get_one *g = arg;
    if (nkey != g->nkey || memcmp(key, g->key, nkey) != 0 || g->found)
        return;
    g->out->data = malloc(len + 1);
    if (!g->out->data) {
        g->oom = true;
        return;
    }
    memcpy(g->out->data, data, len);
    g->out->data[len] = 0;
    g->out->len = len;
    g->out->flags = flags;
    g->out->cas = cas;
    g->found = true;
}

int mc_client_get(struct mc_client *c, const char *key, size_t nkey, struct mc_client_value *out)
{
    memset(out, 0, sizeof *out);
    struct get_one g = { key, nkey, out, false, false };
    const char *keys[1] = { key };
    size_t nkeys[1] = { nkey };
    int rc = mc_client_get_multi(c, keys, nkeys, 1, get_one_cb, &g);
    if (rc != MC_CLIENT_OK)
        return rc;
    if (g.oom)
        return MC_CLIENT_NO_MEMORY;
    return g.found ? MC_CLIENT_OK : MC_CLIENT_NOT_FOUND;
}

/* Read one server's multi-get replies up to END (text) or MN (meta). */
static int read_multi(struct server *s, bool meta, uint64_t deadline, mc_client_value_fn fn, void *arg)
{
    for (;;) {
        char *line;
        size_t len;
        int rc = read_line(s, deadline, &line, &len);
        if (rc != MC_CLIENT_OK)
            return rc;
        if (!meta) {
            if (!strcmp(line, "END"))
                return MC_CLIENT_OK;
            char *k;
            size_t nk, bytes;
            uint32_t flags;
            uint64_t cas;
            if (!parse_value_line(line, &k, &nk, &flags, &bytes, &cas))
                return status_of(line) == MC_CLIENT_SERVER_ERROR ? MC_CLIENT_SERVER_ERROR : MC_CLIENT_PROTOCOL;
            char kb[KEY_MAX + 1];
            if (nk > KEY_MAX)
                return MC_CLIENT_PROTOCOL;
            memcpy(kb, k, nk);   /* rbuf may move while the value is read */
            char *data;
            rc = read_data(s, bytes, deadline, &data);
            if (rc != MC_CLIENT_OK)
                return rc;
            fn(kb, nk, data, bytes, flags, cas, arg);
            continue;
        }
        if (!strcmp(line, "MN"))
            return MC_CLIENT_OK;
        if (len >= 3 && !strncmp(line, "VA ", 3)) {
            char *end;
            unsigned long long bytes = strtoull(line + 3, &end, 10);
            if (end == line + 3 || (*end && *end != ' ') || bytes > (1ull << 31))
                return MC_CLIENT_PROTOCOL;
            uint32_t flags = 0;
            uint64_t cas = 0;
            char *k = NULL;
            size_t nk = 0;
            if (!parse_meta_flags(end, &flags, &cas, &k, &nk) || !k || nk > KEY_MAX)
                return MC_CLIENT_PROTOCOL;
            char kb[KEY_MAX + 1];
            memcpy(kb, k, nk);
            char *data;
            rc = read_data(s, (size_t)bytes, deadline, &data);
            if (rc != MC_CLIENT_OK)
                return rc;
            fn(kb, nk, data, (size_t)bytes, flags, cas, arg);
            continue;
        }
        if (!strcmp(line, "EN"))
            continue;
        return status_of(line) == MC_CLIENT_SERVER_ERROR ? MC_CLIENT_SERVER_ERROR : MC_CLIENT_PROTOCOL;
    }
}

int mc_client_get_multi(struct mc_client *c, const char *const *keys, const size_t *nkeys, size_t n,
                        mc_client_value_fn fn, void *arg)
{
    for (size_t i = 0; i < n; i++)
        if (!key_ok(keys[i], nkeys[i]))
            return MC_CLIENT_BAD_ARGUMENT;
    if (n == 0)
        return MC_CLIENT_OK;
    bool meta = c->o.protocol == MC_CLIENT_META;
    struct req *reqs = calloc(c->n, sizeof *reqs);
    size_t *count = calloc(c->n, sizeof *count);
    int *state = calloc(c->n, sizeof *state);   /* 0 unused, 1 sent, rc+2 failed */
    int result = MC_CLIENT_OK;
    if (!reqs || !count || !state) {
        result = MC_CLIENT_NO_MEMORY;
        goto out;
    }
    /* Group the keys by server into pipelined requests. */
    bool any = false, unmapped = false;
    for (size_t i = 0; i < n; i++) {
        struct server *s = pick(c, keys[i], nkeys[i]);
        if (!s) {
            unmapped = true;
            continue;
        }
        size_t si = (size_t)(s - c->servers);
        struct req *r = &reqs[si];
        if (meta) {
            req_add(r, "mg ", 3);
            req_add(r, keys[i], nkeys[i]);
            req_add(r, " v f c k q\r\n", 12);
        } else {
            if (count[si] % GET_BATCH == 0)
                req_add(r, count[si] ? "\r\ngets" : "gets", count[si] ? 6 : 4);
            req_add(r, " ", 1);
            req_add(r, keys[i], nkeys[i]);
        }
        count[si]++;
        any = true;
    }
    if (unmapped)
        result = MC_CLIENT_NO_SERVER;
    if (!any)
        goto out;
    uint64_t deadline = deadline_of(c);
    /* Send everything first, so the servers work in parallel. */
    for (size_t si = 0; si < c->n; si++) {
        if (!count[si])
            continue;
        struct req *r = &reqs[si];
        if (meta)
            req_add(r, "mn\r\n", 4);
        else
            req_add(r, "\r\n", 2);
        int rc = start_call(c, &c->servers[si], r, deadline);
        state[si] = rc == MC_CLIENT_OK ? 1 : rc + 2;
    }
    /* Then read each server's replies. The loop may mark servers dead
     * (rebuilding the ring), which is fine: the grouping is done. */
    for (size_t si = 0; si < c->n; si++) {
        if (!state[si])
            continue;
        struct server *s = &c->servers[si];
        int rc = state[si] == 1 ? MC_CLIENT_OK : state[si] - 2;
        if (rc == MC_CLIENT_OK) {
            size_t batches = meta ? 1 : (count[si] + GET_BATCH - 1) / GET_BATCH;
            for (size_t b = 0; b < batches && rc == MC_CLIENT_OK; b++)
                rc = read_multi(s, meta, deadline, fn, arg);
        }
        finish(c, s, rc);
        if (rc == MC_CLIENT_SERVER_ERROR)
            server_close(s);   /* replies of later batches may still be coming */
        if (rc != MC_CLIENT_OK && result == MC_CLIENT_OK)
            result = rc;
    }
out:
    if (reqs)
        for (size_t si = 0; si < c->n; si++)
            free(reqs[si].p);
    free(reqs);
    free(count);
    free(state);
    return result;
}

enum store_op { ST_SET, ST_ADD, ST_REPLACE, ST_APPEND, ST_PREPEND, ST_CAS };

static int store(struct mc_client *c, enum store_op op, const char *key, size_t nkey, const void *data, size_t len,
                 uint32_t flags, int32_t exptime, uint64_t cas)
{
    static const char *const text_cmd[] = { "set", "add", "replace", "append", "prepend", "cas" };
    static const char meta_mode[] = { 'S', 'E', 'R', 'A', 'P', 'S' };
    if (!key_ok(key, nkey) || (len && !data))
        return MC_CLIENT_BAD_ARGUMENT;
    struct server *s = pick(c, key, nkey);
    if (!s)
        return MC_CLIENT_NO_SERVER;
    bool meta = c->o.protocol == MC_CLIENT_META;
    struct req r = { 0 };
    if (meta) {
        req_add(&r, "ms ", 3);
        req_add(&r, key, nkey);
        req_printf(&r, " %zu F%" PRIu32 " T%" PRId32 " M%c", len, flags, exptime, meta_mode[op]);
        if (op == ST_CAS)
            req_printf(&r, " C%" PRIu64, cas);
        req_add(&r, "\r\n", 2);
    } else {
        req_printf(&r, "%s ", text_cmd[op]);
        req_add(&r, key, nkey);
        req_printf(&r, " %" PRIu32 " %" PRId32 " %zu", flags, exptime, len);
        if (op == ST_CAS)
            req_printf(&r, " %" PRIu64, cas);
        req_add(&r, "\r\n", 2);
    }
    req_add(&r, data, len);
    req_add(&r, "\r\n", 2);
    uint64_t deadline = deadline_of(c);
    int rc = start_call(c, s, &r, deadline);
    free(r.p);
    if (rc == MC_CLIENT_OK) {
        char *line;
        size_t ll;
        rc = read_line(s, deadline, &line, &ll);
        if (rc == MC_CLIENT_OK) {
            if (!strcmp(line, "STORED") || !strncmp(line, "HD", 2))
                rc = MC_CLIENT_OK;
            else if (!strcmp(line, "NOT_STORED") || !strncmp(line, "NS", 2))
                rc = MC_CLIENT_NOT_STORED;
            else if (!strcmp(line, "EXISTS") || !strncmp(line, "EX", 2))
                rc = MC_CLIENT_EXISTS;
            else if (!strcmp(line, "NOT_FOUND") || !strncmp(line, "NF", 2))
                rc = MC_CLIENT_NOT_FOUND;
            else
                rc = status_of(line);
        }
    }
    return finish(c, s, rc);
}

int mc_client_set(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len, uint32_t flags,
                  int32_t exptime)
{
    return store(c, ST_SET, key, nkey, data, len, flags, exptime, 0);
}
int mc_client_add(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len, uint32_t flags,
                  int32_t exptime)
{
    return store(c, ST_ADD, key, nkey, data, len, flags, exptime, 0);
}
int mc_client_replace(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len,
                      uint32_t flags, int32_t exptime)
{
    return store(c, ST_REPLACE, key, nkey, data, len, flags, exptime, 0);
}
int mc_client_append(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len)
{
    return store(c, ST_APPEND, key, nkey, data, len, 0, 0, 0);
}
int mc_client_prepend(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len)
{
    return store(c, ST_PREPEND, key, nkey, data, len, 0, 0, 0);
}
int mc_client_cas(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len, uint32_t flags,
                  int32_t exptime, uint64_t cas)
{
    return store(c, ST_CAS, key, nkey, data, len, flags, exptime, cas);
}

/* A one-line request with a one-line reply on the key's server. */
static int simple(struct mc_client *c, const char *key, size_t nkey, struct req *r, char *reply, size_t replylen)
{
    struct server *s = pick(c, key, nkey);
    if (!s) {
        free(r->p);
        return MC_CLIENT_NO_SERVER;
    }
    uint64_t deadline = deadline_of(c);
    int rc = start_call(c, s, r, deadline);
    free(r->p);
    if (rc == MC_CLIENT_OK) {
        char *line;
        size_t ll;
        rc = read_line(s, deadline, &line, &ll);
        if (rc == MC_CLIENT_OK)
            snprintf(reply, replylen, "%s", line);
        /* meta ma with v: the value follows on its own line */
        if (rc == MC_CLIENT_OK && !strncmp(reply, "VA ", 3)) {
            char *end;
            unsigned long long n = strtoull(reply + 3, &end, 10);
            char *data;
            if (n > 20)
                rc = MC_CLIENT_PROTOCOL;
            else if ((rc = read_data(s, (size_t)n, deadline, &data)) == MC_CLIENT_OK)
                snprintf(reply, replylen, "VA %s", data);
        }
    }
    return finish(c, s, rc);
}

int mc_client_delete(struct mc_client *c, const char *key, size_t nkey)
{
    if (!key_ok(key, nkey))
        return MC_CLIENT_BAD_ARGUMENT;
    struct req r = { 0 };
    req_add(&r, c->o.protocol == MC_CLIENT_META ? "md " : "delete ", c->o.protocol == MC_CLIENT_META ? 3 : 7);
    req_add(&r, key, nkey);
    req_add(&r, "\r\n", 2);
    char reply[256];
    int rc = simple(c, key, nkey, &r, reply, sizeof reply);
    if (rc != MC_CLIENT_OK)
        return rc;
    if (!strcmp(reply, "DELETED") || !strncmp(reply, "HD", 2))
        return MC_CLIENT_OK;
    if (!strcmp(reply, "NOT_FOUND") || !strncmp(reply, "NF", 2))
        return MC_CLIENT_NOT_FOUND;
    return status_of(reply);
}

static int arith(struct mc_client *c, bool incr, const char *key, size_t nkey, uint64_t delta, uint64_t *value)
{
    if (!key_ok(key, nkey))
        return MC_CLIENT_BAD_ARGUMENT;
    bool meta = c->o.protocol == MC_CLIENT_META;
    struct req r = { 0 };
    if (meta) {
        req_add(&r, "ma ", 3);
        req_add(&r, key, nkey);
        req_printf(&r, " D%" PRIu64 " M%c v\r\n", delta, incr ? 'I' : 'D');
    } else {
        req_add(&r, incr ? "incr " : "decr ", 5);
        req_add(&r, key, nkey);
        req_printf(&r, " %" PRIu64 "\r\n", delta);
    }
    char reply[256];
    int rc = simple(c, key, nkey, &r, reply, sizeof reply);
    if (rc != MC_CLIENT_OK)
        return rc;
    if (!strcmp(reply, "NOT_FOUND") || !strncmp(reply, "NF", 2))
        return MC_CLIENT_NOT_FOUND;
    const char *num = meta ? (strncmp(reply, "VA ", 3) ? NULL : reply + 3) : reply;
    if (!num || *num < '0' || *num > '9')
        return status_of(reply);
    char *end;
    unsigned long long v = strtoull(num, &end, 10);
    if (*end)
        return MC_CLIENT_PROTOCOL;
    if (value)
        *value = v;
    return MC_CLIENT_OK;
}

int mc_client_incr(struct mc_client *c, const char *key, size_t nkey, uint64_t delta, uint64_t *value)
{
    return arith(c, true, key, nkey, delta, value);
}
int mc_client_decr(struct mc_client *c, const char *key, size_t nkey, uint64_t delta, uint64_t *value)
{
    return arith(c, false, key, nkey, delta, value);
}

int mc_client_touch(struct mc_client *c, const char *key, size_t nkey, int32_t exptime)
{
    if (!key_ok(key, nkey))
        return MC_CLIENT_BAD_ARGUMENT;
    bool meta = c->o.protocol == MC_CLIENT_META;
    struct req r = { 0 };
    req_add(&r, meta ? "mg " : "touch ", meta ? 3 : 6);
    req_add(&r, key, nkey);
    req_printf(&r, meta ? " T%" PRId32 "\r\n" : " %" PRId32 "\r\n", exptime);
    char reply[256];
    int rc = simple(c, key, nkey, &r, reply, sizeof reply);
    if (rc != MC_CLIENT_OK)
        return rc;
    if (!strcmp(reply, "TOUCHED") || !strncmp(reply, "HD", 2))
        return MC_CLIENT_OK;
    if (!strcmp(reply, "NOT_FOUND") || !strcmp(reply, "EN"))
        return MC_CLIENT_NOT_FOUND;
    return status_of(reply);
}

/* ------------------------------------------------------------------ */
/* per-server calls */

static int server_call(struct mc_client *c, size_t i, const char *cmd, struct server **sp, uint64_t *deadline)
{
    if (i >= c->n)
        return MC_CLIENT_BAD_ARGUMENT;
    revive(c);
    struct server *s = &c->servers[i];
    if (s->dead)
        return MC_CLIENT_NO_SERVER;
    *deadline = deadline_of(c);
    struct req r = { 0 };
    req_add(&r, cmd, strlen(cmd));
    int rc = start_call(c, s, &r, *deadline);
    free(r.p);
    *sp = s;
    return rc;
}

int mc_client_flush_all(struct mc_client *c, int32_t delay)
{
    int result = MC_CLIENT_OK;
    char cmd[64];
    snprintf(cmd, sizeof cmd, "flush_all %" PRId32 "\r\n", delay);
    for (size_t i = 0; i < c->n; i++) {
        struct server *s = NULL;
        uint64_t deadline;
        int rc = server_call(c, i, cmd, &s, &deadline);
        if (rc == MC_CLIENT_NO_SERVER)
            continue;
        if (rc == MC_CLIENT_OK) {
            char *line;
            size_t ll;
            rc = read_line(s, deadline, &line, &ll);
            if (rc == MC_CLIENT_OK && strcmp(line, "OK"))
                rc = status_of(line);
        }
        if (s)
            finish(c, s, rc);
        if (rc != MC_CLIENT_OK && result == MC_CLIENT_OK)
            result = rc;
    }
    return result;
}

int mc_client_stats(struct mc_client *c, size_t i, const char *group, mc_client_stat_fn fn, void *arg)
{
    char cmd[128];
    if (group && *group) {
        if (strlen(group) > 64 || strpbrk(group, "\r\n"))
            return MC_CLIENT_BAD_ARGUMENT;
        snprintf(cmd, sizeof cmd, "stats %s\r\n", group);
    } else {
        snprintf(cmd, sizeof cmd, "stats\r\n");
    }
    struct server *s = NULL;
    uint64_t deadline;
    int rc = server_call(c, i, cmd, &s, &deadline);
    while (rc == MC_CLIENT_OK) {
        char *line;
        size_t ll;
        rc = read_line(s, deadline, &line, &ll);
        if (rc != MC_CLIENT_OK)
            break;
        if (!strcmp(line, "END"))
            break;
        if (strncmp(line, "STAT ", 5)) {
            rc = status_of(line);
            break;
        }
        char *name = line + 5, *sp = strchr(name, ' ');
        if (sp)
            *sp = 0;
        if (fn)
            fn(name, sp ? sp + 1 : "", arg);
    }
    if (s)
        finish(c, s, rc);
    return rc;
}

int mc_client_version(struct mc_client *c, size_t i, char *buf, size_t len)
{
    struct server *s = NULL;
    uint64_t deadline;
    int rc = server_call(c, i, "version\r\n", &s, &deadline);
    if (rc == MC_CLIENT_OK) {
        char *line;
        size_t ll;
        rc = read_line(s, deadline, &line, &ll);
        if (rc == MC_CLIENT_OK) {
            if (!strncmp(line, "VERSION ", 8))
                snprintf(buf, len, "%s", line + 8);
            else
                rc = status_of(line);
        }
    }
    if (s)
        finish(c, s, rc);
    return rc;
}
