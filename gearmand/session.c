/* session: one gearmand connection — the state machine that frames the
 * bytes of a connection into binary packets or admin text lines (one enum
 * of states, one driver), the reply path (output in request order, reply
 * slots held for durable writes), reference counting and the connection's
 * life cycle; with -t N, the job-state lock and the hand-over of replies
 * and conn changes to the loop that owns a conn (nothing here touches
 * another loop's conn). What a packet or line means is cmd_bin.c's and
 * cmd_text.c's business; the job state is jobs.c's. */
#include "gearmand/gearmand.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/line.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/tls.h"
#include "common/work.h"

void *gm_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        log_error("gearmand: out of memory");
        abort();
    }
    return p;
}

/* ---- output ------------------------------------------------------------ */

void gm_send_buf(struct evbuffer *out, uint32_t cmd, int argc, const void *const *args, const size_t *lens)
{
    size_t size = 0;
    for (int i = 0; i < argc; i++)
        size += lens[i] + (i < argc - 1);
    if (size <= 2048) {
        char buf[GM_HEADER_SIZE + 2048];
        size_t n = gm_encode(buf, sizeof buf, GM_RES, cmd, argc, args, lens);
        evbuffer_add(out, buf, n);
        return;
    }
    unsigned char h[GM_HEADER_SIZE];
    gm_encode_header(h, GM_RES, cmd, (uint32_t)size);
    evbuffer_add(out, h, sizeof h);
    for (int i = 0; i < argc; i++) {
        evbuffer_add(out, args[i], lens[i]);
        if (i < argc - 1)
            evbuffer_add(out, "", 1);
    }
}

/* ---- the lock --------------------------------------------------------------- */

static __thread int lock_depth;
/* Loops this thread gave replies to while holding the lock: rung once the
 * lock is released, so one message carries everything made for a loop in
 * this event, and the loop does not wake up only to wait for the lock. */
static __thread struct gm_loop *ring_list[GM_MAX_LOOPS];
static __thread int ring_count;
static void ring_loops(void);

void gm_lock(void)
{
    if (lock_depth++ == 0)
        pthread_mutex_lock(&gm.lock);
}

void gm_unlock(void)
{
    if (--lock_depth == 0) {
        pthread_mutex_unlock(&gm.lock);
        if (ring_count)
            ring_loops();
    }
}

/* ---- batched writes ----------------------------------------------------------
 *
 * Replies are not appended to the conn's output (which would arm a write
 * event per reply: an epoll_ctl to enable it and one to disable it after
 * the write) but to the session's wbuf, under the lock, by whichever loop
 * made them; the session goes on its owner loop's dirty list. The owner
 * flushes that list once per loop iteration: from a flush event activated
 * by the first dirty session of the loop's own making (reads, timers, db
 * results), which runs after every read that iteration dispatched, so
 * replies made for one connection by several reads (a pipelining client's
 * WORK_COMPLETEs from many workers) leave in one write; or from one
 * mailbox message posted by the
 * first other loop that wrote to one of its sessions — so one hop carries
 * every reply made for that loop since its last flush. The flush moves each
 * wbuf into the session's obuf under the lock, then writes outside it
 * (conn_write_now: straight to the socket when nothing is queued), so the
 * loops' system calls run in parallel. */

struct gm_loop {
    struct core_loop *loop;
    struct gm_sess *dirty;  /* under the lock */
    bool flush_pending;     /* flush_ev active (under the lock) */
    bool post_pending;      /* a flush message posted to it (under the lock) */
    struct event *flush_ev; /* on this loop's base */
    struct work_msg msg;    /* the flush message */
    struct gm_sess **batch; /* this loop's thread only */
    size_t cap;
};

/* The message may be posted again only from here: the mailbox reads its
 * next pointer before running it, so a flush from elsewhere (a read on this
 * loop) must not make it postable while it still waits in the mailbox. */
static void flush_msg(struct work_msg *m)
{
    struct gm_loop *L = container_of(m, struct gm_loop, msg);
    gm_lock();
    L->post_pending = false;
    gm_unlock();
    gm_flush_loop(L->loop);
}

