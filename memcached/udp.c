/* udp: memcached's UDP transport (-U PORT). The wire format and the pure
 * helpers are in udp.h / proto_udp.c; this file owns the sockets.
 *
 * Each UDP socket belongs to one loop (one per loop and listen address,
 * bound with SO_REUSEPORT so the kernel spreads the datagrams; with
 * several -l addresses one socket per address, as memcached's
 * num_threads_per_udp = 1) and has a session of its own with no stream:
 * each datagram's requests run through it one by one (mc_sess_step), and
 * their replies go back to the sender as memcached 1.6.18 sends them —
 * every response object on its own, in datagrams of at most 1400 bytes.
 * Which objects a request makes and when they are sent (memcached's
 * "transmit" points: after a get, quit, mn, a binary error, noop; at the
 * end of the datagram; every -R requests) is modelled here so the bytes
 * on the wire match memcached's, bare headers for empty objects included.
 *
 * Bounds: a datagram is read into a 64 KiB buffer; a request cut by the
 * datagram's end is dropped (a request never spans datagrams); replies
 * are built under the same -o read_buf_mem_limit as TCP's and sent before
 * the next request of a get; while the kernel takes no more datagrams the
 * socket stops reading (nothing queues up behind it). One object is sent
 * in at most 65535 datagrams (what the header can count). */
#include "memcached/udp.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"
#include "memcached/extstore.h"
#include "memcached/proto.h"
#include "memcached/session.h"

#define UDP_BATCH 64           /* datagrams handed to one sendmmsg */
#define UDP_READS_PER_EVENT 16 /* datagrams served before the loop's other work */

struct udp_resp {
    size_t len;
    bool skip; /* a reply the client asked not to get (noreply, meta q): never sent */
};

struct mc_udp {
    struct mc_udp *next;
    struct core_loop *loop;
    int fd;
    struct event *rev, *wev;
    struct session *s;
    struct core_conn conn; /* the session's stand-in: no stream of its own */
    uint8_t *rbuf;
    struct evbuffer *in; /* the rest of the datagram being served */
    struct sockaddr_storage peer;
    socklen_t peer_len;
    uint16_t req_id;
    int budget; /* requests before the next -R flush */
    /* Response objects not yet sent; their bytes are at the front of s->out. */
    struct udp_resp *resps;
    size_t nresps, cap, head;
    bool head_started;
    uint16_t seq, total;
    size_t head_left;
    /* Datagrams built and not yet taken by the kernel. */
    uint8_t *sbuf; /* UDP_BATCH x MC_UDP_MAX_PAYLOAD */
    struct mmsghdr msgs[UDP_BATCH];
    struct iovec iov[UDP_BATCH];
    int nbuilt, nsent;
    bool blocked;               /* waiting until the socket takes datagrams again */
    bool waiting;               /* the datagram's request waits for extstore reads (not reading meanwhile) */
    char keys[MC_UDP_READ_MAX]; /* the key list of the get being run */
    size_t nkeys;
    _Atomic uint32_t last_cmd;
};

/* The socket a session's stand-in conn belongs to. */
static struct mc_udp *container_of_conn(struct core_conn *c)
{
    return (struct mc_udp *)((char *)c - offsetof(struct mc_udp, conn));
}

static pthread_mutex_t udp_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mc_udp *udp_socks;
static _Atomic uint64_t udp_dropped;

uint64_t mc_udp_dropped(void) { return atomic_load_explicit(&udp_dropped, memory_order_relaxed); }

uint64_t mc_udp_count(void)
{
    uint64_t n = 0;
    pthread_mutex_lock(&udp_lock);
    for (struct mc_udp *u = udp_socks; u; u = u->next)
        n++;
    pthread_mutex_unlock(&udp_lock);
    return n;
}

static void dropped(uint64_t n) { atomic_fetch_add_explicit(&udp_dropped, n, memory_order_relaxed); }

