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
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/clock.h"
#include "common/conn.h"
#include "common/log.h"
#include "common/num.h"
#include "common/loop.h"

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

/* no_host_ip: the IPv4 address a spec without a host binds ("port",
 * ":port"); "*:port" and "0.0.0.0:port" always mean every interface. */
static int parse_addr(const char *spec, int default_port, uint32_t no_host_ip, struct sockaddr_storage *ss,
                      socklen_t *len, char *err, size_t errlen)
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
        sin->sin_addr.s_addr = htonl(host[0] == '\0' ? no_host_ip : INADDR_ANY);
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

int listen_parse_addr(const char *spec, int default_port, struct sockaddr_storage *ss, socklen_t *len, char *err,
                      size_t errlen)
{
    return parse_addr(spec, default_port, INADDR_ANY, ss, len, err, errlen);
}

struct listen_sock;

struct core_listener {
    listen_accept_fn on_accept;
    listen_reject_fn on_reject;
    void *arg;
    bool is_admin;
    bool handoff; /* accept on loop 0, spread over all loops */
    atomic_bool closing;
    int port;
    struct sockaddr_storage bound;
    socklen_t bound_len;
    char unix_path[108];
    dev_t unix_dev; /* the socket file we made: unlinked only if still ours */
    ino_t unix_ino;
    unsigned rr;
    struct listen_sock *socks;
    atomic_int open_socks; /* the last one closed frees the listener */
    struct core_listener *next;
};

struct listen_sock {
    struct core_listener *l;
    struct core_loop *loop;
    int fd;
    struct event *ev;
    struct event *pause_ev; /* re-enables accepting after fd exhaustion */
    int spare;              /* a descriptor held back for EMFILE (-1: none) */
    struct listen_sock *next;
};

struct handoff {
    struct core_listener *l;
    int fd;
    struct sockaddr_storage ss;
    socklen_t len;
};

static pthread_mutex_t listeners_mu = PTHREAD_MUTEX_INITIALIZER;
static struct core_listener *listeners;
static atomic_uint_fast64_t max_conns;
static atomic_uint_fast64_t rejected;
static atomic_uint_fast64_t fd_exhausted;
static atomic_uint_fast64_t exhausted_logged_at; /* ms; 0 = never */

#define ACCEPT_PAUSE_MS 100
#define STR_(x) #x
#define STR(x) STR_(x)

void listen_set_max_conns(uint64_t max) { atomic_store(&max_conns, max); }
uint64_t listen_max_conns(void) { return atomic_load(&max_conns); }
uint64_t listen_rejected_conns(void) { return atomic_load(&rejected); }
uint64_t listen_fd_exhausted(void) { return atomic_load(&fd_exhausted); }

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

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct listen_sock *s = arg;
    if (s->ev && !atomic_load(&s->l->closing))
        event_add(s->ev, NULL);
}

static void exhausted_log(int err, const char *what)
{
    uint64_t now = clock_now_ms(), last = atomic_load(&exhausted_logged_at);
    if ((last == 0 || now - last >= 60000) && atomic_compare_exchange_strong(&exhausted_logged_at, &last, now))
        log_warn("accept: %s: %s (%llu times so far; raise the fd limit or lower the connection limit)", strerror(err),
                 what, (unsigned long long)atomic_load(&fd_exhausted));
}

/* Out of file descriptors: accept() fails at once and the socket stays
 * readable, so retrying would spin the loop at 100% CPU, and a client
 * left in the backlog would hang until it gives up. With its spare
 * descriptor the socket takes the waiting connection and closes it at
 * once (the client sees a clean close and may retry), then takes the
 * spare back. Returns false when that cannot be done (no spare, or the
 * accept failed again). */
