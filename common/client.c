/* client: the blocking client-library kit; see client.h.
 *
 * Owns server-list parsing, connecting, the dead-server policy and the
 * buffered, deadline-bounded socket I/O. Knows no protocol. */
#include "common/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/num.h"

#define READ_CHUNK 16384

uint64_t client_now_ms(void) { return clock_now_ms(); }

uint64_t client_deadline(int timeout_ms) { return timeout_ms > 0 ? clock_now_ms() + (uint64_t)timeout_ms : 0; }

const char *client_strerror(int status)
{
    switch (status) {
    case CLIENT_OK: return "success";
    case CLIENT_TIMEOUT: return "timeout";
    case CLIENT_CLOSED: return "connection failure";
    case CLIENT_NO_MEMORY: return "out of memory";
    case CLIENT_TOO_LONG: return "reply line too long";
    case CLIENT_DEAD: return "server marked dead";
    default: return "unknown error";
    }
}

/* ---- server lists ---- */

static int parse_one(char *tok, int default_port, bool allow_weight, struct client_server *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->weight = 1;
    if (tok[0] == '/') {
        if (strlen(tok) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            snprintf(err, errlen, "socket path too long: %s", tok);
            return -1;
        }
        snprintf(s->host, sizeof s->host, "%s", tok);
        snprintf(s->name, sizeof s->name, "%s", tok);
        return 0;
    }
    char *host = tok, *rest = NULL;
    if (tok[0] == '[') {
        char *close = strchr(tok, ']');
        if (!close || (close[1] && close[1] != ':')) {
            snprintf(err, errlen, "bad server address: %s", tok);
            return -1;
        }
        *close = '\0';
        host = tok + 1;
        rest = close[1] == ':' ? close + 2 : NULL;
    } else {
        char *colon = strchr(tok, ':');
        struct in6_addr a6;
        if (colon && inet_pton(AF_INET6, tok, &a6) == 1)
            colon = NULL; /* a bare IPv6 address: no port */
        if (colon) {
            *colon = '\0';
            rest = colon + 1;
        }
    }
    s->port = default_port;
    if (rest) {
        char *w = strchr(rest, ':');
        if (w) {
            if (!allow_weight) {
                snprintf(err, errlen, "bad port in server %s", host);
                return -1;
            }
            *w++ = '\0';
        }
        if (parse_int_str(rest, 1, 65535, &s->port) != NUM_OK) {
            snprintf(err, errlen, "bad port in server %s", host);
            return -1;
        }
        if (w) {
            int wt;
            if (parse_int_str(w, 1, 1000000, &wt) != NUM_OK) {
                snprintf(err, errlen, "bad weight in server %s", host);
                return -1;
            }
            s->weight = (uint32_t)wt;
        }
    }
    if (!*host || strlen(host) >= sizeof s->host) {
        snprintf(err, errlen, "bad host in server list");
        return -1;
    }
    snprintf(s->host, sizeof s->host, "%s", host);
    snprintf(s->name, sizeof s->name, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, s->port);
    return 0;
}

int client_parse_servers(const char *list, int default_port, bool allow_weight, struct client_server **out, char *err,
                         size_t errlen)
{
    *out = NULL;
    char *copy = strdup(list ? list : "");
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct client_server *v = NULL;
    int n = 0, cap = 0, rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ", \t\r\n", &save); tok; tok = strtok_r(NULL, ", \t\r\n", &save)) {
        if (n == cap) {
            int ncap = cap ? cap * 2 : 4;
            struct client_server *nv = n < 65536 ? realloc(v, (size_t)ncap * sizeof *nv) : NULL;
            if (!nv) {
                snprintf(err, errlen, n < 65536 ? "out of memory" : "too many servers");
                rc = -1;
                break;
            }
            v = nv;
            cap = ncap;
        }
        if (parse_one(tok, default_port, allow_weight, &v[n], err, errlen) < 0) {
            rc = -1;
            break;
        }
        n++;
    }
    free(copy);
    if (rc == 0 && n == 0) {
        snprintf(err, errlen, "no servers given");
        rc = -1;
    }
    if (rc < 0) {
        free(v);
        return -1;
    }
    *out = v;
    return n;
}

void client_servers_free(struct client_server *servers, int n)
{
    if (!servers)
        return;
    for (int i = 0; i < n; i++) {
        client_close(&servers[i]);
        free(servers[i].in);
    }
    free(servers);
}

/* ---- connecting ---- */

int client_wait(int fd, short events, uint64_t deadline, short *revents)
{
    for (;;) {
        int wait = -1;
        if (deadline) {
            uint64_t now = clock_now_ms();
            if (now >= deadline)
                return CLIENT_TIMEOUT;
            wait = deadline - now > 1000000000 ? 1000000000 : (int)(deadline - now);
        }
        struct pollfd p = { .fd = fd, .events = events };
        int r = poll(&p, 1, wait);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return CLIENT_CLOSED;
        if (r == 0)
            return CLIENT_TIMEOUT;
        if (revents)
            *revents = p.revents;
        return CLIENT_OK;
    }
}

