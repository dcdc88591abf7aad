/* conn: the life of one connection on its loop.
 *
 * States live in flags: reading or paused (by the daemon, or by the output
 * high-water mark), close-after-write, busy, shutting down. Every call into
 * the daemon's ops is bracketed so a conn_close() made from inside it is
 * deferred until the callback returns: a conn is never freed under its own
 * callback. */
#include "common/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/stats.h"
#include "common/uring.h"

enum {
    F_IN_CB = 1u << 0,         /* inside a daemon callback (depth > 0) */
    F_CLOSE_PENDING = 1u << 1, /* conn_close() called inside a callback */
    F_CLOSE_AFTER_WRITE = 1u << 2,
    F_BUSY = 1u << 3,
    F_PAUSED_LIMIT = 1u << 4, /* output over the high-water mark */
    F_PAUSED_USER = 1u << 5,
    F_CONNECTING = 1u << 6,
    F_SHUTDOWN = 1u << 7,
    F_FREEING = 1u << 8,
    F_FILTERED = 1u << 9,       /* bev is not a plain socket (e.g. TLS) */
    F_EOF_WAIT = 1u << 10,      /* closing after the peer's EOF: wait for busy too */
    F_TLS = 1u << 11,           /* c->bev is an OpenSSL bufferevent */
    F_TLS_HANDSHAKE = 1u << 12, /* conn_start_tls: handshake under way */
    F_OUT_HOOK = 1u << 13,      /* plain socket: output written at the end of the iteration */
    F_QUEUED = 1u << 14,        /* on the loop's I/O queue */
    F_WANT_WRITE = 1u << 15,    /* queued: write the output */
    F_WANT_READ = 1u << 16,     /* queued: read (io_uring) */
    F_IN_BATCH = 1u << 17,      /* in the batch being run (lc->batch) */
    F_UNREAD = 1u << 18,        /* input read while paused: on_read not yet told */
    F_DRAIN_NOTE = 1u << 19,    /* conn_write_now emptied the output: on_drained from the loop */
};

#define CONN_MAX_LOOPS 1024
#define CONN_MAX_SINGLE_READ (64 * 1024)
#define CONN_READ_CHUNK (16 * 1024)
#define CONN_NO_IDLE_S 86400 /* "no idle timeout" on the read event (see read_set) */
#define CONN_BATCH 32        /* conns per end-of-iteration batch */
#define CONN_SEND_IOV 16     /* output pieces per send */

/* One conn's part of a batch: what it asked for and, with io_uring, the
 * operations queued for it and their results. */
struct batch_op {
    struct core_conn *c; /* NULL once freed during the batch */
    uint32_t want;       /* F_WANT_READ / F_WANT_WRITE */
    int wres, rres;      /* results; RES_NOT_RUN if not queued or not run */
    bool wplain;         /* output holds a file segment: written with evbuffer_write, not the ring */
    int rnv;             /* receive: 1 = into the slot buffer, 2 = into reserved input space */
    struct msghdr wmsg, rmsg;
    struct evbuffer_iovec wv[CONN_SEND_IOV];
    struct evbuffer_iovec rv[2];
};
#define RES_NOT_RUN INT32_MIN

struct loop_conns {
    struct core_conn *head;
    uint64_t count;
    struct evdns_base *dns; /* created on the first conn_connect_host */
    char *scratch;          /* CONN_READ_CHUNK bytes: reads into an empty input land here first */
    /* the end-of-iteration I/O queue: conns with output to write (and,
     * with io_uring, input to read), run by flush_ev after the iteration's
     * other callbacks */
    struct core_loop *loop;
    struct event *flush_ev;
    struct core_conn *fq_head, *fq_tail;
    unsigned fq_count;
    struct batch_op batch[CONN_BATCH];
    unsigned nbatch;
    struct uring_batch *ring; /* STACK_IO_URING=1 and io_uring works */
    bool ring_off;            /* not wanted, refused, or broke */
    char *slots;              /* CONN_BATCH x CONN_READ_CHUNK receive buffers (io_uring) */
    struct evbuffer *probe;   /* out_in_memory's scratch */
};

/* Dialing by name: the resolver's answer and the addresses left to try.
 * Owned by its conn; while a lookup is pending when the conn goes, the
 * lookup's callback frees it (c is then NULL). */
struct conn_dial {
    struct core_conn *c;
    struct evdns_getaddrinfo_request *req;
    struct evutil_addrinfo *ai, *next;
    struct event *kick; /* starts the next attempt from the loop */
    int gai_err;
};

static struct loop_conns per_loop[CONN_MAX_LOOPS];
static atomic_uint_fast64_t total_current, total_accepted, next_id;

uint64_t conn_total_current(void) { return atomic_load(&total_current); }
uint64_t conn_total_accepted(void) { return atomic_load(&total_accepted); }
uint64_t conn_loop_current(const struct core_loop *loop) { return per_loop[loop->index].count; }
bool conn_is_closing(const struct core_conn *c)
{
    return (c->flags & (F_CLOSE_PENDING | F_CLOSE_AFTER_WRITE | F_FREEING)) != 0;
}

static void conn_free(struct core_conn *c, enum conn_close_reason why);
static bool settle(struct core_conn *c);
static void defer_settle(struct core_conn *c);
static void discard(struct core_conn *c);
static void dial_kick(struct conn_dial *d);
static void dial_free(struct core_conn *c);
static void event_cb(struct bufferevent *bev, short what, void *arg);
static void read_cb(struct bufferevent *bev, void *arg);
static void write_cb(struct bufferevent *bev, void *arg);
static bool queue_io(struct core_conn *c, uint32_t want);
static void unqueue_io(struct core_conn *c);
static struct uring_batch *loop_ring(struct loop_conns *lc);

/* Plain sockets read through their own event (c->rev): one readv() into
 * space reserved in the input buffer, where bufferevent_socket would first
 * ask the kernel how much is there (an ioctl per read). Filtered bevs (TLS)
 * and conns still connecting read through the bufferevent. The idle timeout
 * rides on the read event, as the bufferevent's read timeout did. */
static void read_set(struct core_conn *c, bool on)
{
    if (c->flags & F_CONNECTING)
        return; /* reading starts once connected, as the flags then say */
    if (!c->rev) {
        if (on)
            bufferevent_enable(c->bev, EV_READ);
        else
            bufferevent_disable(c->bev, EV_READ);
        return;
    }
    if (!on) {
        event_del(c->rev);
        c->flags &= ~F_WANT_READ;
        return;
    }
    /* No idle timeout is a day-long one that raw_read_cb ignores: going
     * from a timeout to none with event_del + event_add would cost an
     * EPOLL_CTL_DEL and an EPOLL_CTL_ADD (httpd does it for every request
     * whose body is in), while re-adding a pending event only moves its
     * timer. */
    struct timeval tv = { c->idle_ms / 1000, (c->idle_ms % 1000) * 1000 };
    if (!c->idle_ms)
        tv = (struct timeval){ CONN_NO_IDLE_S, 0 };
    event_add(c->rev, &tv);
}