static void ring_loops(void)
{
    int n = ring_count;
    ring_count = 0;
    for (int i = 0; i < n; i++)
        work_post_msg(ring_list[i]->loop, &ring_list[i]->msg);
}

static void mark_dirty(struct gm_sess *s)
{
    if (s->dirty || !gm.loops)
        return; /* (no loops: after the stop, nothing is written any more) */
    struct gm_loop *L = &gm.loops[s->loop->index];
    s->dirty = true;
    gm_sess_ref(s);
    s->dirty_next = L->dirty;
    L->dirty = s;
    if (loop_current() == s->loop) {
        if (!L->flush_pending) {
            L->flush_pending = true;
            event_active(L->flush_ev, EV_TIMEOUT, 1);
        }
    } else if (!L->post_pending) {
        L->post_pending = true;
        gm.n.cross_loop_flushes++;
        L->msg.run = flush_msg;
        L->msg.owner = &gm;
        /* posted when this thread lets go of the lock (ring_loops); one
         * slot per loop, and -t is bounded by the table's size */
        ring_list[ring_count++] = L;
    }
}

static uint32_t idle_ms(void);

/* Owner loop, lock held: s's output is all out, so it holds back no worker
 * of its jobs any more and its stall timer goes. */
static void sess_drained(struct gm_sess *s)
{
    s->over_limit = false;
    conn_set_timeouts(s->c, idle_ms(), 0);
    gm_jobs_client_drained(s);
}

void gm_flush_loop(struct core_loop *loop)
{
    if (!gm.loops)
        return;
    struct gm_loop *L = &gm.loops[loop->index];
    size_t n = 0;
    gm_lock();
    for (struct gm_sess *s = L->dirty; s; s = s->dirty_next) {
        if (n == L->cap) {
            L->cap = L->cap ? L->cap * 2 : 64;
            L->batch = realloc(L->batch, L->cap * sizeof *L->batch);
            if (!L->batch) {
                log_error("gearmand: out of memory");
                abort();
            }
        }
        L->batch[n++] = s;
        s->dirty = false;
        if (s->c)
            evbuffer_add_buffer(s->obuf, s->wbuf);
        else
            evbuffer_drain(s->wbuf, evbuffer_get_length(s->wbuf));
    }
    L->dirty = NULL;
    gm_unlock();
    /* Only this loop sets s->c to NULL (on_close), so it is stable here;
     * a write error closes the conn later, from its own event. */
    for (size_t i = 0; i < n; i++) {
        struct gm_sess *s = L->batch[i];
        if (s->c && evbuffer_get_length(s->obuf)) {
            conn_write_now(s->c, s->obuf);
            __atomic_store_n(&s->out_backlog, evbuffer_get_length(conn_out(s->c)), __ATOMIC_RELAXED);
        }
    }
    if (n) {
        gm_lock();
        /* (a write that took everything reports on_drained from the loop) */
        for (size_t i = 0; i < n; i++)
            gm_sess_unref(L->batch[i]);
        gm_unlock();
    }
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gm_loop *L = arg;
    gm_lock();
    L->flush_pending = false;
    gm_unlock();
    gm_flush_loop(L->loop);
}

void gm_sessions_init(void)
{
    /* The critical sections are short (a packet's bookkeeping): spin a
     * little before sleeping in the kernel. */
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&gm.lock, &attr);
    pthread_mutexattr_destroy(&attr);
    gm.nloops = loop_count();
    gm.loops = gm_xcalloc((size_t)gm.nloops, sizeof *gm.loops);
    for (int i = 0; i < gm.nloops; i++) {
        struct gm_loop *L = &gm.loops[i];
        L->loop = loop_get(i);
        L->flush_ev = event_new(L->loop->base, -1, 0, on_flush, L);
        if (!L->flush_ev) {
            log_error("gearmand: out of memory");
            abort();
        }
    }
}

/* After the loops stopped: the core ran every message still waiting. */
void gm_sessions_free(void)
{
    if (!gm.loops)
        return;
    work_mailbox_flush(&gm); /* flush messages still waiting */
    for (int i = 0; i < gm.nloops; i++) {
        struct gm_loop *L = &gm.loops[i];
        gm_flush_loop(L->loop);
        if (L->flush_ev)
            event_free(L->flush_ev);
        free(L->batch);
    }
    free(gm.loops);
    gm.loops = NULL;
    gm.nloops = 0;
}