/* ------------------------------------------------------------------ */
/* sending */

static void on_writable(evutil_socket_t fd, short what, void *arg);

/* Hand the built datagrams to the kernel. false: it takes no more now
 * (the write event brings us back). */
static bool send_built(struct mc_udp *u)
{
    while (u->nsent < u->nbuilt) {
        int n = sendmmsg(u->fd, u->msgs + u->nsent, (unsigned)(u->nbuilt - u->nsent), MSG_DONTWAIT);
        if (n > 0) {
            uint64_t bytes = 0;
            for (int i = 0; i < n; i++)
                bytes += u->msgs[u->nsent + i].msg_len;
            MC_STAT_ADD(&u->s->th->st, bytes_written, bytes);
            u->nsent += n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
            u->blocked = true;
            event_del(u->rev);
            event_add(u->wev, NULL);
            return false;
        }
        if (n < 0 && errno == EINTR)
            continue;
        /* The kernel refused this datagram (an unreachable sender, a
         * message too long for the route): it is lost, as UDP loses. */
        dropped(1);
        u->nsent++;
    }
    u->nbuilt = u->nsent = 0;
    return true;
}

static void build_one(struct mc_udp *u, size_t n)
{
    int i = u->nbuilt++;
    uint8_t *d = u->sbuf + (size_t)i * MC_UDP_MAX_PAYLOAD;
    mc_udp_write_header(d, u->req_id, u->seq, u->total);
    if (n)
        evbuffer_remove(u->s->out, d + MC_UDP_HDR, n);
    u->iov[i].iov_base = d;
    u->iov[i].iov_len = MC_UDP_HDR + n;
    memset(&u->msgs[i], 0, sizeof u->msgs[i]);
    u->msgs[i].msg_hdr.msg_name = &u->peer;
    u->msgs[i].msg_hdr.msg_namelen = u->peer_len;
    u->msgs[i].msg_hdr.msg_iov = &u->iov[i];
    u->msgs[i].msg_hdr.msg_iovlen = 1;
    u->seq++;
}

/* Send every waiting response object, as memcached's transmit does: an
 * object in datagrams numbered 0..total-1; an empty object first in line
 * as one bare header (count 0); objects the client asked not to get, and
 * empty ones right after a sent object, not at all. false: blocked. */
static bool transmit(struct mc_udp *u)
{
    for (;;) {
        if (u->nbuilt == UDP_BATCH && !send_built(u))
            return false;
        if (u->head_started && u->head_left == 0) {
            /* The head object is out: those behind it with nothing to
             * send go with it (memcached completes them in the same pass). */
            u->head_started = false;
            u->head++;
            while (u->head < u->nresps && (u->resps[u->head].skip || u->resps[u->head].len == 0)) {
                evbuffer_drain(u->s->out, u->resps[u->head].len);
                u->head++;
            }
        }
        if (u->head >= u->nresps)
            break;
        struct udp_resp *r = &u->resps[u->head];
        if (!u->head_started) {
            if (r->skip) {
                evbuffer_drain(u->s->out, r->len);
                u->head++;
                continue;
            }
            u->head_started = true;
            u->seq = 0;
            u->total = mc_udp_total(r->len);
            u->head_left = r->len;
            if (r->len == 0) {
                build_one(u, 0);
                continue;
            }
        }
        if ((uint32_t)u->seq >= MC_UDP_MAX_DATAGRAMS) {
            /* More than the header can count: the rest is not sent. */
            evbuffer_drain(u->s->out, u->head_left);
            u->head_left = 0;
            dropped(1);
            continue;
        }
        size_t n = u->head_left < MC_UDP_DATA ? u->head_left : MC_UDP_DATA;
        build_one(u, n);
        u->head_left -= n;
    }
    if (!send_built(u))
        return false;
    u->nresps = u->head = 0;
    return true;
}

/* ------------------------------------------------------------------ */
/* running a datagram's requests */