static bool shed_one(struct listen_sock *s, int lfd)
{
    if (s->spare < 0)
        return false;
    close(s->spare);
    s->spare = -1;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    int e = errno;
    if (fd >= 0) {
        /* What the client already sent is read first: closing over unread
         * bytes would reset the connection rather than close it. */
        char sink[4096];
        for (int i = 0; i < 16 && recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++)
            ;
        close(fd);
    }
    s->spare = open("/dev/null", O_RDONLY | O_CLOEXEC); /* another thread may take it first: then no spare */
    if (fd < 0)
        errno = e;
    return fd >= 0;
}

/* No spare (or ENOBUFS/ENOMEM, which a spare does not cure): stop
 * accepting on this socket for a moment instead (the kernel keeps the
 * backlog). */
static void pause_accepting(struct listen_sock *s, int err)
{
    exhausted_log(err, "pausing accepts for " STR(ACCEPT_PAUSE_MS) " ms");
    event_del(s->ev);
    if (!s->pause_ev)
        s->pause_ev = evtimer_new(s->loop->base, resume_cb, s);
    struct timeval tv = { 0, ACCEPT_PAUSE_MS * 1000 };
    if (!s->pause_ev || evtimer_add(s->pause_ev, &tv) < 0)
        event_add(s->ev, NULL); /* cannot pause: better spinning than deaf */
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
            int e = errno;
            if (e == EMFILE || e == ENFILE) {
                atomic_fetch_add(&fd_exhausted, 1);
                if (shed_one(s, lfd)) {
                    exhausted_log(e, "closing new connections at once");
                    continue;
                }
                if (s->spare >= 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                    return; /* the connection went away meanwhile */
                pause_accepting(s, e);
            } else if (e == ENOBUFS || e == ENOMEM) {
                atomic_fetch_add(&fd_exhausted, 1);
                pause_accepting(s, e);
            } else if (e != EAGAIN && e != EWOULDBLOCK && e != EINTR && e != ECONNABORTED)
                log_warn("accept: %s", strerror(e));
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
        if (atomic_load(&l->closing))
            return; /* the callback closed this listener: s goes soon */
    }
}

static int open_socket(const struct sockaddr_storage *ss, socklen_t len, bool reuseport, int backlog, char *err,
                       size_t errlen)
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
    if (backlog > 0 && listen(fd, backlog) < 0) {
        int e = errno;
        close(fd);
        return errf(err, errlen, "listen: %s", strerror(e));
    }
    return fd;
}

/* Is the address already taken by anyone? A socket without SO_REUSEPORT
 * cannot bind next to one with it, so this refuses a port that another
 * process (or another daemon of ours) holds, even with SO_REUSEPORT. */