/* Close after what is queued went out, ours included (owner loop). */
static void close_after_write(struct gm_sess *s)
{
    if (evbuffer_get_length(s->wbuf)) {
        evbuffer_add_buffer(s->obuf, s->wbuf);
        conn_write_now(s->c, s->obuf);
    }
    conn_close_after_write(s->c);
}

struct evbuffer *gm_sess_out(struct gm_sess *s)
{
    if (!s->c)
        return NULL;
    if (!s->slot_tail) {
        mark_dirty(s);
        return s->wbuf;
    }
    if (!s->slot_tail->ready) {
        /* Output after a held reply queues behind it. */
        struct gm_slot *open = gm_xcalloc(1, sizeof *open);
        open->buf = evbuffer_new();
        open->ready = true;
        s->slot_tail->next = open;
        s->slot_tail = open;
    }
    return s->slot_tail->buf;
}

static uint32_t client_stall_ms(void)
{
    return gm.cfg.client_stall_timeout > 0 ? (uint32_t)gm.cfg.client_stall_timeout * 1000 : 0;
}

static uint32_t idle_ms(void) { return gm.cfg.idle_timeout > 0 ? (uint32_t)gm.cfg.idle_timeout * 1000 : 0; }

static bool sess_in_flight(struct gm_sess *s);

/* On s's owner loop, lock held: make its conn match the session's state. */
static void apply_now(struct gm_sess *s, unsigned what)
{
    if (!s->c)
        return;
    if (what & GM_APPLY_READ) {
        if (s->held_paused || s->throttled)
            conn_pause_read(s->c);
        else {
            conn_resume_read(s->c);
            conn_kick(s->c); /* requests already buffered */
        }
    }
    if (s->c && (what & GM_APPLY_TIMEOUTS))
        conn_set_timeouts(s->c, idle_ms(), s->over_limit ? client_stall_ms() : 0);
    if (s->c && (what & GM_APPLY_BUSY))
        conn_set_busy(s->c, gm.stopping && sess_in_flight(s));
}

static void apply_run(void *arg)
{
    struct gm_sess *s = arg;
    /* Replies made before this was posted go out first: their flush
     * message is posted only when the poster lets go of the lock, after
     * this one, and a conn no longer busy may close once its output is
     * written. */
    gm_flush_loop(s->loop);
    gm_lock();
    unsigned what = s->apply;
    s->apply = 0;
    apply_now(s, what);
    gm_sess_unref(s);
    gm_unlock();
}

void gm_sess_apply(struct gm_sess *s, unsigned what)
{
    if (!s->c)
        return;
    /* Pausing and timeouts are safe inside the bookkeeping of the owner
     * loop; resuming runs the conn's on_read and clearing busy may close
     * it, so those run from a fresh event (a message to the loop). */
    if (loop_current() == s->loop) {
        unsigned now = what & GM_APPLY_TIMEOUTS;
        if ((what & GM_APPLY_READ) && (s->held_paused || s->throttled))
            now |= GM_APPLY_READ;
        if ((what & GM_APPLY_BUSY) && gm.stopping && sess_in_flight(s))
            now |= GM_APPLY_BUSY;
        apply_now(s, now);
        what &= ~now;
        if (!what)
            return;
    }
    if (s->apply) {
        s->apply |= what;
        return;
    }
    s->apply = what;
    gm_sess_ref(s);
    if (work_post(s->loop, apply_run, s) < 0) {
        s->apply = 0;
        gm_sess_unref(s);
    }
}

struct gm_slot *gm_sess_hold(struct gm_sess *s)
{
    if (++s->held >= (uint32_t)gm.cfg.max_held && s->c && !s->held_paused) {
        s->held_paused = true;
        gm.n.queue_paused++;
        gm_sess_apply(s, GM_APPLY_READ);
    }
    struct gm_slot *slot = gm_xcalloc(1, sizeof *slot);
    slot->buf = evbuffer_new();
    if (s->slot_tail)
        s->slot_tail->next = slot;
    else
        s->slot_head = slot;
    s->slot_tail = slot;
    return slot;
}