static void add_resp(struct mc_udp *u, size_t len, bool skip)
{
    if (u->nresps == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 16;
        struct udp_resp *v = realloc(u->resps, cap * sizeof *v);
        if (!v) { /* keep the bytes in order: join them to the last object */
            if (u->nresps)
                u->resps[u->nresps - 1].len += len;
            else
                evbuffer_drain(u->s->out, len);
            return;
        }
        u->resps = v;
        u->cap = cap;
    }
    u->resps[u->nresps].len = len;
    u->resps[u->nresps].skip = skip;
    u->nresps++;
}

static void emit_get(size_t len, void *arg) { add_resp(arg, len, false); }

/* What the request at the front of in is, as far as cutting its reply
 * and the send points go. */
struct udp_req {
    bool text;
    enum mc_text_cmd cmd;
    bool get_keys; /* text get family: one object per key */
    bool flush;    /* memcached sends what is waiting after it */
    bool meta_noop;
};

static void look_at(struct mc_udp *u, struct udp_req *q)
{
    memset(q, 0, sizeof *q);
    struct session *s = u->s;
    size_t len = evbuffer_get_length(u->in);
    if (s->proto == MC_PROTO_BIN) {
        uint8_t h[2];
        if (len >= 2) {
            evbuffer_copyout(u->in, h, 2);
            q->flush = h[1] == MC_BIN_NOOP || h[1] == MC_BIN_QUIT || h[1] == MC_BIN_QUITQ;
        }
        return;
    }
    q->text = true;
    size_t n = len < MC_MAX_LINE + 2 ? len : MC_MAX_LINE + 2;
    const char *p = (const char *)evbuffer_pullup(u->in, (ssize_t)n);
    struct mc_text_req r;
    if (!p || mc_text_parse(p, n, &r) != MC_PARSE_OK) {
        q->cmd = MC_TXT_NONE;
        if (p && n >= 4 &&
            (memcmp(p, "get ", 4) == 0 || memcmp(p, "gets ", 5) == 0 || memcmp(p, "gat ", 4) == 0 ||
             memcmp(p, "gats ", 5) == 0))
            q->cmd = MC_TXT_GET; /* a get refused by the parser (a key too long) */
        return;
    }
    q->cmd = r.cmd;
    switch (r.cmd) {
    case MC_TXT_GET:
    case MC_TXT_GETS:
    case MC_TXT_GAT:
    case MC_TXT_GATS:
        q->get_keys = q->flush = true;
        u->nkeys = r.keys_len < sizeof u->keys ? r.keys_len : sizeof u->keys;
        memcpy(u->keys, r.keys, u->nkeys);
        break;
    case MC_TXT_QUIT: q->flush = true; break;
    case MC_TXT_META:
        q->meta_noop = r.line_len >= 2 && memcmp(r.line, "mn", 2) == 0 && (r.line_len == 2 || r.line[2] == ' ');
        q->flush = q->meta_noop;
        break;
    default: break;
    }
}

/* Reset the session between datagrams: nothing carries over. */
static void sess_reset(struct session *s)
{
    if (s->item) {
        mc_item_free(s->item);
        s->item = NULL;
    }
    if (s->dump) {
        mc_dump_abort(s->dump);
        free(s->dump);
        s->dump = NULL;
    }
    s->state = MC_SESS_CMD;
    s->dbg_noreply = false;
}