static void raw_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct core_conn *c = arg;
    if (what & EV_TIMEOUT) {
        if (!c->idle_ms)
            return; /* the stand-in for no timeout (read_set); it re-arms itself */
        event_del(c->rev);
        event_cb(c->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, c);
        return;
    }
    /* io_uring: the read joins the loop's batch, run once this iteration's
     * other callbacks are done */
    struct loop_conns *lc = &per_loop[c->loop->index % CONN_MAX_LOOPS];
    if (loop_ring(lc) && queue_io(c, F_WANT_READ))
        return;
    struct evbuffer *in = conn_in(c);
    /* An empty input (the usual case between requests) would need a fresh
     * CONN_READ_CHUNK chain (a 32 KiB malloc, freed again as soon as the
     * request is consumed): read into the loop's scratch buffer instead and
     * copy what came (a small request gets a small chain). Input still
     * holding a partial request is read into directly. */
    if (evbuffer_get_length(in) == 0 && (lc->scratch || (lc->scratch = malloc(CONN_READ_CHUNK)))) {
        ssize_t n = read(fd, lc->scratch, CONN_READ_CHUNK);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (n <= 0) {
            event_del(c->rev);
            event_cb(c->bev, BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR), c);
            return;
        }
        evbuffer_unfreeze(in, 0);
        int rc = evbuffer_add(in, lc->scratch, (size_t)n);
        evbuffer_freeze(in, 0);
        if (rc < 0) {
            event_del(c->rev);
            event_cb(c->bev, BEV_EVENT_READING | BEV_EVENT_ERROR, c);
            return;
        }
        read_cb(c->bev, c);
        return;
    }
    struct evbuffer_iovec v[2];
    evbuffer_unfreeze(in, 0); /* the bufferevent keeps its input's end frozen */
    int nv = evbuffer_reserve_space(in, CONN_READ_CHUNK, v, 2);
    if (nv < 0) {
        evbuffer_freeze(in, 0);
        event_del(c->rev);
        event_cb(c->bev, BEV_EVENT_READING | BEV_EVENT_ERROR, c);
        return;
    }
    ssize_t n = readv(fd, (struct iovec *)v, nv);
    if (n <= 0)
        evbuffer_freeze(in, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        event_del(c->rev);
        event_cb(c->bev, BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR), c);
        return;
    }
    size_t left = (size_t)n;
    int used = 0;
    for (; used < nv && left > 0; used++) {
        if (v[used].iov_len > left)
            v[used].iov_len = left;
        left -= v[used].iov_len;
    }
    evbuffer_commit_space(in, v, used);
    evbuffer_freeze(in, 0);
    read_cb(c->bev, c);
}

static void raw_read_start(struct core_conn *c)
{
    c->rev = event_new(c->loop->base, c->fd, EV_READ | EV_PERSIST, raw_read_cb, c);
    if (!c->rev) {
        log_warn("conn: no read event, reading through the bufferevent");
        return;
    }
    struct timeval w = { c->write_ms / 1000, (c->write_ms % 1000) * 1000 };
    bufferevent_set_timeouts(c->bev, NULL, c->write_ms ? &w : NULL);
}

/* End-of-iteration I/O.
 *
 * Output on a plain socket is not written when it is appended: the conn
 * goes on its loop's queue and flush_ev, made active then, runs after the
 * callbacks the iteration's epoll_wait woke (libevent runs an event made
 * active during the active pass at the end of the same pass). There each
 * conn's output goes out in one writev(), or, with io_uring, all conns'
 * output in one io_uring_enter together with the reads the iteration's
 * read events asked for. Only what the kernel does not take waits for the
 * socket's write event (the bufferevent's, with its write timeout); that
 * saves the two epoll_ctl calls per reply that arming the write event
 * for every reply costs. */
static void flush_cb(evutil_socket_t fd, short what, void *arg);

static bool queue_io(struct core_conn *c, uint32_t want)
{
    struct loop_conns *lc = &per_loop[c->loop->index % CONN_MAX_LOOPS];
    if (!lc->flush_ev) {
        lc->loop = c->loop;
        lc->flush_ev = event_new(c->loop->base, -1, 0, flush_cb, lc);
        if (!lc->flush_ev)
            return false;
    }
    c->flags |= want;
    if (!(c->flags & F_QUEUED)) {
        c->flags |= F_QUEUED;
        c->fnext = NULL;
        c->fprev = lc->fq_tail;
        if (lc->fq_tail)
            lc->fq_tail->fnext = c;
        else
            lc->fq_head = c;
        lc->fq_tail = c;
        lc->fq_count++;
    }
    event_active(lc->flush_ev, EV_TIMEOUT, 0); /* no-op when already active */
    return true;
}

static void unqueue_io(struct core_conn *c)
{
    if (!(c->flags & F_QUEUED))
        return;
    struct loop_conns *lc = &per_loop[c->loop->index % CONN_MAX_LOOPS];
    if (c->fprev)
        c->fprev->fnext = c->fnext;
    else
        lc->fq_head = c->fnext;
    if (c->fnext)
        c->fnext->fprev = c->fprev;
    else
        lc->fq_tail = c->fprev;
    c->fnext = c->fprev = NULL;
    lc->fq_count--;
    c->flags &= ~(F_QUEUED | F_WANT_READ | F_WANT_WRITE);
}

static void out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    struct core_conn *c = arg;
    if (info->n_added == 0 || (c->flags & (F_WANT_WRITE | F_FREEING)))
        return;
    if (bufferevent_get_enabled(c->bev) & EV_WRITE)
        return; /* the write event is on it already */
    if (!queue_io(c, F_WANT_WRITE))
        bufferevent_enable(c->bev, EV_WRITE); /* out of memory: the old way */
}

/* Plain socket connected: writes move to the end of the iteration. */
static void out_hook_on(struct core_conn *c)
{
    if (c->flags & (F_OUT_HOOK | F_FILTERED))
        return;
    c->out_cbe = evbuffer_add_cb(conn_out(c), out_cb, c);
    if (!c->out_cbe) {
        bufferevent_enable(c->bev, EV_WRITE);
        return;
    }
    c->flags |= F_OUT_HOOK;
    bufferevent_disable(c->bev, EV_WRITE);
    if (evbuffer_get_length(conn_out(c)) > 0 && !queue_io(c, F_WANT_WRITE))
        bufferevent_enable(c->bev, EV_WRITE);
}

static void out_hook_off(struct core_conn *c)
{
    unqueue_io(c);
    if (!(c->flags & F_OUT_HOOK))
        return;
    evbuffer_remove_cb_entry(conn_out(c), c->out_cbe);
    c->out_cbe = NULL;
    c->flags &= ~F_OUT_HOOK;
}