static void slot_free(struct gm_slot *slot)
{
    evbuffer_free(slot->buf);
    free(slot);
}

void gm_sess_throttle(struct gm_sess *s)
{
    if (s->throttled || !s->c)
        return;
    s->throttled = true;
    gm.n.workers_throttled++;
    gm_sess_apply(s, GM_APPLY_READ);
}

void gm_sess_unthrottle(struct gm_sess *s)
{
    if (!s->throttled)
        return;
    s->throttled = false;
    if (!s->held_paused)
        gm_sess_apply(s, GM_APPLY_READ);
}

bool gm_sess_over_limit(struct gm_sess *s)
{
    if (s->over_limit)
        return true;
    if (!gm.cfg.max_client_output || !s->c ||
        __atomic_load_n(&s->out_backlog, __ATOMIC_RELAXED) + evbuffer_get_length(s->wbuf) <= gm.cfg.max_client_output)
        return false;
    /* From now on its output must move: stuck for --client-stall-timeout,
     * the core closes it (on_close counts it). */
    s->over_limit = true;
    gm_sess_apply(s, GM_APPLY_TIMEOUTS);
    return true;
}

void gm_sess_release(struct gm_sess *s, struct gm_slot *slot)
{
    slot->ready = true;
    s->held--;
    if (s->held_paused && s->held <= (uint32_t)gm.cfg.max_held / 2) {
        s->held_paused = false;
        if (!s->throttled)
            gm_sess_apply(s, GM_APPLY_READ);
    }
    while (s->slot_head && s->slot_head->ready) {
        struct gm_slot *h = s->slot_head;
        s->slot_head = h->next;
        if (!s->slot_head)
            s->slot_tail = NULL;
        if (s->c) {
            evbuffer_add_buffer(s->wbuf, h->buf);
            mark_dirty(s);
        }
        slot_free(h);
    }
}

/* A refcounted copy of one packet's data, referenced by many outputs. */
struct gm_blob {
    int refs;
    size_t len;
    char data[];
};

struct gm_blob *gm_blob_new(const void *data, size_t len)
{
    struct gm_blob *b = malloc(sizeof *b + len);
    if (!b)
        return NULL;
    b->refs = 1;
    b->len = len;
    memcpy(b->data, data, len);
    return b;
}

void gm_blob_unref(struct gm_blob *b)
{
    if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(b);
}

static void blob_release(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    gm_blob_unref(arg);
}

void gm_send_shared(struct gm_sess *s, uint32_t cmd, int argc, const void *const *args, const size_t *lens,
                    struct gm_blob *b)
{
    struct evbuffer *out = gm_sess_out(s);
    if (!out)
        return;
    if (!b) {
        gm_send_buf(out, cmd, argc, args, lens);
        return;
    }
    size_t size = 0;
    for (int i = 0; i < argc; i++)
        size += lens[i] + (i < argc - 1);
    unsigned char h[GM_HEADER_SIZE];
    gm_encode_header(h, GM_RES, cmd, (uint32_t)size);
    evbuffer_add(out, h, sizeof h);
    for (int i = 0; i < argc - 1; i++) {
        evbuffer_add(out, args[i], lens[i]);
        evbuffer_add(out, "", 1);
    }
    __atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
    if (evbuffer_add_reference(out, b->data, b->len, blob_release, b) < 0) {
        __atomic_sub_fetch(&b->refs, 1, __ATOMIC_RELAXED);
        evbuffer_add(out, b->data, b->len);
    }
}

void gm_send(struct gm_sess *s, uint32_t cmd, int argc, const void *const *args, const size_t *lens)
{
    struct evbuffer *out = gm_sess_out(s);
    if (out)
        gm_send_buf(out, cmd, argc, args, lens);
}

void gm_send0(struct gm_sess *s, uint32_t cmd) { gm_send(s, cmd, 0, NULL, NULL); }

void gm_send1(struct gm_sess *s, uint32_t cmd, const void *a, size_t alen)
{
    const void *args[1] = { a };
    size_t lens[1] = { alen };
    gm_send(s, cmd, 1, args, lens);
}

void gm_send_error(struct gm_sess *s, const char *code, const char *text)
{
    const void *args[2] = { code, text };
    size_t lens[2] = { strlen(code), strlen(text) };
    gm.n.errors_sent++;
    gm_send(s, GM_ERROR, 2, args, lens);
}