/* Run the requests left in u->in (stops early when the socket blocks). */
static void serve(struct mc_udp *u)
{
    struct session *s = u->s;
    while (!u->blocked && !u->waiting && evbuffer_get_length(u->in) > 0) {
        if (u->budget <= 0) { /* -R: memcached sends what waits, then yields */
            u->budget = mc_settings.reqs_per_event;
            MC_STAT_ADD(&s->th->st, conn_yields, 1);
            if (!transmit(u))
                return;
        }
        u->budget--;
        struct udp_req q;
        look_at(u, &q);
        struct evbuffer *out = mc_out_evb(s);
        size_t before = evbuffer_get_length(out);
        bool progress = false;
        int rc;
        do {
            rc = mc_sess_step(s, u->in, &progress);
        } while (rc == 0 && progress && s->state != MC_SESS_CMD && s->state != MC_SESS_DUMP &&
                 s->state != MC_SESS_EXT && evbuffer_get_length(u->in) > 0);
        if (s->state == MC_SESS_EXT) {
            /* Values on disk: the request stays at the front of u->in, and
             * the socket reads no more datagrams until it has run again
             * (mc_udp_resume). What it wrote was taken back. */
            u->waiting = true;
            u->budget++;
            event_del(u->rev);
            return;
        }
        bool partial = !progress || (s->state != MC_SESS_CMD && s->state != MC_SESS_DUMP);
        if (s->state == MC_SESS_DUMP) /* a streamed metadump has no place in a datagram */
            sess_reset(s);
        out = mc_out_evb(s);
        size_t got = evbuffer_get_length(out) - before;
        if (partial && got == 0) {
            /* A request the datagram ends inside: dropped, as memcached
             * never reads a request across datagrams. */
            evbuffer_drain(u->in, evbuffer_get_length(u->in));
            sess_reset(s);
            break;
        }
        bool cut = false;
        if (q.text && (q.cmd == MC_TXT_GET || q.get_keys) && got) {
            const char *p = (const char *)evbuffer_pullup(out, -1) + before;
            static const char bad[] = "CLIENT_ERROR bad command line format\r\n";
            if (q.get_keys)
                cut = mc_udp_split_get(u->keys, u->nkeys, p, got, emit_get, u);
            else if (got == sizeof bad - 1 && memcmp(p, bad, got) == 0) {
                /* memcached drops the objects still waiting before this error */
                size_t waiting = 0;
                for (size_t i = u->head; i < u->nresps; i++)
                    waiting += u->resps[i].len;
                if (!u->head_started) {
                    evbuffer_drain(out, waiting);
                    u->nresps = u->head = 0;
                }
            }
        }
        if (!cut)
            add_resp(u, got, q.text && got == 0 && q.cmd != MC_TXT_QUIT);
        if (q.get_keys && !cut)
            q.flush = false; /* an error line: memcached's out_string does not send at once */
        if (!q.text && got >= MC_BIN_HDR) {
            uint8_t st[2];
            struct evbuffer_ptr pos;
            if (evbuffer_ptr_set(out, &pos, before + 6, EVBUFFER_PTR_SET) == 0 &&
                evbuffer_copyout_from(out, &pos, st, 2) == 2 && (st[0] | st[1]))
                q.flush = true; /* a binary error is sent at once */
        }
        if (rc != 0 || partial) {
            /* quit, a close after an error, or the end inside a request */
            evbuffer_drain(u->in, evbuffer_get_length(u->in));
            sess_reset(s);
            if (!transmit(u))
                return;
            break;
        }
        if (q.flush && !transmit(u))
            return;
    }
    if (!u->blocked && !u->waiting)
        transmit(u);
}

/* The extstore reads the session waited for are in (on the socket's
 * loop; extstore.c calls it through mc_ext_stream_less_resume): run the
 * rest of the datagram, then read again. */