static int probe_free(const struct sockaddr_storage *ss, socklen_t len, char *err, size_t errlen)
{
    int fd = open_socket(ss, len, false, 0, err, errlen);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

static void free_listener(struct core_listener *l)
{
    for (struct listen_sock *s = l->socks, *n; s; s = n) {
        n = s->next;
        free(s);
    }
    free(l);
}

static void start_sock(void *arg)
{
    struct listen_sock *s = arg;
    if (atomic_load(&s->l->closing) || s->fd < 0)
        return;
    s->ev = event_new(s->loop->base, s->fd, EV_READ | EV_PERSIST, accept_cb, s);
    if (!s->ev || event_add(s->ev, NULL) < 0)
        log_error("listen: cannot watch a listening socket on loop %d", s->loop->index);
}

/* Runs on the socket's loop. The last socket of a closing listener
 * removes its unix socket file (if it is still the one we made) and frees
 * the listener. */
static void close_sock(void *arg)
{
    struct listen_sock *s = arg;
    struct core_listener *l = s->l;
    if (s->ev)
        event_free(s->ev);
    if (s->pause_ev)
        event_free(s->pause_ev);
    s->ev = s->pause_ev = NULL;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    if (s->spare >= 0)
        close(s->spare);
    s->spare = -1;
    if (atomic_fetch_sub(&l->open_socks, 1) != 1)
        return;
    if (l->unix_path[0]) {
        struct stat st;
        if (lstat(l->unix_path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == l->unix_dev &&
            st.st_ino == l->unix_ino)
            unlink(l->unix_path);
    }
    free_listener(l);
}

/* Hand a socket to its loop: registered there, on that loop's thread
 * (event bases are not locked). Before loop_run the call waits in the
 * loop's queue; the kernel queues connections meanwhile. */
static void add_sock(struct core_listener *l, struct core_loop *loop, int fd)
{
    struct listen_sock *s = calloc(1, sizeof(*s));
    if (!s) {
        close(fd);
        return;
    }
    s->l = l;
    s->loop = loop;
    s->fd = fd;
    s->spare = open("/dev/null", O_RDONLY | O_CLOEXEC); /* -1: EMFILE falls back to pausing */
    s->next = l->socks;
    l->socks = s;
    atomic_fetch_add(&l->open_socks, 1);
}

/* A unix socket path may be reused only if it is a socket nobody answers
 * on (left by a crash). Anything else there is refused, never unlinked. */
static int unix_path_free(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : errf(err, errlen, "%s: %s", path, strerror(errno));
    if (!S_ISSOCK(st.st_mode))
        return errf(err, errlen, "%s exists and is not a socket; not replacing it", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errf(err, errlen, "socket: %s", strerror(errno));
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    size_t plen = strlen(path);
    if (plen >= sizeof sun.sun_path) {
        close(fd);
        return errf(err, errlen, "unix socket path too long");
    }
    memcpy(sun.sun_path, path, plen + 1);
    int rc = connect(fd, (struct sockaddr *)&sun, sizeof sun);
    int e = errno;
    close(fd);
    if (rc == 0 || e == EAGAIN || e == EINPROGRESS)
        return errf(err, errlen, "%s is in use by a running process", path);
    if (e != ECONNREFUSED)
        return errf(err, errlen, "%s: %s", path, strerror(e));
    unlink(path); /* a stale socket from an earlier run */
    return 0;
}

struct core_listener *listen_open(const char *spec, int default_port, const struct listen_opts *opts,
                                  listen_accept_fn on_accept, listen_reject_fn on_reject, void *arg, char *err,
                                  size_t errlen)
{
    struct listen_opts o = opts ? *opts : (struct listen_opts){ 0 };
    int backlog = o.backlog > 0 ? o.backlog : 1024;
    struct sockaddr_storage ss;
    socklen_t len;
    if (parse_addr(spec, default_port, o.loopback_default ? INADDR_LOOPBACK : INADDR_ANY, &ss, &len, err, errlen) < 0)
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
        if (unix_path_free(sun->sun_path, e2, sizeof e2) < 0) {
            errf(err, errlen, "%s", e2);
            free(l);
            return NULL;
        }
        int fd = open_socket(&ss, len, false, backlog, e2, sizeof(e2));
        if (fd < 0) {
            errf(err, errlen, "%s: %s", spec, e2);
            free(l);
            return NULL;
        }
        chmod(sun->sun_path, o.unix_mask ? (mode_t)o.unix_mask : 0700);
        struct stat st;
        if (stat(sun->sun_path, &st) == 0) {
            l->unix_dev = st.st_dev;
            l->unix_ino = st.st_ino;
        }
        memcpy(l->unix_path, sun->sun_path, sizeof(l->unix_path));
        l->handoff = !o.single_loop;
        add_sock(l, loop_get(0), fd);
    } else {
        int n = o.single_loop ? 1 : loop_count();
        in_port_t want =
            ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port;
        /* SO_REUSEPORT spreads connections over our own loops; unless the
         * caller opted in to sharing, nobody else may hold the port. */
        if (n > 1 && want != 0 && !o.reuseport && probe_free(&ss, len, e2, sizeof e2) < 0) {
            errf(err, errlen, "%s: %s", spec, e2);
            free(l);
            return NULL;
        }
        for (int i = 0; i < n; i++) {
            int fd = open_socket(&ss, len, n > 1 || o.reuseport, backlog, e2, sizeof(e2));
            if (fd < 0) {
                errf(err, errlen, "%s: %s", spec, e2);
                for (struct listen_sock *s = l->socks; s; s = s->next) {
                    close(s->fd);
                    if (s->spare >= 0)
                        close(s->spare);
                }
                free_listener(l);
                return NULL;
            }
            if (i == 0) {
                struct sockaddr_storage bound;
                socklen_t blen = sizeof(bound);
                getsockname(fd, (struct sockaddr *)&bound, &blen);
                l->bound = bound;
                l->bound_len = blen;
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
    pthread_mutex_lock(&listeners_mu);
    l->next = listeners;
    listeners = l;
    pthread_mutex_unlock(&listeners_mu);
    /* from here on a socket belongs to its loop */
    for (struct listen_sock *s = l->socks; s; s = s->next)
        if (loop_current() == s->loop)
            start_sock(s);
        else if (loop_call(s->loop, start_sock, s) < 0)
            log_error("listen: %s: cannot reach loop %d", spec, s->loop->index);
    return l;
}

int listen_port(const struct core_listener *l) { return l->port; }

const char *listen_addr_str(const struct core_listener *l, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (l->unix_path[0])
        snprintf(buf, len, "unix:%s", l->unix_path);
    else if (l->bound.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&l->bound)->sin6_addr, host, sizeof host);
        snprintf(buf, len, "[%s]:%d", host, l->port);
    } else {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&l->bound)->sin_addr, host, sizeof host);
        snprintf(buf, len, "%s:%d", host, l->port);
    }
    return buf;
}

int listen_foreach(void (*fn)(const struct listen_info *li, void *arg), void *arg)
{
    int n = 0;
    pthread_mutex_lock(&listeners_mu);
    for (struct core_listener *l = listeners; l; l = l->next) {
        struct listen_info li = { .l = l,
                                  .is_unix = l->unix_path[0] != '\0',
                                  .is_admin = l->is_admin,
                                  .on_accept = l->on_accept,
                                  .arg = l->arg };
        listen_addr_str(l, li.addr, sizeof li.addr);
        for (struct listen_sock *s = l->socks; s; s = s->next) {
            li.fd = s->fd;
            li.loop = s->loop ? s->loop->index : 0;
            fn(&li, arg);
            n++;
        }
    }
    pthread_mutex_unlock(&listeners_mu);
    return n;
}

void listen_close(struct core_listener *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&listeners_mu);
    bool was = atomic_exchange(&l->closing, true);
    if (!was)
        for (struct core_listener **p = &listeners; *p; p = &(*p)->next)
            if (*p == l) {
                *p = l->next;
                break;
            }
    pthread_mutex_unlock(&listeners_mu);
    if (was)
        return;
    /* Each socket closes on its own loop (never under its own accept
     * callback): after this returns no new connection is accepted once
     * those calls have run, and the port is free when the last one has. */
    struct listen_sock *next;
    for (struct listen_sock *s = l->socks; s; s = next) {
        next = s->next; /* s (and l) may be freed by the call below */
        if (loop_call(s->loop, close_sock, s) < 0)
            log_error("listen: cannot reach loop %d to close a listener", s->loop->index);
    }
}

void listen_close_all(void)
{
    for (;;) {
        pthread_mutex_lock(&listeners_mu);
        struct core_listener *l = listeners;
        pthread_mutex_unlock(&listeners_mu);
        if (!l)
            break;
        listen_close(l);
    }
}

/* A graceful stop closes every listener first (see loop_layer). */
static const struct loop_layer listen_layer = { .name = "listen", .stop_requested = listen_close_all };

__attribute__((constructor)) static void listen_register_layer(void) { loop_add_layer(&listen_layer); }