/* ---- sessions ---------------------------------------------------------- */

/* Busy matters only during a graceful stop: the core keeps a busy conn open
 * (so a client gets the result of its running job, a worker can hand it in)
 * and closes idle ones. A peer's EOF closes the conn at once either way
 * (gm_on_eof), so a worker that dies mid-job is noticed at once. */
static bool sess_in_flight(struct gm_sess *s)
{
    if (!list_empty(&s->running))
        return true;
    struct list_node *pos;
    list_for_each(pos, &s->links)
    {
        struct gm_link *l = container_of(pos, struct gm_link, slink);
        if (l->job->state == GM_JOB_RUNNING)
            return true;
    }
    return false;
}

void gm_sess_update_busy(struct gm_sess *s)
{
    if (s->c && gm.stopping)
        gm_sess_apply(s, GM_APPLY_BUSY);
}

/* Graceful stop began (any thread): mark conns with work in flight busy. */
void gm_stopping(void)
{
    gm_lock();
    gm.stopping = true;
    gm.shutting_down = true;
    struct list_node *pos;
    list_for_each(pos, &gm.sessions)
    {
        struct gm_sess *s = container_of(pos, struct gm_sess, all_link);
        if (s->c && sess_in_flight(s))
            gm_sess_apply(s, GM_APPLY_BUSY);
    }
    gm_unlock();
}

struct gm_sess *gm_sess_new(struct core_conn *c)
{
    struct gm_sess *s = gm_xcalloc(1, sizeof *s);
    s->c = c;
    s->refs = 1;
    s->fd = c->fd;
    conn_peer_str(c, s->peer, sizeof s->peer);
    /* gearmand shows the bare address */
    char *colon = strrchr(s->peer, ':');
    if (colon && s->peer[0] != '[')
        *colon = '\0';
    else if (s->peer[0] == '[') {
        char *rb = strchr(s->peer, ']');
        if (rb) {
            memmove(s->peer, s->peer + 1, (size_t)(rb - s->peer - 1));
            s->peer[rb - s->peer - 1] = '\0';
        }
    }
    s->exceptions = gm.cfg.exceptions;
    s->loop = c->loop;
    s->wbuf = evbuffer_new();
    s->obuf = evbuffer_new();
    if (!s->wbuf || !s->obuf) {
        log_error("gearmand: out of memory");
        abort();
    }
    list_init(&s->running);
    list_init(&s->ready);
    list_init(&s->links);
    list_add_tail(&gm.sessions, &s->all_link);
    gm.nsessions++;
    return s;
}

void gm_sess_ref(struct gm_sess *s) { s->refs++; }

void gm_sess_unref(struct gm_sess *s)
{
    if (--s->refs > 0)
        return;
    while (s->slot_head) {
        struct gm_slot *h = s->slot_head;
        s->slot_head = h->next;
        slot_free(h);
    }
    free(s->abilities);
    free(s->abuckets);
    evbuffer_free(s->wbuf);
    evbuffer_free(s->obuf);
    free(s);
}

/* ---- the connection state machine ------------------------------------------ */

static void send_fatal(struct gm_sess *s, const char *code, const char *text)
{
    gm_send_error(s, code, text);
    close_after_write(s);
}

static uint32_t max_packet(void)
{
    return gm.cfg.max_packet > UINT32_MAX - GM_HEADER_SIZE ? UINT32_MAX - GM_HEADER_SIZE : (uint32_t)gm.cfg.max_packet;
}