static void udp_resume(struct session *s)
{
    struct mc_udp *u = container_of_conn(s->c);
    u->waiting = false;
    if (u->blocked)
        return; /* on_writable serves the rest once the socket takes datagrams */
    serve(u);
    if (!u->blocked && !u->waiting)
        event_add(u->rev, NULL);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct mc_udp *u = arg;
    struct session *s = u->s;
    for (int i = 0; i < UDP_READS_PER_EVENT && !u->blocked && !u->waiting; i++) {
        u->peer_len = sizeof u->peer;
        ssize_t n = recvfrom(fd, u->rbuf, MC_UDP_READ_MAX, MSG_DONTWAIT, (struct sockaddr *)&u->peer, &u->peer_len);
        if (n < 0)
            return; /* EAGAIN, or an ICMP error reported on the socket */
        struct mc_udp_frame f;
        if (!mc_udp_parse_frame(u->rbuf, (size_t)n, &f)) {
            dropped(1);
            continue;
        }
        MC_STAT_ADD(&s->th->st, bytes_read, (uint64_t)n);
        uint32_t now = mc_now();
        atomic_store_explicit(&u->last_cmd, now, memory_order_relaxed);
        s->last_cmd = now;
        u->req_id = f.req_id;
        u->budget = mc_settings.reqs_per_event + 1;
        evbuffer_drain(u->in, evbuffer_get_length(u->in));
        evbuffer_add(u->in, f.payload, f.len);
        sess_reset(s);
        s->proto = f.payload[0] == MC_BIN_REQ ? MC_PROTO_BIN : MC_PROTO_TEXT;
        serve(u);
    }
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct mc_udp *u = arg;
    u->blocked = false;
    if (!transmit(u))
        return;
    serve(u);
    if (u->blocked || u->waiting)
        return;
    event_add(u->rev, NULL);
}

/* ------------------------------------------------------------------ */
/* sockets */

/* memcached raises a UDP socket's send buffer as far as it goes, so a
 * large reply is not cut short by a full buffer. */
static void maximize_sndbuf(int fd)
{
    int lo = 0, hi = 256 << 20, best = 0;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &mid, sizeof mid) == 0) {
            best = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    if (best)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &best, sizeof best);
}

static void udp_free(struct mc_udp *u)
{
    if (u->rev)
        event_free(u->rev);
    if (u->wev)
        event_free(u->wev);
    if (u->s) {
        if (u->s->ext)
            mc_ext_session_gone(u->s); /* a read in flight frees its request when done */
        sess_reset(u->s);
        if (u->s->out)
            evbuffer_free(u->s->out);
        if (u->s->ob) {
            atomic_fetch_sub_explicit(&mc_out_mem_bytes, u->s->ob->cap, memory_order_relaxed);
            atomic_fetch_sub_explicit(&mc_out_bufs, 1, memory_order_relaxed);
            free(u->s->ob);
        }
        free(u->s);
    }
    if (u->in)
        evbuffer_free(u->in);
    if (u->fd >= 0)
        close(u->fd);
    free(u->rbuf);
    free(u->sbuf);
    free(u->resps);
    free(u);
}

static struct mc_udp *udp_new(struct core_loop *loop, int fd)
{
    struct mc_udp *u = calloc(1, sizeof *u);
    if (!u) {
        close(fd);
        return NULL;
    }
    u->fd = fd;
    u->loop = loop;
    u->rbuf = malloc(MC_UDP_READ_MAX);
    u->sbuf = malloc((size_t)UDP_BATCH * MC_UDP_MAX_PAYLOAD);
    u->in = evbuffer_new();
    u->s = calloc(1, sizeof *u->s);
    if (u->s)
        u->s->out = evbuffer_new();
    u->rev = event_new(loop->base, fd, EV_READ | EV_PERSIST, on_readable, u);
    u->wev = event_new(loop->base, fd, EV_WRITE, on_writable, u);
    if (!u->rbuf || !u->sbuf || !u->in || !u->s || !u->s->out || !u->rev || !u->wev) {
        udp_free(u);
        return NULL;
    }
    u->conn.loop = loop;
    u->conn.fd = fd;
    u->conn.data = u->s;
    u->s->c = &u->conn;
    u->s->fd = fd;
    u->s->th = loop->data;
    u->s->last_cmd = mc_now();
    atomic_store(&u->last_cmd, mc_now());
    return u;
}

/* A bound UDP socket for ss (port in ss; 0 = the kernel picks). share:
 * SO_REUSEPORT, for our own sockets on the loops (no SO_REUSEADDR: for UDP
 * that would let a socket of another process bind the same port). */