/* The loop's ring, set up on first use when STACK_IO_URING asks for it.
 * One line in the log either way (per process). */
static struct uring_batch *loop_ring(struct loop_conns *lc)
{
    if (lc->ring || lc->ring_off)
        return lc->ring;
    static atomic_int told;
    if (!uring_wanted()) {
        lc->ring_off = true;
        return NULL;
    }
    lc->slots = malloc((size_t)CONN_BATCH * CONN_READ_CHUNK);
    lc->ring = lc->slots ? uring_new(2 * CONN_BATCH) : NULL;
    if (!lc->ring) {
        int e = lc->slots ? errno : ENOMEM;
        free(lc->slots);
        lc->slots = NULL;
        lc->ring_off = true;
        if (atomic_exchange(&told, 1) == 0)
            log_warn("conn: io_uring unavailable (%s): socket I/O stays on epoll", strerror(e));
        return NULL;
    }
    if (atomic_exchange(&told, 1) == 0)
        log_info("conn: socket I/O batched through io_uring (STACK_IO_URING)");
    return lc->ring;
}

static void ring_drop(struct loop_conns *lc)
{
    log_warn("conn: io_uring submission failed: socket I/O goes back to epoll on this loop");
    uring_free(lc->ring);
    lc->ring = NULL;
    lc->ring_off = true;
}

/* Take up to CONN_BATCH conns off the queue into lc->batch. */
static unsigned gather(struct loop_conns *lc)
{
    unsigned n = 0;
    while (n < CONN_BATCH && lc->fq_head) {
        struct core_conn *c = lc->fq_head;
        uint32_t want = c->flags & (F_WANT_READ | F_WANT_WRITE);
        unqueue_io(c);
        if (!want || (c->flags & (F_FREEING | F_CLOSE_PENDING)))
            continue;
        c->flags |= F_IN_BATCH;
        struct batch_op *op = &lc->batch[n++];
        op->c = c;
        op->want = want;
        op->wres = op->rres = RES_NOT_RUN;
        op->rnv = 0;
        op->wplain = false;
    }
    lc->nbatch = n;
    return n;
}

static void batch_done(struct loop_conns *lc)
{
    for (unsigned i = 0; i < lc->nbatch; i++)
        if (lc->batch[i].c)
            lc->batch[i].c->flags &= ~F_IN_BATCH;
    lc->nbatch = 0;
}

/* After a write of res (bytes or -errno): what the kernel did not take
 * waits for the write event; the daemon hears of progress as from the
 * bufferevent (write_cb once at or under the low-water mark). May free c. */
static void wrote(struct core_conn *c, int res)
{
    size_t left = evbuffer_get_length(conn_out(c));
    if (left > 0) {
        /* a refused write (EAGAIN, or an error the bufferevent's own write
         * reports through event_cb) or a partial one */
        bufferevent_enable(c->bev, EV_WRITE);
        return;
    }
    if (res > 0)
        write_cb(c->bev, c);
}

/* A batch read's result, after the bytes were committed to the input:
 * as raw_read_cb would. May free c. */
static void got(struct core_conn *c, int res)
{
    if (res == RES_NOT_RUN || res == -EAGAIN || res == -EWOULDBLOCK || res == -EINTR)
        return; /* still readable: the read event comes again */
    if (c->flags & (F_PAUSED_USER | F_PAUSED_LIMIT | F_CLOSE_PENDING | F_CLOSE_AFTER_WRITE)) {
        /* paused or closing since the read was queued (a callback earlier
         * in the batch): as if the read had not happened yet, the bytes
         * wait in the input and an EOF or error is read again once
         * resumed (a closing conn no longer reads at all) */
        if (res > 0)
            c->flags |= F_UNREAD;
        return;
    }
    if (res > 0) {
        read_cb(c->bev, c);
        return;
    }
    event_del(c->rev);
    if (res < 0)
        errno = -res;
    event_cb(c->bev, BEV_EVENT_READING | (res == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR), c);
}

/* One evbuffer_write of the output (writev, or sendfile for a file
 * segment); bytes written or -errno. */
static int write_plain(struct core_conn *c)
{
    struct evbuffer *out = conn_out(c);
    evbuffer_unfreeze(out, 1); /* the bufferevent keeps its output's start frozen */
    int w = evbuffer_write(out, c->fd);
    int e = errno;
    evbuffer_freeze(out, 1);
    return w < 0 ? -e : w;
}

/* True when every byte of out is in memory. A file added with
 * evbuffer_add_file (httpd's sendfile path) is a chain whose bytes are
 * not in memory at all: evbuffer_peek returns a pointer into the chain's
 * bookkeeping for it, so handing that to a send would put heap bytes on
 * the wire. libevent has no call that says what a chain is, but it
 * refuses to add a file segment to another buffer by reference: ask that
 * (the probe's reference chains are freed at once). */
static bool out_in_memory(struct loop_conns *lc, struct evbuffer *out)
{
    if (!lc->probe && !(lc->probe = evbuffer_new()))
        return false;
    if (evbuffer_add_buffer_reference(lc->probe, out) == 0) {
        evbuffer_drain(lc->probe, evbuffer_get_length(lc->probe));
        return true;
    }
    evbuffer_free(lc->probe); /* a refused add may leave it half-done: a fresh one next time */
    lc->probe = NULL;
    return false;
}

static void flush_plain(struct loop_conns *lc)
{
    unsigned n = gather(lc);
    for (unsigned i = 0; i < n; i++) {
        struct batch_op *op = &lc->batch[i];
        if (op->c && (op->want & F_WANT_WRITE) && evbuffer_get_length(conn_out(op->c)) > 0)
            wrote(op->c, write_plain(op->c));
        /* a read queued for a ring that since broke: read now */
        if (op->c && (op->want & F_WANT_READ) && event_pending(op->c->rev, EV_READ, NULL))
            raw_read_cb(op->c->fd, EV_READ, op->c);
    }
    batch_done(lc);
}

static void ring_result(void *arg, uint64_t tag, int res)
{
    struct loop_conns *lc = arg;
    struct batch_op *op = &lc->batch[tag >> 1];
    if (tag & 1)
        op->rres = res;
    else
        op->wres = res;
}