/* GM_SESS_BIN: a binary packet starts at the head of the input. */
static enum gm_sess_state read_bin(struct gm_sess *s, struct evbuffer *in)
{
    size_t avail = evbuffer_get_length(in);
    unsigned char hdr[GM_HEADER_SIZE];
    size_t n = evbuffer_copyout(in, hdr, avail < GM_HEADER_SIZE ? avail : GM_HEADER_SIZE);
    struct gm_packet p;
    uint32_t max = max_packet();
    enum gm_parse_status st = gm_parse_header(hdr, n, max, &p);
    if (st == GM_PARSE_NEED_MORE)
        return GM_SESS_WAIT;
    if (st == GM_PARSE_BAD_MAGIC) {
        send_fatal(s, "INVALID_MAGIC", "Packet magic is not \\0REQ");
        return GM_SESS_CLOSING;
    }
    if (st == GM_PARSE_TOO_LARGE) {
        send_fatal(s, "ARGUMENT_TOO_LARGE", "Packet larger than max-packet-size");
        return GM_SESS_CLOSING;
    }
    size_t total = GM_HEADER_SIZE + (size_t)p.size;
    if (avail < total)
        return GM_SESS_WAIT;
    const unsigned char *buf = evbuffer_pullup(in, (ev_ssize_t)total);
    size_t used = 0;
    st = gm_parse_packet(buf, total, max, &p, &used);
    s->c->requests++;
    if (st == GM_PARSE_OK)
        gm_handle_packet(s, &p);
    else if (st == GM_PARSE_UNKNOWN_CMD)
        gm_send_error(s, "INVALID_COMMAND", "Command not expected");
    else
        gm_send_error(s, "INVALID_PACKET", "Packet has fewer arguments than its type needs");
    evbuffer_drain(in, total);
    return GM_SESS_NEXT;
}

/* GM_SESS_TEXT: an admin text line starts at the head of the input. */
static enum gm_sess_state read_text(struct gm_sess *s, struct evbuffer *in)
{
    size_t len, consumed;
    enum line_status ls;
    char *line = line_peek(in, GM_MAX_TEXT_LINE, &len, &consumed, &ls);
    if (ls == LINE_NEED_MORE)
        return GM_SESS_WAIT;
    if (ls == LINE_TOO_LONG) {
        struct evbuffer *out = gm_sess_out(s);
        if (out)
            evbuffer_add_printf(out, "ERR LINE_TOO_LONG Command+line+too+long\r\n");
        close_after_write(s);
        return GM_SESS_CLOSING;
    }
    s->c->requests++;
    int rc = gm_text_line(s, line, len);
    evbuffer_drain(in, consumed);
    if (rc < 0) {
        close_after_write(s);
        return GM_SESS_CLOSING;
    }
    return GM_SESS_NEXT;
}

/* The one driver. Runs every request buffered: a request starting with
 * '\0' is a binary packet, anything else an admin text line (gearmand
 * decides per request the same way). Leaves the session in WAIT (a partial
 * request stays buffered until more bytes come), HELD (reading paused until
 * durable replies drain; gm_sess_release resumes it) or CLOSING. */
static void sess_drive(struct gm_sess *s)
{
    struct evbuffer *in = conn_in(s->c);
    for (;;) {
        switch (s->state) {
        case GM_SESS_WAIT:
        case GM_SESS_NEXT:
            if (!s->c || conn_is_closing(s->c)) {
                s->state = GM_SESS_CLOSING;
                break;
            }
            if (s->held_paused || s->throttled) {
                s->state = GM_SESS_HELD;
                return;
            }
            if (evbuffer_get_length(in) == 0) {
                s->state = GM_SESS_WAIT;
                return;
            }
            unsigned char first;
            evbuffer_copyout(in, &first, 1);
            s->state = first == '\0' ? GM_SESS_BIN : GM_SESS_TEXT;
            break;
        case GM_SESS_BIN:
            s->state = read_bin(s, in);
            if (s->state == GM_SESS_WAIT)
                return;
            break;
        case GM_SESS_TEXT:
            s->state = read_text(s, in);
            if (s->state == GM_SESS_WAIT)
                return;
            break;
        case GM_SESS_HELD:
            if (s->held_paused || s->throttled)
                return;
            s->state = GM_SESS_NEXT;
            break;
        case GM_SESS_CLOSING: return;
        }
    }
}

static int gm_on_read(struct core_conn *c)
{
    struct gm_sess *s = c->data;
    gm_lock();
    if (s && s->state != GM_SESS_CLOSING)
        sess_drive(s);
    gm_unlock();
    /* No flush here: the replies wait for the loop's flush event, which
     * runs after every read of this loop iteration, so replies made for
     * one connection by several reads (WORK_COMPLETEs from many workers
     * for one pipelining client) go out in one write. */
    return 0;
}