static int udp_socket(const struct sockaddr_storage *ss, socklen_t len, bool share, char *err, size_t errlen)
{
    int fd = socket(ss->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1, zero = 0;
    if (share)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (ss->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    if (share)
        maximize_sndbuf(fd);
    if (bind(fd, (const struct sockaddr *)ss, len) < 0) {
        snprintf(err, errlen, "bind: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
}

static int get_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return -1;
    return ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                    : ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* A port already in use (by another process, or another daemon of ours
 * with SO_REUSEPORT) is refused: a socket with neither SO_REUSEADDR nor
 * SO_REUSEPORT is bound there first, and only if that works are ours. */
int mc_udp_open(const char *host, int port, int *bound, char *err, size_t errlen)
{
    static int next_loop; /* several addresses: one socket each, round the loops */
    mc_ext_stream_less_resume = udp_resume;
    bool multi = mc_settings.listen && strchr(mc_settings.listen, ',');
    struct sockaddr_storage ss;
    socklen_t sl;
    const char *spec = host && *host ? host : "[::]";
    if (listen_parse_addr(spec, port < 0 ? 0 : port, &ss, &sl, err, errlen) < 0)
        return -1;
    int n = multi ? 1 : loop_count();
    if (port > 0) {
        int probe = udp_socket(&ss, sl, false, err, errlen);
        if (probe < 0 && !(host && *host)) {
            /* no IPv6: all IPv4 addresses */
            if (listen_parse_addr("0.0.0.0", port, &ss, &sl, err, errlen) < 0)
                return -1;
            probe = udp_socket(&ss, sl, false, err, errlen);
        }
        if (probe < 0)
            return -1;
        close(probe);
    }
    for (int i = 0; i < n; i++) {
        int fd = udp_socket(&ss, sl, true, err, errlen);
        if (fd < 0 && i == 0 && port <= 0 && !(host && *host)) {
            /* no IPv6: all IPv4 addresses */
            if (listen_parse_addr("0.0.0.0", 0, &ss, &sl, err, errlen) < 0)
                return -1;
            fd = udp_socket(&ss, sl, true, err, errlen);
        }
        if (fd < 0)
            return -1;
        if (i == 0) {
            int p = get_port(fd);
            set_port(&ss, p);
            if (bound)
                *bound = p;
        }
        struct core_loop *loop = loop_get(multi ? next_loop++ % loop_count() : i);
        struct mc_udp *u = udp_new(loop, fd);
        if (!u) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        if (event_add(u->rev, NULL) < 0) {
            udp_free(u);
            snprintf(err, errlen, "event_add failed");
            return -1;
        }
        if (mc_settings.verbose >= 2)
            fprintf(stderr, "<%d server listening (udp)\n", fd);
        pthread_mutex_lock(&udp_lock);
        u->next = udp_socks;
        udp_socks = u;
        pthread_mutex_unlock(&udp_lock);
    }
    return 0;
}

void mc_udp_close_all(void)
{
    pthread_mutex_lock(&udp_lock);
    struct mc_udp *u = udp_socks;
    udp_socks = NULL;
    pthread_mutex_unlock(&udp_lock);
    while (u) {
        struct mc_udp *next = u->next;
        udp_free(u);
        u = next;
    }
}

void mc_udp_foreach(void (*fn)(int fd, const void *sockaddr, unsigned salen, uint32_t last_cmd, void *arg), void *arg)
{
    pthread_mutex_lock(&udp_lock);
    for (struct mc_udp *u = udp_socks; u; u = u->next) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getsockname(u->fd, (struct sockaddr *)&ss, &sl) < 0)
            continue;
        fn(u->fd, &ss, (unsigned)sl, atomic_load_explicit(&u->last_cmd, memory_order_relaxed), arg);
    }
    pthread_mutex_unlock(&udp_lock);
}