static void flush_ring(struct loop_conns *lc)
{
    unsigned n = gather(lc);
    for (unsigned i = 0; i < n; i++) {
        struct batch_op *op = &lc->batch[i];
        struct core_conn *c = op->c;
        struct evbuffer *out = conn_out(c);
        if ((op->want & F_WANT_WRITE) && evbuffer_get_length(out) > 0 && !(op->wplain = !out_in_memory(lc, out))) {
            int nv = evbuffer_peek(out, -1, NULL, op->wv, CONN_SEND_IOV);
            if (nv > CONN_SEND_IOV)
                nv = CONN_SEND_IOV;
            if (nv > 0)
                uring_send(lc->ring, c->fd, &op->wmsg, (struct iovec *)op->wv, nv, (uint64_t)i << 1);
        }
        if (op->want & F_WANT_READ) {
            struct evbuffer *in = conn_in(c);
            if (evbuffer_get_length(in) == 0) {
                op->rv[0].iov_base = lc->slots + (size_t)i * CONN_READ_CHUNK;
                op->rv[0].iov_len = CONN_READ_CHUNK;
                op->rnv = 1;
            } else {
                evbuffer_unfreeze(in, 0); /* the bufferevent keeps its input's end frozen */
                int nv = evbuffer_reserve_space(in, CONN_READ_CHUNK, op->rv, 2);
                evbuffer_freeze(in, 0);
                op->rnv = nv > 0 ? nv : 0;
            }
            if (op->rnv > 0)
                uring_recv(lc->ring, c->fd, &op->rmsg, (struct iovec *)op->rv, op->rnv, ((uint64_t)i << 1) | 1);
        }
    }
    int rc = uring_run(lc->ring, ring_result, lc);
    if (rc < 0 || uring_broken(lc->ring))
        ring_drop(lc);
    /* First the bytes: drain what went out, commit what came in, before
     * any callback can touch a buffer (reserved input space must not move
     * between the receive and its commit). */
    for (unsigned i = 0; i < n; i++) {
        struct batch_op *op = &lc->batch[i];
        struct core_conn *c = op->c;
        if (op->wplain) {
            op->wres = write_plain(c);
        } else if (op->wres > 0) {
            struct evbuffer *out = conn_out(c);
            evbuffer_unfreeze(out, 1); /* the bufferevent keeps its output's start frozen */
            evbuffer_drain(out, (size_t)op->wres);
            evbuffer_freeze(out, 1);
        }
        if (op->rres > 0) {
            struct evbuffer *in = conn_in(c);
            evbuffer_unfreeze(in, 0);
            if (op->rnv == 1) {
                if (evbuffer_add(in, op->rv[0].iov_base, (size_t)op->rres) < 0)
                    op->rres = -ENOMEM;
            } else {
                size_t left = (size_t)op->rres;
                int used = 0;
                for (; used < op->rnv && left > 0; used++) {
                    if (op->rv[used].iov_len > left)
                        op->rv[used].iov_len = left;
                    left -= op->rv[used].iov_len;
                }
                evbuffer_commit_space(in, op->rv, used);
            }
            evbuffer_freeze(in, 0);
        }
    }
    /* Then the callbacks; any of them may free any conn of the batch. */
    for (unsigned i = 0; i < n; i++) {
        struct batch_op *op = &lc->batch[i];
        if (op->c && (op->want & F_WANT_WRITE) && op->wres != RES_NOT_RUN)
            wrote(op->c, op->wres);
        else if (op->c && (op->want & F_WANT_WRITE) && evbuffer_get_length(conn_out(op->c)) > 0)
            bufferevent_enable(op->c->bev, EV_WRITE); /* not sent (ring broke): the write event */
        if (op->c && (op->want & F_WANT_READ))
            got(op->c, op->rres);
    }
    batch_done(lc);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct loop_conns *lc = arg;
    /* Callbacks run here queue more (replies to what was just read): a
     * few rounds, then let the loop look at the sockets again. */
    for (int round = 0; round < 8 && lc->fq_head; round++) {
        if (lc->ring)
            flush_ring(lc);
        else
            flush_plain(lc);
    }
    if (lc->fq_head)
        event_active(lc->flush_ev, EV_TIMEOUT, 0);
}

/* Callback depth is tracked in the high bits so nested brackets work. */
#define DEPTH_SHIFT 24
static inline void enter(struct core_conn *c)
{
    c->flags += 1u << DEPTH_SHIFT;
    c->flags |= F_IN_CB;
}
/* Returns true if the conn was freed. */
static bool leave(struct core_conn *c, enum conn_close_reason why)
{
    c->flags -= 1u << DEPTH_SHIFT;
    if ((c->flags >> DEPTH_SHIFT) != 0)
        return false;
    c->flags &= ~F_IN_CB;
    if (c->flags & F_CLOSE_PENDING) {
        conn_free(c, why);
        return true;
    }
    if (c->flags & F_DRAIN_NOTE)
        defer_settle(c); /* usually pending already; not if it ran (nested loop) under this callback */
    return false;
}

static bool idle(struct core_conn *c)
{
    return !(c->flags & (F_BUSY | F_CONNECTING)) && evbuffer_get_length(conn_out(c)) == 0 &&
           evbuffer_get_length(conn_in(c)) == 0;
}

/* After any event: close if asked to and the output is out, or if the
 * daemon is stopping and this conn has nothing left to do. */
static bool settle(struct core_conn *c)
{
    size_t out = evbuffer_get_length(conn_out(c));
    if ((c->flags & F_CLOSE_AFTER_WRITE) && out == 0 && (c->flags & (F_EOF_WAIT | F_BUSY)) != (F_EOF_WAIT | F_BUSY)) {
        conn_free(c, CONN_CLOSE_LOCAL);
        return true;
    }
    if ((c->flags & F_SHUTDOWN) && idle(c)) {
        conn_free(c, CONN_CLOSE_SHUTDOWN);
        return true;
    }
    if (c->out_limit && out > c->out_limit && !(c->flags & F_PAUSED_LIMIT)) {
        c->flags |= F_PAUSED_LIMIT;
        read_set(c, false);
    }
    return false;
}