static void gm_on_close(struct core_conn *c, enum conn_close_reason why)
{
    struct gm_sess *s = c->data;
    c->data = NULL;
    if (!s)
        return;
    gm_lock();
    if (why == CONN_CLOSE_TIMEOUT && s->over_limit) {
        gm.n.clients_output_dropped++;
        log_warn("gearmand: closed client %s: more than %llu bytes of replies unread for %d s", s->peer,
                 (unsigned long long)gm.cfg.max_client_output, gm.cfg.client_stall_timeout);
    }
    list_del(&s->all_link);
    gm.nsessions--;
    s->state = GM_SESS_CLOSING;
    gm_jobs_forget_sess(s);
    s->c = NULL;
    gm_sess_unref(s);
    gm_unlock();
}

/* A peer that hung up is gone at once, even a busy one during a graceful
 * stop: its job is requeued (worker) or dropped (client) now, not at the
 * end of --grace. */
static bool gm_on_eof(struct core_conn *c)
{
    (void)c;
    return true;
}

/* Its replies all went out: it no longer holds back the workers of its jobs. */
static void gm_on_drained(struct core_conn *c)
{
    struct gm_sess *s = c->data;
    if (!s)
        return;
    __atomic_store_n(&s->out_backlog, 0, __ATOMIC_RELAXED);
    gm_lock();
    if (s->over_limit)
        sess_drained(s);
    gm_unlock();
}

static const struct conn_ops gm_conn_ops = {
    .name = "gearman",
    .on_read = gm_on_read,
    .on_eof = gm_on_eof,
    .on_drained = gm_on_drained,
    .on_close = gm_on_close,
};

/* --keepalive: the kernel probes an idle peer, so a worker or client whose
 * host vanished is noticed (its jobs requeued) without any traffic. */
static void set_keepalive(int fd)
{
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) < 0)
        log_warn("gearmand: SO_KEEPALIVE: %s", strerror(errno));
    const struct {
        int opt, value;
        const char *name;
    } tcp[] = {
        { TCP_KEEPIDLE, gm.cfg.keepalive_idle, "TCP_KEEPIDLE" },
        { TCP_KEEPINTVL, gm.cfg.keepalive_interval, "TCP_KEEPINTVL" },
        { TCP_KEEPCNT, gm.cfg.keepalive_count, "TCP_KEEPCNT" },
    };
    for (size_t i = 0; i < sizeof tcp / sizeof tcp[0]; i++)
        if (tcp[i].value > 0 && setsockopt(fd, IPPROTO_TCP, tcp[i].opt, &tcp[i].value, sizeof tcp[i].value) < 0)
            log_warn("gearmand: %s: %s", tcp[i].name, strerror(errno));
}

void gm_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
    if (gm.cfg.keepalive)
        set_keepalive(fd);
    struct core_conn *c;
    if (gm.tls_ctx) {
        /* --ssl: every connection on the port is TLS (as gearmand 1.1) */
        struct bufferevent *bev = tls_accept_bev(gm.tls_ctx, loop->base, fd);
        if (!bev) {
            close(fd);
            return;
        }
        c = conn_new_bev(loop, bev, sa, salen, &gm_conn_ops, NULL);
    } else
        c = conn_new(loop, fd, sa, salen, &gm_conn_ops, NULL);
    if (!c)
        return;
    gm_lock();
    c->data = gm_sess_new(c);
    gm_unlock();
    /* A peer that sends requests without reading the replies (an ECHO_REQ
     * flood) stops being read once this much output is waiting. */
    conn_set_output_limit(c, (size_t)(gm.cfg.max_packet > 4u << 20 ? gm.cfg.max_packet : 4u << 20) * 2);
    if (idle_ms())
        conn_set_timeouts(c, idle_ms(), 0);
}

void gm_reject(int fd, void *arg)
{
    (void)arg;
    static const char code[] = "SERVER_ERROR", text[] = "Too many connections, try again.";
    const void *args[2] = { code, text };
    size_t lens[2] = { sizeof code - 1, sizeof text - 1 };
    char buf[128];
    size_t n = gm_encode(buf, sizeof buf, GM_RES, GM_ERROR, 2, args, lens);
    ssize_t r = send(fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)r;
}
