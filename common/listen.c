/* listen: listening sockets, one per loop for TCP (SO_REUSEPORT), one on
 * loop 0 for unix sockets with a round-robin hand-over, and the
 * max-connections gate. Accepting is a plain accept4() loop on a read event;
 * the accepted fd goes straight to the daemon's callback on the same loop. */
#include "common/listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/conn.h"
#include "common/log.h"
#include "common/num.h"
#include "common/loop.h"

struct core_listener {
    listen_accept_fn on_accept;
    listen_reject_fn on_reject;
    void *arg;
    bool is_admin;
    bool handoff;          /* accept on loop 0, spread over all loops */
    int port;
    char unix_path[108];
    unsigned rr;
    struct core_listener *next;
};

struct listen_sock {
    struct core_listener *l;
    struct core_loop *loop;
    int fd;
    struct event *ev;
    struct listen_sock *next;
};

struct handoff {
    struct core_listener *l;
    int fd;
    struct sockaddr_storage ss;
    socklen_t len;
};

static struct core_listener *listeners;
static struct listen_sock *socks;
static atomic_uint_fast64_t max_conns;
static atomic_uint_fast64_t rejected;

void listen_set_max_conns(uint64_t max) { atomic_store(&max_conns, max); }
uint64_t listen_max_conns(void) { return atomic_load(&max_conns); }
uint64_t listen_rejected_conns(void) { return atomic_load(&rejected); }

static int errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static bool is_unix_spec(const char *spec)
{
    return strncmp(spec, "unix:", 5) == 0 || spec[0] == '/' || spec[0] == '.';
}

int listen_parse_addr(const char *spec, int default_port, struct sockaddr_storage *ss, socklen_t *len,
                      char *err, size_t errlen)
{
    memset(ss, 0, sizeof(*ss));
    if (is_unix_spec(spec)) {
        const char *path = strncmp(spec, "unix:", 5) == 0 ? spec + 5 : spec;
        struct sockaddr_un *sun = (struct sockaddr_un *)ss;
        if (strlen(path) >= sizeof(sun->sun_path) || !*path)
            return errf(err, errlen, "unix socket path '%s' is empty or too long", path);
        sun->sun_family = AF_UNIX;
        strcpy(sun->sun_path, path);
        *len = sizeof(*sun);
        return 0;
    }
    char host[256] = "";
    const char *portstr = NULL;
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (!close || (size_t)(close - spec - 1) >= sizeof(host))
            return errf(err, errlen, "bad address '%s'", spec);
        memcpy(host, spec + 1, (size_t)(close - spec - 1));
        host[close - spec - 1] = '\0';
        if (close[1] == ':')
            portstr = close + 2;
        else if (close[1])
            return errf(err, errlen, "bad address '%s'", spec);
    } else {
        const char *colon = strrchr(spec, ':');
        bool all_digits = spec[0] != '\0' && strspn(spec, "0123456789") == strlen(spec);
        if (all_digits) {
            portstr = spec;
        } else if (colon && strchr(spec, ':') == colon) {
            if ((size_t)(colon - spec) >= sizeof(host))
                return errf(err, errlen, "bad address '%s'", spec);
            memcpy(host, spec, (size_t)(colon - spec));
            host[colon - spec] = '\0';
            portstr = colon + 1;
        } else {
            if (strlen(spec) >= sizeof(host))
                return errf(err, errlen, "bad address '%s'", spec);
            strcpy(host, spec);
        }
    }
    int port = default_port;
    if (portstr && *portstr) {
        if (parse_int_str(portstr, 0, 65535, &port) != NUM_OK)
            return errf(err, errlen, "bad port in '%s'", spec);
    }
    if (port < 0)
        return errf(err, errlen, "no port in '%s'", spec);
    if (host[0] == '\0' || strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        sin->sin_port = htons((uint16_t)port);
        *len = sizeof(*sin);
        return 0;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
    struct addrinfo *res = NULL;
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &res); /* start-up only; may block on DNS */
    if (rc != 0 || !res)
        return errf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void dispatch(struct core_listener *l, struct core_loop *loop, int fd, struct sockaddr_storage *ss,
                     socklen_t len)
{
    uint64_t max = atomic_load(&max_conns);
    if (!l->is_admin && max && conn_total_current() >= max) {
        atomic_fetch_add(&rejected, 1);
        if (l->on_reject)
            l->on_reject(fd, l->arg);
        close(fd);
        return;
    }
    if (ss->ss_family == AF_INET || ss->ss_family == AF_INET6) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    l->on_accept(loop, fd, (struct sockaddr *)ss, len, l->arg);
}

static void handoff_cb(void *arg)
{
    struct handoff *h = arg;
    dispatch(h->l, loop_current(), h->fd, &h->ss, h->len);
    free(h);
}