/* One address: non-blocking connect bounded by deadline. fd or a status. */
static int connect_addr(const struct sockaddr *sa, socklen_t len, uint64_t deadline, int *err_no)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err_no = errno;
        return CLIENT_CLOSED;
    }
    if (connect(fd, sa, len) < 0) {
        if (errno != EINPROGRESS) {
            *err_no = errno;
            close(fd);
            return CLIENT_CLOSED;
        }
        short rev = 0;
        int rc = client_wait(fd, POLLOUT, deadline, &rev);
        if (rc != CLIENT_OK) {
            *err_no = rc == CLIENT_TIMEOUT ? ETIMEDOUT : errno;
            close(fd);
            return rc;
        }
        int soerr = 0;
        socklen_t el = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) < 0 || soerr != 0) {
            *err_no = soerr ? soerr : errno;
            close(fd);
            return CLIENT_CLOSED;
        }
    }
    if (sa->sa_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

int client_connect(struct client_server *s, int timeout_ms)
{
    if (s->fd >= 0)
        return CLIENT_OK;
    if (s->dead && clock_now_ms() < s->retry_at_ms) {
        snprintf(s->error, sizeof s->error, "%s: marked dead", s->name);
        return CLIENT_DEAD;
    }
    uint64_t deadline = client_deadline(timeout_ms > 0 ? timeout_ms : 1000);
    int err_no = 0, rc = CLIENT_CLOSED;
    s->in_pos = s->in_len = 0;
    if (s->port == 0) {
        struct sockaddr_un un = { .sun_family = AF_UNIX };
        size_t pl = strnlen(s->host, sizeof un.sun_path - 1); /* checked when parsed */
        memcpy(un.sun_path, s->host, pl);
        rc = connect_addr((struct sockaddr *)&un, sizeof un, deadline, &err_no);
    } else {
        /* A blocking lookup, once per (re)connect. */
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai = NULL;
        char port[16];
        snprintf(port, sizeof port, "%d", s->port);
        int g = getaddrinfo(s->host, port, &hints, &ai);
        if (g != 0 || !ai) {
            snprintf(s->error, sizeof s->error, "%s: %s", s->name, gai_strerror(g));
            return CLIENT_CLOSED;
        }
        /* every address in turn until one answers, within the one timeout */
        for (struct addrinfo *a = ai; a; a = a->ai_next) {
            rc = connect_addr(a->ai_addr, a->ai_addrlen, deadline, &err_no);
            if (rc >= 0 || rc == CLIENT_TIMEOUT)
                break;
        }
        freeaddrinfo(ai);
    }
    if (rc < 0) {
        snprintf(s->error, sizeof s->error, "%s: %s", s->name, err_no ? strerror(err_no) : client_strerror(rc));
        return rc;
    }
    s->fd = rc;
    return CLIENT_OK;
}

void client_close(struct client_server *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->in_pos = s->in_len = 0;
}

/* ---- dead servers ---- */

bool client_failed(struct client_server *s, int failure_limit, int retry_ms)
{
    client_close(s);
    if (++s->failures >= (failure_limit > 0 ? failure_limit : 1) && !s->dead) {
        s->dead = true;
        s->retry_at_ms = clock_now_ms() + (uint64_t)(retry_ms > 0 ? retry_ms : 0);
        return true;
    }
    if (s->dead) /* a revived server that failed again */
        s->retry_at_ms = clock_now_ms() + (uint64_t)(retry_ms > 0 ? retry_ms : 0);
    return false;
}

void client_ok(struct client_server *s)
{
    s->failures = 0;
    s->dead = false;
}

bool client_revive(struct client_server *s, int failure_limit)
{
    if (!s->dead || clock_now_ms() < s->retry_at_ms)
        return false;
    s->dead = false;
    s->failures = (failure_limit > 0 ? failure_limit : 1) - 1; /* one more failure kills it again */
    return true;
}

/* ---- I/O ---- */

/* Room for at least want more bytes at the end of the buffer. */
static int reserve(struct client_server *s, size_t want)
{
    if (s->in_pos > 0 && s->in_pos == s->in_len)
        s->in_pos = s->in_len = 0;
    if (s->in_cap - s->in_len >= want)
        return CLIENT_OK;
    if (s->in_pos > 0) {
        memmove(s->in, s->in + s->in_pos, s->in_len - s->in_pos);
        s->in_len -= s->in_pos;
        s->in_pos = 0;
        if (s->in_cap - s->in_len >= want)
            return CLIENT_OK;
    }
    size_t cap = s->in_cap ? s->in_cap : 65536;
    while (cap - s->in_len < want) {
        if (cap > SIZE_MAX / 2)
            return CLIENT_NO_MEMORY;
        cap *= 2;
    }
    char *n = realloc(s->in, cap);
    if (!n)
        return CLIENT_NO_MEMORY;
    s->in = n;
    s->in_cap = cap;
    return CLIENT_OK;
}

int client_fill(struct client_server *s)
{
    if (s->fd < 0)
        return CLIENT_CLOSED;
    int rc = reserve(s, READ_CHUNK);
    if (rc != CLIENT_OK)
        return rc;
    ssize_t r;
    do
        r = recv(s->fd, s->in + s->in_len, s->in_cap - s->in_len - 1, 0); /* room for a NUL */
    while (r < 0 && errno == EINTR);
    if (r > 0) {
        s->in_len += (size_t)r;
        return CLIENT_OK;
    }
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return CLIENT_OK;
    snprintf(s->error, sizeof s->error, "%s: %s", s->name, r == 0 ? "connection closed" : strerror(errno));
    return CLIENT_CLOSED;
}

int client_send_all(struct client_server *s, const void *buf, size_t len, uint64_t deadline)
{
    const char *p = buf;
    size_t off = 0;
    if (s->fd < 0)
        return CLIENT_CLOSED;
    while (off < len) {
        ssize_t w = send(s->fd, p + off, len - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            snprintf(s->error, sizeof s->error, "%s: send: %s", s->name, strerror(errno));
            return CLIENT_CLOSED;
        }
        short rev = 0;
        int rc = client_wait(s->fd, POLLOUT | POLLIN, deadline, &rev);
        if (rc != CLIENT_OK) {
            if (rc == CLIENT_TIMEOUT)
                snprintf(s->error, sizeof s->error, "%s: send timed out", s->name);
            return rc;
        }
        if (rev & POLLIN) {
            rc = client_fill(s); /* replies to what went out already */
            if (rc != CLIENT_OK)
                return rc;
        } else if (rev & (POLLERR | POLLHUP | POLLNVAL)) {
            snprintf(s->error, sizeof s->error, "%s: connection lost while sending", s->name);
            return CLIENT_CLOSED;
        }
    }
    return CLIENT_OK;
}

int client_read_more(struct client_server *s, uint64_t deadline)
{
    if (s->fd < 0)
        return CLIENT_CLOSED;
    short rev = 0;
    int rc = client_wait(s->fd, POLLIN, deadline, &rev);
    if (rc != CLIENT_OK) {
        if (rc == CLIENT_TIMEOUT)
            snprintf(s->error, sizeof s->error, "%s: read timed out", s->name);
        return rc;
    }
    size_t before = s->in_len - s->in_pos;
    rc = client_fill(s);
    if (rc != CLIENT_OK)
        return rc;
    if (s->in_len - s->in_pos == before && (rev & (POLLERR | POLLHUP | POLLNVAL))) {
        snprintf(s->error, sizeof s->error, "%s: connection lost", s->name);
        return CLIENT_CLOSED;
    }
    return CLIENT_OK;
}

int client_read_line(struct client_server *s, uint64_t deadline, size_t max, char **line, size_t *len)
{
    size_t scanned = 0;
    for (;;) {
        size_t have = s->in_len - s->in_pos;
        char *start = s->in ? s->in + s->in_pos : NULL;
        char *nl = have > scanned ? memchr(start + scanned, '\n', have - scanned) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - start);
            s->in_pos += n + 1;
            if (n > 0 && start[n - 1] == '\r')
                n--;
            if (n > max) {
                snprintf(s->error, sizeof s->error, "%s: reply line longer than %zu bytes", s->name, max);
                return CLIENT_TOO_LONG;
            }
            start[n] = '\0'; /* over the CR or LF, both consumed */
            *line = start;
            *len = n;
            return CLIENT_OK;
        }
        scanned = have;
        if (have > max + 1) {
            snprintf(s->error, sizeof s->error, "%s: reply line longer than %zu bytes", s->name, max);
            return CLIENT_TOO_LONG;
        }
        int rc = client_read_more(s, deadline);
        if (rc != CLIENT_OK)
            return rc;
    }
}

int client_read_block(struct client_server *s, size_t n, uint64_t deadline, char **data)
{
    while (s->in_len - s->in_pos < n) {
        /* room for the whole block in one go */
        size_t need = n - (s->in_len - s->in_pos);
        int rc = reserve(s, need > READ_CHUNK ? need + 1 : READ_CHUNK);
        if (rc != CLIENT_OK)
            return rc;
        rc = client_read_more(s, deadline);
        if (rc != CLIENT_OK)
            return rc;
    }
    *data = s->in + s->in_pos;
    s->in_pos += n;
    return CLIENT_OK;
}

void client_consume(struct client_server *s, size_t n)
{
    size_t have = s->in_len - s->in_pos;
    s->in_pos += n < have ? n : have;
    if (s->in_pos == s->in_len)
        s->in_pos = s->in_len = 0;
}

char *client_read_all(int fd, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    for (;;) {
        if (n == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    *len = n;
    return buf;
}