static void process(struct core_conn *c)
{
    struct evbuffer *in = conn_in(c);
    c->flags &= ~F_UNREAD;
    if (c->flags & (F_CLOSE_AFTER_WRITE | F_CLOSE_PENDING)) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    enter(c);
    int rc = c->ops->on_read(c);
    if (rc < 0)
        c->flags |= F_CLOSE_PENDING;
    if (leave(c, CONN_CLOSE_LOCAL))
        return;
    c->in_left = evbuffer_get_length(in);
    settle(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct core_conn *c = arg;
    size_t have = evbuffer_get_length(conn_in(c));
    c->bytes_in += have - (c->in_left <= have ? c->in_left : have);
    process(c);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct core_conn *c = arg;
    size_t out = evbuffer_get_length(conn_out(c));
    if (out == 0 && (c->flags & F_OUT_HOOK) && (bufferevent_get_enabled(c->bev) & EV_WRITE))
        bufferevent_disable(c->bev, EV_WRITE); /* new output goes out at the iteration's end again */
    if ((c->flags & F_PAUSED_LIMIT) && out <= c->out_limit / 2) {
        c->flags &= ~F_PAUSED_LIMIT;
        if (!(c->flags & (F_PAUSED_USER | F_CLOSE_AFTER_WRITE))) {
            read_set(c, true);
            if (evbuffer_get_length(conn_in(c)) > 0) {
                process(c); /* requests that waited behind the limit */
                return;
            }
        }
    }
    if (out == 0 && c->ops->on_drained && !(c->flags & F_CLOSE_PENDING)) {
        c->flags &= ~F_DRAIN_NOTE; /* this is the drain a direct write noted */
        enter(c);
        c->ops->on_drained(c);
        if (leave(c, CONN_CLOSE_LOCAL))
            return;
    }
    settle(c);
}

/* A socket write never returns 0, but libevent's Linux sendfile path does
 * when sendfile() fails with EAGAIN or EINTR (a file added to the output
 * with evbuffer_add_file), and bufferevent_socket takes that 0 for an EOF:
 * it stops writing and reports BEV_EVENT_WRITING|BEV_EVENT_EOF, and the
 * rest of the file would never go out (the peer waits, then gives up).
 * TCP can say "writable" while sendfile finds no room (socket memory is
 * accounted differently), so writing again at once could spin: try again
 * after a short, growing pause. A source file cut short under sendfile
 * also gives 0, for good: after 100 tries in a row without a byte sent
 * (about 1.7 s) the conn is closed. Returns true when a retry is armed. */
static void wretry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct core_conn *c = arg;
    bufferevent_enable(c->bev, EV_WRITE);
}

static bool write_stalled(struct core_conn *c)
{
    size_t left = evbuffer_get_length(conn_out(c));
    if (left == 0)
        return false;
    if (left != c->wstall_left) {
        c->wstall_left = left;
        c->wstalls = 0;
    }
    if (++c->wstalls > 100)
        return false;
    if (!c->wretry && !(c->wretry = evtimer_new(c->loop->base, wretry_cb, c)))
        return false;
    uint32_t ms = c->wstalls < 20 ? c->wstalls : 20;
    struct timeval tv = { 0, (suseconds_t)ms * 1000 };
    evtimer_add(c->wretry, &tv);
    return true;
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct core_conn *c = arg;
    if ((what & BEV_EVENT_CONNECTED) && (c->flags & F_TLS_HANDSHAKE)) {
        c->flags &= ~F_TLS_HANDSHAKE;
        if (c->ops->on_tls) {
            enter(c);
            c->ops->on_tls(c, true);
            if (leave(c, CONN_CLOSE_LOCAL))
                return;
        }
        settle(c);
        return;
    }
    if ((what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) && (c->flags & F_TLS_HANDSHAKE)) {
        c->flags &= ~F_TLS_HANDSHAKE;
        c->last_error = EVUTIL_SOCKET_ERROR();
        if (c->ops->on_tls) {
            enter(c);
            c->ops->on_tls(c, false);
            c->flags |= F_CLOSE_PENDING;
            leave(c, CONN_CLOSE_ERROR);
            return;
        }
        conn_free(c, CONN_CLOSE_ERROR);
        return;
    }
    if (what & BEV_EVENT_CONNECTED) {
        c->flags &= ~F_CONNECTING;
        if (c->dial && c->dial->ai) { /* the addresses not tried are not needed */
            evutil_freeaddrinfo(c->dial->ai);
            c->dial->ai = c->dial->next = NULL;
        }
        if (c->peer_len == 0) { /* connected by name: now we know to what */
            socklen_t pl = sizeof(c->peer);
            if (getpeername((int)bufferevent_getfd(c->bev), (struct sockaddr *)&c->peer, &pl) == 0)
                c->peer_len = pl;
        }
        c->fd = (int)bufferevent_getfd(c->bev);
        if (c->peer.ss_family == AF_INET || c->peer.ss_family == AF_INET6) {
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        if (!(c->flags & F_FILTERED) && !c->rev) { /* not a TLS handshake: our own connect */
            raw_read_start(c);
            out_hook_on(c);
            if (!(c->flags & (F_PAUSED_USER | F_PAUSED_LIMIT | F_CLOSE_AFTER_WRITE | F_CLOSE_PENDING)))
                read_set(c, true);
        }
        if (c->ops->on_connect) {
            enter(c);
            c->ops->on_connect(c, true);
            if (leave(c, CONN_CLOSE_LOCAL))
                return;
        }
        settle(c);
        return;
    }
    if ((what & (BEV_EVENT_TIMEOUT | BEV_EVENT_ERROR)) && (c->flags & F_CONNECTING) && c->dial && c->dial->next) {
        /* this address did not answer: the next one (from the loop, not
         * from inside the bufferevent's own callback) */
        c->last_error = what & BEV_EVENT_TIMEOUT ? ETIMEDOUT : EVUTIL_SOCKET_ERROR();
        dial_kick(c->dial);
        return;
    }
    if ((what & BEV_EVENT_WRITING) && (what & BEV_EVENT_EOF) && !(c->flags & F_FILTERED)) {
        if (!write_stalled(c))
            conn_free(c, CONN_CLOSE_ERROR); /* no progress for too long: the rest cannot go */
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        conn_free(c, CONN_CLOSE_TIMEOUT);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        c->last_error = EVUTIL_SOCKET_ERROR();
        if ((c->flags & F_CONNECTING) && c->ops->on_connect) {
            c->flags &= ~F_CONNECTING;
            enter(c);
            c->ops->on_connect(c, false);
            c->flags |= F_CLOSE_PENDING;
            leave(c, CONN_CLOSE_ERROR);
            return;
        }
        conn_free(c, CONN_CLOSE_ERROR);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        /* Input before the EOF was already handed to on_read. Let replies
         * to it go out, then close (a client that half-closes still gets
         * its answers). */
        read_set(c, false);
        if (c->ops->on_eof) {
            enter(c);
            bool now = c->ops->on_eof(c);
            if (now)
                c->flags |= F_CLOSE_PENDING;
            if (leave(c, CONN_CLOSE_EOF))
                return;
        }
        if (evbuffer_get_length(conn_out(c)) > 0 || (c->flags & F_BUSY)) {
            c->flags |= F_CLOSE_AFTER_WRITE | F_EOF_WAIT;
            return;
        }
        conn_free(c, CONN_CLOSE_EOF);
    }
}

static struct core_conn *setup(struct core_loop *loop, struct bufferevent *bev, int fd, const struct sockaddr *peer,
                               socklen_t peer_len, const struct conn_ops *ops, void *data)
{
    struct core_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->loop = loop;
    c->bev = bev;
    c->ops = ops;
    c->data = data;
    c->fd = fd;
    if (peer && peer_len <= sizeof(c->peer)) {
        memcpy(&c->peer, peer, peer_len);
        c->peer_len = peer_len;
    }
    c->id = atomic_fetch_add(&next_id, 1) + 1;
    c->created = stats_wall_time();
    bufferevent_setcb(bev, read_cb, write_cb, event_cb, c);
    bufferevent_set_max_single_read(bev, CONN_MAX_SINGLE_READ);
    struct loop_conns *lc = &per_loop[loop->index % CONN_MAX_LOOPS];
    c->next = lc->head;
    if (lc->head)
        lc->head->prev = c;
    lc->head = c;
    lc->count++;
    atomic_fetch_add(&total_current, 1);
    atomic_fetch_add(&total_accepted, 1);
    return c;
}

struct core_conn *conn_new(struct core_loop *loop, int fd, const struct sockaddr *peer, socklen_t peer_len,
                           const struct conn_ops *ops, void *data)
{
    struct bufferevent *bev = bufferevent_socket_new(loop->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        close(fd);
        return NULL;
    }
    struct core_conn *c = setup(loop, bev, fd, peer, peer_len, ops, data);
    if (!c) {
        bufferevent_free(bev);
        return NULL;
    }
    raw_read_start(c);
    out_hook_on(c);
    read_set(c, true);
    return c;
}

struct core_conn *conn_new_bev(struct core_loop *loop, struct bufferevent *bev, const struct sockaddr *peer,
                               socklen_t peer_len, const struct conn_ops *ops, void *data)
{
    struct core_conn *c = setup(loop, bev, (int)bufferevent_getfd(bev), peer, peer_len, ops, data);
    if (!c) {
        bufferevent_free(bev);
        return NULL;
    }
    c->flags |= F_FILTERED;
    if (bufferevent_openssl_get_ssl(bev)) /* accepted TLS (tls_accept_bev) */
        c->flags |= F_TLS;
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    return c;
}

struct core_conn *conn_connect(struct core_loop *loop, const struct sockaddr *sa, socklen_t salen,
                               const struct conn_ops *ops, void *data)
{
    struct bufferevent *bev = bufferevent_socket_new(loop->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!bev)
        return NULL;
    struct core_conn *c = setup(loop, bev, -1, sa, salen, ops, data);
    if (!c) {
        bufferevent_free(bev);
        return NULL;
    }
    atomic_fetch_sub(&total_accepted, 1); /* outgoing: not an accepted connection */
    c->flags |= F_CONNECTING;
    bufferevent_enable(bev, EV_WRITE); /* reading starts once connected */
    if (bufferevent_socket_connect(bev, (struct sockaddr *)sa, (int)salen) < 0) {
        discard(c);
        return NULL;
    }
    c->fd = (int)bufferevent_getfd(bev);
    return c;
}

static void dial_kick(struct conn_dial *d)
{
    struct timeval now = { 0, 0 };
    evtimer_add(d->kick, &now);
}

/* Connect to the next address; none left: the one on_connect(false). */
static void dial_next(struct core_conn *c)
{
    struct conn_dial *d = c->dial;
    while (d->next) {
        struct evutil_addrinfo *a = d->next;
        d->next = a->ai_next;
        evutil_socket_t old = bufferevent_getfd(c->bev);
        if (old >= 0) { /* a fresh socket for each try */
            bufferevent_setfd(c->bev, -1);
            evutil_closesocket(old);
        }
        if (a->ai_addrlen <= sizeof(c->peer)) {
            memcpy(&c->peer, a->ai_addr, a->ai_addrlen);
            c->peer_len = (socklen_t)a->ai_addrlen;
        }
        if (bufferevent_socket_connect(c->bev, a->ai_addr, (int)a->ai_addrlen) == 0) {
            c->fd = (int)bufferevent_getfd(c->bev);
            bufferevent_enable(c->bev, EV_WRITE);
            return;
        }
        c->last_error = errno;
    }
    c->flags &= ~F_CONNECTING;
    if (c->ops->on_connect) {
        enter(c);
        c->ops->on_connect(c, false);
        c->flags |= F_CLOSE_PENDING;
        leave(c, CONN_CLOSE_ERROR);
        return;
    }
    conn_free(c, CONN_CLOSE_ERROR);
}

static void dial_kick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn_dial *d = arg;
    dial_next(d->c);
}