static void accept_cb(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    struct listen_sock *s = arg;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                log_warn("accept: %s (raise --max-fds?)", strerror(errno));
            else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                log_warn("accept: %s", strerror(errno));
            return;
        }
        struct core_listener *l = s->l;
        if (l->handoff && loop_count() > 1) {
            struct core_loop *target = loop_get((int)(l->rr++ % (unsigned)loop_count()));
            if (target != s->loop) {
                struct handoff *h = malloc(sizeof(*h));
                if (h) {
                    h->l = l;
                    h->fd = fd;
                    h->ss = ss;
                    h->len = len;
                    if (loop_call(target, handoff_cb, h) == 0)
                        continue;
                    free(h);
                }
            }
        }
        dispatch(l, s->loop, fd, &ss, len);
    }
}

static int open_socket(const struct sockaddr_storage *ss, socklen_t len, bool reuseport, int backlog,
                       char *err, size_t errlen)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errf(err, errlen, "socket: %s", strerror(errno));
    int one = 1;
    if (ss->ss_family != AF_UNIX) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (reuseport)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    }
    if (bind(fd, (const struct sockaddr *)ss, len) < 0) {
        int e = errno;
        close(fd);
        return errf(err, errlen, "bind: %s", strerror(e));
    }
    if (listen(fd, backlog) < 0) {
        int e = errno;
        close(fd);
        return errf(err, errlen, "listen: %s", strerror(e));
    }
    return fd;
}

static int add_sock(struct core_listener *l, struct core_loop *loop, int fd)
{
    struct listen_sock *s = calloc(1, sizeof(*s));
    if (!s)
        return -1;
    s->l = l;
    s->loop = loop;
    s->fd = fd;
    s->ev = event_new(loop->base, fd, EV_READ | EV_PERSIST, accept_cb, s);
    event_add(s->ev, NULL);
    s->next = socks;
    socks = s;
    return 0;
}

struct core_listener *listen_open(const char *spec, int default_port, const struct listen_opts *opts,
                                  listen_accept_fn on_accept, listen_reject_fn on_reject, void *arg,
                                  char *err, size_t errlen)
{
    struct listen_opts o = opts ? *opts : (struct listen_opts){ 0 };
    int backlog = o.backlog > 0 ? o.backlog : 1024;
    struct sockaddr_storage ss;
    socklen_t len;
    if (listen_parse_addr(spec, default_port, &ss, &len, err, errlen) < 0)
        return NULL;
    struct core_listener *l = calloc(1, sizeof(*l));
    if (!l) {
        errf(err, errlen, "out of memory");
        return NULL;
    }
    l->on_accept = on_accept;
    l->on_reject = on_reject;
    l->arg = arg;
    l->is_admin = o.is_admin;
    char e2[200];
    if (ss.ss_family == AF_UNIX) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
        unlink(sun->sun_path); /* a stale socket from an earlier run */
        int fd = open_socket(&ss, len, false, backlog, e2, sizeof(e2));
        if (fd < 0) {
            errf(err, errlen, "%s: %s", spec, e2);
            free(l);
            return NULL;
        }
        chmod(sun->sun_path, o.unix_mask ? (mode_t)o.unix_mask : 0700);
        memcpy(l->unix_path, sun->sun_path, sizeof(l->unix_path));
        l->handoff = !o.single_loop;
        add_sock(l, loop_get(0), fd);
    } else {
        int n = o.single_loop ? 1 : loop_count();
        for (int i = 0; i < n; i++) {
            int fd = open_socket(&ss, len, n > 1, backlog, e2, sizeof(e2));
            if (fd < 0) {
                errf(err, errlen, "%s: %s", spec, e2);
                return NULL; /* sockets opened so far close at exit */
            }
            if (i == 0) {
                struct sockaddr_storage bound;
                socklen_t blen = sizeof(bound);
                getsockname(fd, (struct sockaddr *)&bound, &blen);
                l->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                            : ((struct sockaddr_in *)&bound)->sin_port);
                /* Port 0: the other loops must bind the port the first got. */
                if (ss.ss_family == AF_INET6)
                    ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)l->port);
                else
                    ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)l->port);
            }
            add_sock(l, loop_get(i), fd);
        }
    }
    l->next = listeners;
    listeners = l;
    return l;
}

int listen_port(const struct core_listener *l) { return l->port; }

static void close_on_loop(void *arg)
{
    struct core_loop *loop = arg;
    for (struct listen_sock *s = socks; s; s = s->next) {
        if (s->loop != loop || s->fd < 0)
            continue;
        event_free(s->ev);
        s->ev = NULL;
        close(s->fd);
        s->fd = -1;
        if (s->l->unix_path[0])
            unlink(s->l->unix_path);
    }
}

void listen_close_all(void)
{
    for (int i = 0; i < loop_count(); i++)
        loop_call(loop_get(i), close_on_loop, loop_get(i));
}