static void dial_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct conn_dial *d = arg;
    d->req = NULL;
    if (!d->c) { /* the conn went while we looked */
        if (res)
            evutil_freeaddrinfo(res);
        free(d);
        return;
    }
    if (result != 0)
        d->gai_err = result;
    d->ai = d->next = result == 0 ? res : NULL;
    dial_kick(d); /* never from inside conn_connect_host: the answer may come at once */
}

static void dial_free(struct core_conn *c)
{
    struct conn_dial *d = c->dial;
    if (!d)
        return;
    c->dial = NULL;
    if (d->kick)
        event_free(d->kick);
    if (d->ai)
        evutil_freeaddrinfo(d->ai);
    d->ai = d->next = NULL;
    d->kick = NULL;
    if (d->req) {
        d->c = NULL; /* the callback frees d */
        evdns_getaddrinfo_cancel(d->req);
        return;
    }
    free(d);
}

struct core_conn *conn_connect_host(struct core_loop *loop, const char *host, int port, const struct conn_ops *ops,
                                    void *data)
{
    struct loop_conns *lc = &per_loop[loop->index % CONN_MAX_LOOPS];
    if (!lc->dns) {
        lc->dns = evdns_base_new(loop->base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (!lc->dns) {
            errno = ENOMEM;
            return NULL;
        }
        const char *hosts = getenv("CORE_HOSTS_FILE");
        if (hosts && *hosts && evdns_base_load_hosts(lc->dns, hosts) != 0)
            log_warn("conn: cannot read hosts file %s (CORE_HOSTS_FILE)", hosts);
    }
    if (!host || !*host || port <= 0 || port > 65535) {
        errno = EINVAL;
        return NULL;
    }
    struct conn_dial *d = calloc(1, sizeof *d);
    struct bufferevent *bev = d ? bufferevent_socket_new(loop->base, -1, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (!bev) {
        free(d);
        errno = ENOMEM;
        return NULL;
    }
    struct core_conn *c = setup(loop, bev, -1, NULL, 0, ops, data);
    if (!c) {
        bufferevent_free(bev);
        free(d);
        errno = ENOMEM;
        return NULL;
    }
    atomic_fetch_sub(&total_accepted, 1);
    c->flags |= F_CONNECTING;
    c->dial = d;
    d->c = c;
    d->kick = evtimer_new(loop->base, dial_kick_cb, d);
    if (!d->kick) {
        discard(c);
        errno = ENOMEM;
        return NULL;
    }
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%d", port);
    struct evutil_addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP, .ai_flags = EVUTIL_AI_ADDRCONFIG
    };
    /* Hands work to the resolver: no blocking lookup on the loop. The
     * callback may run before this returns (numbers, hosts file). */
    d->req = evdns_getaddrinfo(lc->dns, host, portstr, &hints, dial_resolved, d);
    return c;
}

const char *conn_error_str(struct core_conn *c, char *buf, size_t len)
{
    int dns = c->dial && c->dial->gai_err ? c->dial->gai_err : bufferevent_socket_get_dns_error(c->bev);
    if (dns) {
        snprintf(buf, len, "cannot resolve: %s", evutil_gai_strerror(dns));
        return buf;
    }
    if (c->flags & F_TLS) {
        unsigned long e = bufferevent_get_openssl_error(c->bev);
        SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
        long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
        if (v != X509_V_OK) {
            snprintf(buf, len, "certificate verify failed: %s", X509_verify_cert_error_string(v));
            return buf;
        }
        if (e) {
            char tmp[200];
            ERR_error_string_n(e, tmp, sizeof tmp);
            snprintf(buf, len, "tls: %s", tmp);
            return buf;
        }
    }
    snprintf(buf, len, "%s", c->last_error ? strerror(c->last_error) : "connection closed");
    return buf;
}

int conn_start_tls(struct core_conn *c, void *ssl_ctx, bool server, const char *server_name)
{
    if ((c->flags & (F_FILTERED | F_CONNECTING | F_FREEING | F_CLOSE_PENDING)) || !ssl_ctx)
        return -1;
    SSL *ssl = SSL_new(ssl_ctx);
    if (!ssl)
        return -1;
    if (!server && server_name && *server_name) {
        SSL_set_tlsext_host_name(ssl, server_name);
        if (SSL_CTX_get_verify_mode(ssl_ctx) & SSL_VERIFY_PEER)
            SSL_set1_host(ssl, server_name);
    }
    struct bufferevent *under = c->bev;
    /* Writing goes back to the bufferevent (the filter writes through it,
     * behind the plain replies already queued) */
    out_hook_off(c);
    bufferevent_enable(under, EV_WRITE);
    /* Reading moves from our raw event to the filter, which reads the
     * underlying bufferevent (and what is already in its input). */
    if (c->rev) {
        event_free(c->rev);
        c->rev = NULL;
    }
    bufferevent_set_timeouts(under, NULL, NULL);
    struct bufferevent *f = bufferevent_openssl_filter_new(
        c->loop->base, under, ssl, server ? BUFFEREVENT_SSL_ACCEPTING : BUFFEREVENT_SSL_CONNECTING,
        BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!f) {
        SSL_free(ssl);
        raw_read_start(c);
        if (!(c->flags & (F_PAUSED_USER | F_PAUSED_LIMIT | F_CLOSE_AFTER_WRITE)))
            read_set(c, true);
        return -1;
    }
    c->bev = f;
    c->flags |= F_FILTERED | F_TLS | F_TLS_HANDSHAKE;
    c->in_left = 0;
    bufferevent_setcb(f, read_cb, write_cb, event_cb, c);
    bufferevent_set_max_single_read(f, CONN_MAX_SINGLE_READ);
    if (c->out_limit)
        bufferevent_setwatermark(f, EV_WRITE, c->out_limit / 2, 0);
    conn_set_timeouts(c, c->idle_ms, c->write_ms);
    bufferevent_enable(f, EV_WRITE);
    if (!(c->flags & (F_PAUSED_USER | F_PAUSED_LIMIT | F_CLOSE_AFTER_WRITE)))
        read_set(c, true);
    /* The peer's first TLS bytes may already sit in the underlying input
     * (it did not wait for our "proceed"): make sure the filter looks at
     * them even if no new data arrives (deferred: we are inside on_read). */
    if (evbuffer_get_length(bufferevent_get_input(under)) > 0)
        bufferevent_trigger(under, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    return 0;
}

bool conn_is_tls(const struct core_conn *c) { return (c->flags & F_TLS) != 0; }

SSL *conn_ssl(const struct core_conn *c) { return (c->flags & F_TLS) ? bufferevent_openssl_get_ssl(c->bev) : NULL; }

/* Undo setup() for a conn whose start failed: no callback runs. */
static void discard(struct core_conn *c)
{
    static const struct conn_ops none = { .name = "discarded" };
    c->ops = &none;
    int e = errno;
    conn_free(c, CONN_CLOSE_ERROR);
    errno = e;
}

static void conn_free(struct core_conn *c, enum conn_close_reason why)
{
    if (c->flags & F_FREEING)
        return;
    if (c->flags & F_IN_CB) {
        c->flags |= F_CLOSE_PENDING;
        read_set(c, false);
        bufferevent_disable(c->bev, EV_WRITE);
        return;
    }
    c->flags |= F_FREEING;
    if (c->ops->on_close)
        c->ops->on_close(c, why);
    dial_free(c);
    struct loop_conns *lc = &per_loop[c->loop->index % CONN_MAX_LOOPS];
    if (c->prev)
        c->prev->next = c->next;
    else
        lc->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    lc->count--;
    atomic_fetch_sub(&total_current, 1);
    out_hook_off(c);
    if (c->flags & F_IN_BATCH)
        for (unsigned i = 0; i < lc->nbatch; i++)
            if (lc->batch[i].c == c)
                lc->batch[i].c = NULL;
    if (c->rev)
        event_free(c->rev);
    if (c->defer)
        event_free(c->defer);
    if (c->wretry)
        event_free(c->wretry);
    bufferevent_free(c->bev);
    free(c);
}

void conn_close(struct core_conn *c) { conn_free(c, CONN_CLOSE_LOCAL); }

void conn_close_after_write(struct core_conn *c)
{
    c->flags |= F_CLOSE_AFTER_WRITE;
    c->flags &= ~F_EOF_WAIT; /* asked for: close when written, busy or not */
    read_set(c, false);
    if (evbuffer_get_length(conn_out(c)) > 0)
        return; /* write_cb closes once it is out */
    if (c->flags & F_IN_CB)
        conn_free(c, CONN_CLOSE_LOCAL); /* marks it: freed when the callback returns */
    else
        defer_settle(c); /* from a timer, loop_call or work_post: never under the caller */
}

void conn_set_timeouts(struct core_conn *c, uint32_t idle_ms, uint32_t write_ms)
{
    c->idle_ms = idle_ms;
    c->write_ms = write_ms;
    struct timeval r = { idle_ms / 1000, (idle_ms % 1000) * 1000 };
    struct timeval w = { write_ms / 1000, (write_ms % 1000) * 1000 };
    if (!c->rev) {
        bufferevent_set_timeouts(c->bev, idle_ms ? &r : NULL, write_ms ? &w : NULL);
        return;
    }
    bufferevent_set_timeouts(c->bev, NULL, write_ms ? &w : NULL);
    if (event_pending(c->rev, EV_READ, NULL))
        read_set(c, true); /* re-arm with the new idle timeout */
}

void conn_set_output_limit(struct core_conn *c, size_t bytes)
{
    c->out_limit = bytes;
    bufferevent_setwatermark(c->bev, EV_WRITE, bytes / 2, 0);
}

void conn_pause_read(struct core_conn *c)
{
    c->flags |= F_PAUSED_USER;
    read_set(c, false);
}

void conn_resume_read(struct core_conn *c)
{
    c->flags &= ~F_PAUSED_USER;
    if (!(c->flags & (F_PAUSED_LIMIT | F_CLOSE_AFTER_WRITE | F_CLOSE_PENDING))) {
        read_set(c, true);
        if (c->flags & F_UNREAD) /* a batch read it while paused: on_read from the loop */
            defer_settle(c);
    }
}

void conn_kick(struct core_conn *c)
{
    if (evbuffer_get_length(conn_in(c)) > 0 && !(c->flags & (F_PAUSED_USER | F_PAUSED_LIMIT)))
        process(c);
}

size_t conn_write_now(struct core_conn *c, struct evbuffer *src)
{
    struct evbuffer *out = conn_out(c);
    ssize_t n = 0;
    /* with io_uring the end-of-iteration batch sends it with the others */
    if (!(c->flags & (F_FILTERED | F_CONNECTING | F_FREEING)) && c->fd >= 0 && evbuffer_get_length(out) == 0 &&
        !per_loop[c->loop->index % CONN_MAX_LOOPS].ring)
        n = evbuffer_write(src, c->fd); /* errors surface on the queued write */
    if (evbuffer_get_length(src) > 0)
        evbuffer_add_buffer(out, src);
    else if (n > 0 && c->ops->on_drained && evbuffer_get_length(out) == 0) {
        /* All of it went straight to the socket: no write event will say
         * the output drained, so say it from the loop (never under the
         * caller, which may be inside on_read or hold its own locks). */
        c->flags |= F_DRAIN_NOTE;
        defer_settle(c);
    }
    return n > 0 ? (size_t)n : 0;
}

bool conn_io_batched(const struct core_conn *c)
{
    if (!(c->flags & F_OUT_HOOK))
        return false;
    struct loop_conns *lc = &per_loop[c->loop->index % CONN_MAX_LOOPS];
    return loop_ring(lc) != NULL;
}

void conn_loop_io_counters(const struct core_loop *loop, uint64_t *batches, uint64_t *ops)
{
    struct loop_conns *lc = &per_loop[loop->index % CONN_MAX_LOOPS];
    *batches = *ops = 0;
    if (lc->ring)
        uring_counters(lc->ring, batches, ops);
}

void conn_set_busy(struct core_conn *c, bool busy)
{
    if (busy) {
        c->flags |= F_BUSY;
        return;
    }
    c->flags &= ~F_BUSY;
    if (!(c->flags & F_IN_CB))
        defer_settle(c); /* may close: not under the caller (a timer, loop_call, work_post) */
}

/* The deferred settle: runs from the loop once the caller has returned. */
static void defer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct core_conn *c = arg;
    if (c->flags & F_IN_CB)
        return; /* a callback is running (nested loop): its leave() settles */
    if (c->flags & F_CLOSE_PENDING) {
        conn_free(c, CONN_CLOSE_LOCAL);
        return;
    }
    if (c->flags & F_DRAIN_NOTE) {
        c->flags &= ~F_DRAIN_NOTE;
        /* Output added since then reports its own drain, from the write
         * that empties it. */
        if (evbuffer_get_length(conn_out(c)) == 0 && c->ops->on_drained) {
            enter(c);
            c->ops->on_drained(c);
            if (leave(c, CONN_CLOSE_LOCAL))
                return;
        }
    }
    if ((c->flags & F_UNREAD) && !(c->flags & (F_PAUSED_USER | F_PAUSED_LIMIT))) {
        read_cb(c->bev, c);
        return;
    }
    settle(c);
}

static void defer_settle(struct core_conn *c)
{
    if (c->flags & F_FREEING)
        return;
    if (!c->defer) {
        c->defer = event_new(c->loop->base, -1, 0, defer_cb, c);
        if (!c->defer) { /* out of memory: no safe deferral; mark it and let the next event settle */
            log_warn("conn: cannot defer a settle (out of memory)");
            return;
        }
    }
    if (!event_pending(c->defer, EV_TIMEOUT, NULL))
        event_active(c->defer, EV_TIMEOUT, 0);
}

const char *conn_peer_str(const struct core_conn *c, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN];
    if (c->peer.ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)&c->peer;
        inet_ntop(AF_INET, &s->sin_addr, host, sizeof(host));
        snprintf(buf, len, "%s:%u", host, ntohs(s->sin_port));
    } else if (c->peer.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)&c->peer;
        inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%u", host, ntohs(s->sin6_port));
    } else {
        snprintf(buf, len, "unix");
    }
    return buf;
}

void conn_shutdown_loop(struct core_loop *loop)
{
    struct loop_conns *lc = &per_loop[loop->index % CONN_MAX_LOOPS];
    for (struct core_conn *c = lc->head; c; c = c->next)
        c->flags |= F_SHUTDOWN;
    /* Closing one conn may close others (a proxy's backend), so rescan
     * from the head after each close. */
    bool again = true;
    while (again) {
        again = false;
        for (struct core_conn *c = lc->head; c; c = c->next) {
            if (idle(c) && !(c->flags & F_IN_CB)) {
                conn_free(c, CONN_CLOSE_SHUTDOWN);
                again = true;
                break;
            }
        }
    }
}

void conn_close_all_on_loop(struct core_loop *loop)
{
    struct loop_conns *lc = &per_loop[loop->index % CONN_MAX_LOOPS];
    while (lc->head)
        conn_free(lc->head, CONN_CLOSE_SHUTDOWN);
}

/* conn's part in the loops' life (see loop_layer): drain on a graceful
 * stop, close what is left at its end, free the resolver with the loop. */
static const struct loop_layer conn_layer = {
    .name = "conn",
    .loop_stopping = conn_shutdown_loop,
    .loop_busy = conn_loop_current,
    .loop_abort = conn_close_all_on_loop,
    .loop_release = conn_loop_cleanup,
};

__attribute__((constructor)) static void conn_register_layer(void) { loop_add_layer(&conn_layer); }

void conn_loop_cleanup(struct core_loop *loop)
{
    struct loop_conns *lc = &per_loop[loop->index % CONN_MAX_LOOPS];
    if (lc->dns) {
        evdns_base_free(lc->dns, 1); /* 1: fail what is pending (nothing: the conns are gone) */
        lc->dns = NULL;
    }
    free(lc->scratch);
    lc->scratch = NULL;
    if (lc->flush_ev)
        event_free(lc->flush_ev);
    lc->flush_ev = NULL;
    lc->fq_head = lc->fq_tail = NULL;
    lc->fq_count = 0;
    uring_free(lc->ring);
    lc->ring = NULL;
    lc->ring_off = false;
    free(lc->slots);
    lc->slots = NULL;
    if (lc->probe)
        evbuffer_free(lc->probe);
    lc->probe = NULL;
}
