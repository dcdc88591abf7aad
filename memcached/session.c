/* session: one memcached client connection: the state machine that reads
 * requests, hands them to the protocol parsers and then to the command
 * files, reads data blocks into their items and sends the replies.
 *
 * One enum of states (enum mc_sess_state in session.h) and one driver
 * (on_read):
 *
 *   MC_SESS_CMD      waiting for a request (line or binary header)
 *   MC_SESS_NREAD    copying a storage command's data block into its item
 *   MC_SESS_SWALLOW  skipping the data block of a refused storage command
 *
 * The protocol is picked from the first byte (0x80 = binary). Replies
 * collect in the session's own flat buffer and go to the socket when
 * on_read has run every buffered request (flush_out), so a pipeline of
 * requests costs one write and no allocation; past 4 MB of unread replies
 * we stop taking requests until the client catches up.
 *
 * What each command does is in cmd_text.c, cmd_meta.c and cmd_bin.c; this
 * file knows nothing of the store beyond allocating and freeing an item. */
#include "memcached/session.h"
#include "memcached/extstore.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/log.h"
#include "common/tls.h"
#include "common/listen.h"
#include "common/loop.h"
#include "memcached/auth.h"
#include "memcached/proto.h"
#include "memcached/udp.h"
#include "memcached/watch.h"

/* ------------------------------------------------------------------ */
/* output helpers */

/* The reply buffer (struct mc_obuf). flush_out sends it straight from
 * here; when the kernel does not take it all, the rest is handed to the
 * socket's queue by reference (no copy), the queue frees it once sent
 * (ob_release) and the session starts a new one. */

#define OB_MIN 2048         /* first size */
#define OB_KEEP (64u << 10) /* larger ones are freed once flushed */

/* Bytes held by every session's reply buffers, including those the
 * sockets' queues still hold (-o read_buf_mem_limit bounds it). */
_Atomic uint64_t mc_out_mem_bytes;
_Atomic uint64_t mc_out_bufs;

static void ob_free(struct mc_obuf *b)
{
    if (!b)
        return;
    atomic_fetch_sub_explicit(&mc_out_mem_bytes, b->cap, memory_order_relaxed);
    atomic_fetch_sub_explicit(&mc_out_bufs, 1, memory_order_relaxed);
    free(b);
}

static void ob_release(const void *data, size_t len, void *extra)
{
    (void)data;
    (void)len;
    ob_free(extra);
}

/* Grow the reply buffer to hold need more bytes. Refused (NULL, and the
 * session marked out_oom so the command's reply becomes memcached's
 * "out of memory" error) when malloc fails or the growth would take all
 * sessions' reply memory past the bound: a "get k k k ..." naming one big
 * item many times must not copy it without limit. The first OB_MIN bytes
 * of a session are not refused by the bound (there is one per connection,
 * and an error reply needs somewhere to go). */
char *mc_out_grow(struct session *s, size_t need)
{
    struct mc_obuf *b = s->ob;
    if (need > SIZE_MAX / 4 - s->olen) {
        s->out_oom = true;
        return NULL;
    }
    size_t want = s->olen + need, old = b ? b->cap : 0, cap = b ? b->cap : OB_MIN;
    while (cap < want)
        cap *= 2;
    uint64_t add = cap - old;
    uint64_t limit = mc_settings.out_mem_limit;
    uint64_t before = atomic_fetch_add_explicit(&mc_out_mem_bytes, add, memory_order_relaxed);
    if (limit && cap > OB_MIN && before + add > limit) {
        atomic_fetch_sub_explicit(&mc_out_mem_bytes, add, memory_order_relaxed);
        s->out_oom = true;
        return NULL;
    }
    struct mc_obuf *nb = realloc(b, sizeof *nb + cap);
    if (!nb) {
        atomic_fetch_sub_explicit(&mc_out_mem_bytes, add, memory_order_relaxed);
        s->out_oom = true;
        return NULL;
    }
    if (!b)
        atomic_fetch_add_explicit(&mc_out_bufs, 1, memory_order_relaxed);
    nb->cap = cap;
    s->ob = nb;
    return nb->data + s->olen;
}

struct evbuffer *mc_out_evb(struct session *s)
{
    if (s->olen) {
        evbuffer_add(s->out, s->ob->data, s->olen);
        s->olen = 0;
    }
    s->out_used = true;
    return s->out;
}

size_t mc_out_queued(struct session *s) { return s->out_used ? evbuffer_get_length(s->out) : 0; }

void mc_out_add(struct session *s, const void *p, size_t n)
{
    char *o = mc_out_reserve(s, n);
    if (!o)
        return;
    memcpy(o, p, n);
    mc_out_commit(s, n);
}

void mc_out_str(struct session *s, const char *str) { mc_out_add(s, str, strlen(str)); }

void mc_out_line(struct session *s, const char *str)
{
    size_t n = strlen(str);
    char *p = mc_out_reserve(s, n + 2);
    if (!p)
        return;
    memcpy(p, str, n);
    p[n] = '\r';
    p[n + 1] = '\n';
    mc_out_commit(s, n + 2);
}

/* After a command whose reply could not be built (s->out_oom): what it
 * wrote is dropped, memcached's error goes in its place, and the
 * connection closes once that is out (the client cannot tell how much of
 * the reply it was owed). bin_op/bin_opaque: the binary request, or
 * bin_op -1 for text. Returns the driver's close code: 1 (after the
 * error) or -1 (not even the error could be queued). */
static int reply_failed(struct session *s, size_t mark, int bin_op, uint32_t bin_opaque)
{
    bool keep = s->out_oom_keep;
    s->out_oom = false;
    s->out_oom_keep = false;
    MC_STAT_ADD(&s->th->st, response_obj_oom, 1);
    if (s->olen > mark)
        s->olen = mark;
    if (bin_op >= 0)
        mc_cmd_bin_oom(s, (uint8_t)bin_op, bin_opaque);
    else
        mc_out_line(s, "SERVER_ERROR out of memory writing get response");
    if (s->out_oom)
        return -1;
    return keep && bin_op < 0 ? 0 : 1; /* out of response objects: memcached goes on */
}

/* ------------------------------------------------------------------ */
/* storage: item allocation, data block, completion */

void mc_sess_begin_swallow(struct session *s, uint64_t n)
{
    s->state = MC_SESS_SWALLOW;
    s->swallow_left = n;
}

/* Drop what has come of a refused data block (len bytes are in `in`). */
static void swallow(struct session *s, struct evbuffer *in, size_t len)
{
    size_t n = len < s->swallow_left ? len : (size_t)s->swallow_left;
    evbuffer_drain(in, n);
    s->swallow_left -= n;
    if (s->swallow_left == 0)
        s->state = MC_SESS_CMD;
}

/* Allocate the item for a storage command and switch to NREAD. On failure
 * the caller replies (unless told not to) and swallows the data. */
bool mc_sess_begin_store(struct session *s, const char *key, size_t nkey, uint32_t flags, int64_t exptime,
                         int64_t bytes, const char **errmsg)
{
    enum mc_alloc_err err = MC_ALLOC_TOO_LARGE;
    mc_item *it = NULL;
    if ((uint64_t)bytes <= mc_settings.item_size_max)
        it = mc_item_alloc(key, nkey, flags, mc_realtime(exptime), (size_t)bytes, &err);
    if (!it) {
        if (err == MC_ALLOC_TOO_LARGE) {
            MC_STAT_ADD(&s->th->st, store_too_large, 1);
            *errmsg = "SERVER_ERROR object too large for cache";
        } else {
            MC_STAT_ADD(&s->th->st, store_no_memory, 1);
            *errmsg = "SERVER_ERROR out of memory storing object";
        }
        if (mc_watching(MC_WATCH_MUTATIONS)) {
            static const uint8_t cmds[] = { [MC_OP_SET] = 2,    [MC_OP_ADD] = 1,     [MC_OP_REPLACE] = 3,
                                            [MC_OP_APPEND] = 4, [MC_OP_PREPEND] = 5, [MC_OP_CAS] = 6 };
            mc_watch_item_store(key, nkey, err == MC_ALLOC_TOO_LARGE ? 4 : 5, cmds[s->op], 0, 0, 0, s->fd);
        }
        return false;
    }
    s->item = it;
    s->nread_left = (uint64_t)bytes;
    s->crlf_got = 0;
    s->state = MC_SESS_NREAD;
    return true;
}

/* The data block is in: check its CRLF and let the protocol finish. */
static void complete_store(struct session *s)
{
    mc_item *it = s->item;
    s->item = NULL;
    s->state = MC_SESS_CMD;
    if (s->crlf[0] != '\r' || s->crlf[1] != '\n') {
        mc_item_free(it);
        MC_STAT_ADD(&s->th->st, protocol_errors, 1);
        if (s->kind == MC_PEND_META || !s->noreply)
            mc_out_line(s, "CLIENT_ERROR bad data chunk");
        return;
    }
    MC_STAT_ADD(&s->th->st, cmd_set, 1);
    MC_SLAB_ADD(s->th, it->clsid, cmd_set, 1);
    if (s->kind == MC_PEND_META)
        mc_cmd_meta_stored(s, it);
    else
        mc_cmd_text_stored(s, it);
}

/* Copy what is buffered of the data block. Returns true when complete. */
static bool do_nread(struct session *s, struct evbuffer *in)
{
    size_t avail = evbuffer_get_length(in);
    if (s->crlf_got == 0 && s->nread_left + 2 <= avail && s->nread_left <= 16384) {
        /* The whole (small) block is here, in one piece: one look, one drain. */
        size_t n = (size_t)s->nread_left;
        struct evbuffer_iovec v;
        const char *p = NULL;
        if (evbuffer_peek(in, (ssize_t)(n + 2), NULL, &v, 1) == 1 && v.iov_len >= n + 2)
            p = v.iov_base;
        if (p) {
            mc_value_write(s->item, s->item->nbytes - n, p, n);
            s->crlf[0] = p[n];
            s->crlf[1] = p[n + 1];
            evbuffer_drain(in, n + 2);
            s->nread_left = 0;
            s->crlf_got = 2;
            return true;
        }
    }
    if (s->nread_left) {
        size_t n = avail < s->nread_left ? avail : (size_t)s->nread_left;
        while (n) { /* piece by piece: a chunked item's value is not contiguous */
            char *dst;
            size_t k = mc_value_seg(s->item, s->item->nbytes - s->nread_left, &dst);
            if (k > n)
                k = n;
            evbuffer_remove(in, dst, k);
            s->nread_left -= k;
            avail -= k;
            n -= k;
        }
        if (s->nread_left)
            return false;
    }
    size_t c = 2u - s->crlf_got;
    if (c > avail)
        c = avail;
    if (c) {
        evbuffer_remove(in, &s->crlf[s->crlf_got], c);
        s->crlf_got = (uint8_t)(s->crlf_got + c);
    }
    return s->crlf_got == 2;
}

/* ------------------------------------------------------------------ */
/* -vv: memcached's per-command debug lines on stderr ("<fd request",
 * ">fd reply"; for gets ">fd sending key K" then ">fd END"; binary
 * requests and response headers as hex dumps). Each line is one write. */

static inline bool dbg_on(void) { return __builtin_expect(mc_settings.verbose >= 2, 0); }

static void dbg_line(struct session *s, char dir, const char *text, size_t n)
{
    char buf[640];
    if (n > 512)
        n = 512;
    int k = snprintf(buf, sizeof buf, "%c%d %.*s\n", dir, s->fd, (int)n, text);
    if (k > 0)
        fwrite(buf, 1, (size_t)k < sizeof buf ? (size_t)k : sizeof buf - 1, stderr);
}

/* The reply bytes a text command added to the output since mark, as
 * memcached prints them: a single status line, or the keys a get sent.
 * Multi-line replies (stats, dumps) and meta replies other than MN are not
 * printed, as in memcached. */
static void dbg_text_reply(struct session *s, size_t mark, bool meta)
{
    if (!s->ob || s->olen <= mark)
        return;
    const char *p = s->ob->data + mark, *end = s->ob->data + s->olen;
    if ((size_t)(end - p) > 6 && memcmp(p, "VALUE ", 6) == 0) {
        while (end - p > 6 && memcmp(p, "VALUE ", 6) == 0) {
            const char *eol = memchr(p, '\n', (size_t)(end - p));
            if (!eol)
                return;
            const char *key = p + 6, *sp = memchr(key, ' ', (size_t)(eol - key));
            if (!sp)
                return;
            char msg[300];
            int k = snprintf(msg, sizeof msg, "sending key %.*s", (int)(sp - key), key);
            dbg_line(s, '>', msg, (size_t)k < sizeof msg ? (size_t)k : sizeof msg - 1);
            /* skip "key flags bytes [cas]" and the data block */
            const char *f = sp + 1, *b = memchr(f, ' ', (size_t)(eol - f));
            if (!b)
                return;
            uint64_t bytes = strtoull(b + 1, NULL, 10);
            if (bytes > (uint64_t)(end - eol))
                return;
            p = eol + 1 + bytes + 2;
        }
    }
    if (p >= end)
        return;
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol || eol + 1 != end)
        return; /* not one line */
    size_t n = (size_t)(eol - p);
    if (n && p[n - 1] == '\r')
        n--;
    if (meta && !(n == 2 && memcmp(p, "MN", 2) == 0))
        return;
    dbg_line(s, '>', p, n);
}

/* -vv and noreply: memcached prints the reply it did not send
 * (">fd NOREPLY STORED"); the command ran with replies on, so take the
 * reply back out of the output here. */
static void dbg_noreply_reply(struct session *s, size_t mark)
{
    if (!s->ob || s->olen <= mark)
        return;
    const char *p = s->ob->data + mark;
    size_t n = s->olen - mark;
    const char *eol = memchr(p, '\n', n);
    if (eol) {
        size_t ln = (size_t)(eol - p);
        if (ln && p[ln - 1] == '\r')
            ln--;
        char msg[300];
        int k = snprintf(msg, sizeof msg, "NOREPLY %.*s", (int)(ln > 256 ? 256 : ln), p);
        dbg_line(s, '>', msg, (size_t)k < sizeof msg ? (size_t)k : sizeof msg - 1);
    }
    s->olen = mark;
}

static void dbg_hex(struct session *s, char dir, const char *indent, const uint8_t *h)
{
    char buf[128];
    for (int i = 0; i < MC_BIN_HDR; i += 4) {
        int k = snprintf(buf, sizeof buf, "%c%d %s0x%02x 0x%02x 0x%02x 0x%02x\n", dir, s->fd, indent, h[i], h[i + 1],
                         h[i + 2], h[i + 3]);
        if (k > 0)
            fwrite(buf, 1, (size_t)k, stderr);
    }
}

static void dbg_bin_request(struct session *s, const uint8_t *pkt, const struct mc_bin_req *r)
{
    dbg_line(s, '<', "Read binary protocol data:", 26);
    dbg_hex(s, '<', "   ", pkt);
    char msg[400];
    int k = 0;
    switch (r->opcode) {
    case 0x00:
    case 0x09:
    case 0x0c:
    case 0x0d: /* GET, GETQ, GETK, GETKQ */
        k = snprintf(msg, sizeof msg, "GET %.*s", (int)r->keylen, (const char *)r->key);
        break;
    case 0x01:
    case 0x02:
    case 0x03:
    case 0x11:
    case 0x12:
    case 0x13: { /* SET, ADD, REPLACE (+Q) */
        static const char *const names[] = { "SET", "ADD", "REPLACE" };
        int i = (r->opcode & 0x0f) - 1;
        k = snprintf(msg, sizeof msg, "%s %.*s Value len is %u", names[i], (int)r->keylen, (const char *)r->key,
                     (unsigned)r->vlen);
        break;
    }
    default: break;
    }
    if (k > 0)
        dbg_line(s, '<', msg, (size_t)k < sizeof msg ? (size_t)k : sizeof msg - 1);
}

/* The binary responses a request added since mark: header dumps, and an
 * error's message first, as memcached prints them. */
static void dbg_bin_reply(struct session *s, size_t mark)
{
    if (!s->ob || s->olen <= mark)
        return;
    const uint8_t *p = (const uint8_t *)s->ob->data + mark, *end = (const uint8_t *)s->ob->data + s->olen;
    while (end - p >= MC_BIN_HDR) {
        uint16_t status = (uint16_t)(p[6] << 8 | p[7]);
        uint32_t body = (uint32_t)p[8] << 24 | (uint32_t)p[9] << 16 | (uint32_t)p[10] << 8 | p[11];
        if (body > (uint64_t)(end - p) - MC_BIN_HDR)
            return;
        if (status != 0) {
            char msg[300];
            size_t off = (size_t)p[4] + ((size_t)p[2] << 8 | p[3]);
            size_t ml = body > off ? body - off : 0;
            int k = snprintf(msg, sizeof msg, "Writing an error: %.*s", (int)(ml > 256 ? 256 : ml),
                             (const char *)p + MC_BIN_HDR + off);
            dbg_line(s, '>', msg, (size_t)k < sizeof msg ? (size_t)k : sizeof msg - 1);
        }
        dbg_line(s, '>', "Writing bin response:", 21);
        /* memcached dumps a get's header before it fills in the CAS */
        uint8_t h[MC_BIN_HDR];
        memcpy(h, p, MC_BIN_HDR);
        switch (h[1]) {
        case 0x00:
        case 0x09:
        case 0x0c:
        case 0x0d:
        case 0x1d:
        case 0x1e:
        case 0x23:
        case 0x24:
            if (status == 0)
                memset(h + 16, 0, 8);
            break;
        default: break;
        }
        dbg_hex(s, '>', "  ", h);
        p += MC_BIN_HDR + body;
    }
}

/* ------------------------------------------------------------------ */
/* reading requests */

/* One text request: parse its line and run it. len: what in holds. */
static int text_step(struct session *s, struct evbuffer *in, size_t len, bool *progress)
{
    if (__builtin_expect(s->auth_ascii, 0))
        return mc_auth_ascii_step(s, in, len, progress);
    size_t first = len < 4096 ? len : 4096;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)first);
    if (!p)
        return 0;
    struct mc_text_req r;
    enum mc_parse st = mc_text_parse(p, first, &r);
    if (st == MC_PARSE_NEED_MORE) {
        /* No LF in the first 4 KB: look further (up to the line limit). */
        if (len <= first)
            return 0; /* need more */
        size_t more = len < MC_MAX_LINE + 2 ? len : MC_MAX_LINE + 2;
        p = (const char *)evbuffer_pullup(in, (ssize_t)more);
        if (!p)
            return 0;
        st = mc_text_parse(p, more, &r);
        if (st == MC_PARSE_NEED_MORE)
            return 0;
    }
    *progress = true;
    s->c->requests++;
    size_t mark = s->olen;
    if (__builtin_expect(!mc_resp_obj_take(s), 0)) {
        /* No response object for the command: memcached closes the
         * connection, the replies still waiting unsent. */
        MC_STAT_ADD(&s->th->st, response_obj_oom, 1);
        s->olen = 0;
        if (s->out_used)
            evbuffer_drain(s->out, evbuffer_get_length(s->out));
        return -1;
    }
    if (dbg_on()) {
        const char *eol = memchr(p, '\n', r.consumed ? r.consumed : first);
        size_t ln = eol ? (size_t)(eol - p) : 0;
        if (ln && p[ln - 1] == '\r')
            ln--;
        dbg_line(s, '<', p, ln);
    }
    if (st == MC_PARSE_ERROR) {
        MC_STAT_ADD(&s->th->st, protocol_errors, 1);
        if (r.cmd == MC_TXT_GET || r.cmd == MC_TXT_GETS)
            mc_cmd_text_get_refused(s, &r);
        if (!r.noreply)
            mc_out_line(s, r.error);
        if (dbg_on())
            dbg_text_reply(s, mark, false);
        if (r.close || r.consumed == 0)
            return 1;
        evbuffer_drain(in, r.consumed);
        return 0;
    }
    bool dbg_quiet = false;
    if (dbg_on() && r.noreply && r.cmd != MC_TXT_META) {
        dbg_quiet = true; /* run it with its reply, printed and dropped below */
        r.noreply = false;
    }
    int rc = mc_cmd_text(s, &r);
    if (__builtin_expect(s->ext != NULL, 0) && mc_ext_after_cmd(s, mark))
        return 0; /* values on disk: the request stays and runs again (extstore.c) */
    if (dbg_quiet && s->state == MC_SESS_NREAD)
        s->dbg_noreply = true; /* the reply comes with the data block */
    else if (dbg_quiet)
        dbg_noreply_reply(s, mark);
    else if (dbg_on() && r.cmd != MC_TXT_STATS)
        dbg_text_reply(s, mark, r.cmd == MC_TXT_META);
    /* Storage commands: mc_sess_begin_store already copied the key; the line can go. */
    evbuffer_drain(in, r.consumed);
    if (s->out_oom)
        return reply_failed(s, mark, -1, 0);
    return rc;
}

/* One binary request: wait for the whole packet, then run it. */
static int bin_step(struct session *s, struct evbuffer *in, size_t len, bool *progress)
{
    if (len < MC_BIN_HDR)
        return 0;
    const uint8_t *p = evbuffer_pullup(in, MC_BIN_HDR);
    struct mc_bin_req r;
    uint32_t max_body = (uint32_t)(mc_settings.item_size_max + MC_KEY_MAX + 64);
    enum mc_parse st = mc_bin_parse_header(p, MC_BIN_HDR, UINT32_MAX, &r);
    if (st == MC_PARSE_ERROR)
        return -1; /* bad magic: the stream is lost */
    if (r.bodylen > max_body) {
        /* Too big for any item: refuse without buffering it. */
        *progress = true;
        mc_cmd_bin_error(s, r.opcode, r.opaque, MC_BIN_E2BIG);
        evbuffer_drain(in, MC_BIN_HDR);
        mc_sess_begin_swallow(s, r.bodylen);
        return 0;
    }
    if (len < r.consumed)
        return 0;
    p = evbuffer_pullup(in, (ssize_t)r.consumed);
    if (mc_bin_parse(p, r.consumed, max_body, &r) != MC_PARSE_OK)
        return -1;
    *progress = true;
    s->c->requests++;
    size_t mark = s->olen;
    if (dbg_on())
        dbg_bin_request(s, p, &r);
    int rc = mc_cmd_bin(s, &r);
    if (__builtin_expect(s->ext != NULL, 0) && mc_ext_after_cmd(s, mark))
        return 0; /* values on disk: the request stays and runs again (extstore.c) */
    if (dbg_on())
        dbg_bin_reply(s, mark);
    if (s->out_oom) {
        evbuffer_drain(in, r.consumed);
        return reply_failed(s, mark, r.opcode, r.opaque);
    }
    evbuffer_drain(in, r.consumed);
    if (rc == 0 && s->bin_close)
        rc = 1;
    return rc;
}

/* One step of the driver for a session with no stream of its own: udp.c
 * runs each datagram's requests through it. What is at the front of in
 * (a data block, or a request of s->proto) runs; its replies stay in
 * s->ob / s->out for the caller. Returns 0 to go on, 1 or -1 when the
 * request asked to close; *progress is false when in holds only part of
 * a request. */
int mc_sess_step(struct session *s, struct evbuffer *in, bool *progress)
{
    size_t len = evbuffer_get_length(in);
    *progress = false;
    if (len == 0)
        return 0;
    if (s->state == MC_SESS_NREAD) {
        if (!do_nread(s, in))
            return 0;
        *progress = true;
        size_t mark = s->olen;
        complete_store(s);
        if (s->dbg_noreply) { /* -vv: the reply was made to be printed, not sent */
            s->dbg_noreply = false;
            dbg_noreply_reply(s, mark);
        }
        if (s->out_oom)
            return reply_failed(s, mark, -1, 0);
        return 0;
    }
    if (s->state == MC_SESS_SWALLOW) {
        swallow(s, in, len);
        *progress = true;
        return 0;
    }
    return s->proto == MC_PROTO_BIN ? bin_step(s, in, len, progress) : text_step(s, in, len, progress);
}

/* ------------------------------------------------------------------ */
/* conn ops */

/* Hand the replies to the socket: on a plain socket written straight away
 * when nothing is queued before them, so a request/reply round trip costs
 * one send and no epoll changes or allocation (conn_write_now() for a flat
 * buffer; a core call for it has been requested). What the kernel does not
 * take is queued on the conn, by reference (see struct mc_obuf). TLS
 * sessions always go through the bufferevent. */
static void flush_out(struct session *s)
{
    if (s->resp_objs) {
        s->th->resp_objs -= s->resp_objs;
        s->resp_objs = 0;
    }
    size_t queued = mc_out_queued(s);
    if (s->olen + queued == 0)
        return;
    MC_STAT_ADD(&s->th->st, bytes_written, s->olen + queued);
    struct core_conn *c = s->c;
    if (conn_io_batched(c)) {
        /* The loop's io_uring batch sends every conn's replies at the end
         * of the iteration in one system call: the reply joins it (copied
         * when small, so our buffer is kept; else handed over). */
        if (!queued && s->ob && s->olen <= 16384) {
            evbuffer_add(conn_out(c), s->ob->data, s->olen);
            s->olen = 0;
        } else if (!queued && s->ob) {
            struct mc_obuf *b = s->ob;
            size_t n = s->olen;
            s->olen = 0;
            if (evbuffer_add_reference(conn_out(c), b->data, n, ob_release, b) == 0)
                s->ob = NULL;
            else
                evbuffer_add(conn_out(c), b->data, n);
        } else {
            evbuffer_add_buffer(conn_out(c), mc_out_evb(s));
        }
    } else if (queued || s->tls || evbuffer_get_length(conn_out(c)) > 0) {
        conn_write_now(c, mc_out_evb(s));
    } else {
        struct mc_obuf *b = s->ob;
        size_t n = s->olen;
        ssize_t w = send(c->fd, b->data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0)
            w = 0; /* EAGAIN; an error surfaces on the queued write */
        s->olen = 0;
        if ((size_t)w < n) {
            if (evbuffer_add_reference(conn_out(c), b->data + w, n - (size_t)w, ob_release, b) == 0)
                s->ob = NULL; /* the queue owns it now */
            else
                evbuffer_add(conn_out(c), b->data + w, n - (size_t)w);
        }
    }
    s->out_used = false; /* conn_write_now took all of out */
    if (s->ob && s->ob->cap > OB_KEEP) {
        ob_free(s->ob);
        s->ob = NULL;
    }
}

/* Replies waiting for the client; above this we stop reading requests
 * (the conn's output limit pauses the socket until it drains). */
#define SESSION_OUT_LIMIT (4u << 20)

/* ------------------------------------------------------------------ */
/* metadump: streamed in pieces */

#define DUMP_PIECE 500             /* items per class-lock hold */
#define DUMP_PIECES_PER_RUN 8      /* then other connections get the loop */
#define DUMP_OUT_HIGH (256u << 10) /* wait while this much is unsent */

static void run_later(struct session *s, long usec);

void mc_sess_begin_dump(struct session *s, struct mc_dump *d)
{
    s->dump = d;
    s->state = MC_SESS_DUMP;
}

/* Write some more of the dump. Returns true once it is finished (END
 * queued, state back to CMD); otherwise it has asked to run again, soon
 * or once the client has read what is queued. */
static bool dump_pump(struct session *s)
{
    for (int i = 0; i < DUMP_PIECES_PER_RUN; i++) {
        if (mc_out_queued(s) + evbuffer_get_length(conn_out(s->c)) > DUMP_OUT_HIGH) {
            run_later(s, 2000); /* the client reads slowly: look again in 2 ms */
            return false;
        }
        if (mc_dump_step(s->dump, mc_out_evb(s), DUMP_PIECE)) {
            free(s->dump);
            s->dump = NULL;
            s->state = MC_SESS_CMD;
            mc_out_add(s, "END\r\n", 5);
            return true;
        }
    }
    run_later(s, 0);
    return false;
}

/* ------------------------------------------------------------------ */
/* running again from the loop */

static void flush_out(struct session *s);

/* -R: after reqs_per_event requests in one go, a connection lets the
 * loop's other connections run; a metadump does the same between pieces.
 * This timer brings the session back for what it still has to do. */
static void run_again(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct session *s = arg;
    if (s->auth_wait) {
        s->auth_wait = false;
        conn_resume_read(s->c);
    }
    if (s->state == MC_SESS_DUMP) {
        bool done = dump_pump(s);
        flush_out(s);
        if (!done)
            return;
    }
    conn_kick(s->c); /* requests that came in behind */
}

static void run_later(struct session *s, long usec)
{
    if (!s->yield_ev) {
        s->yield_ev = evtimer_new(s->c->loop->base, run_again, s);
        if (!s->yield_ev)
            return; /* then it goes on when more bytes arrive */
    }
    struct timeval tv = { 0, usec };
    evtimer_add(s->yield_ev, &tv);
}

void mc_sess_auth_failed(struct session *s)
{
    unsigned shift = s->auth_failures < 5 ? s->auth_failures : 5;
    if (s->auth_failures < UINT8_MAX)
        s->auth_failures++;
    s->auth_wait = true;
    conn_pause_read(s->c);
    run_later(s, mc_settings.auth_delay_us << shift);
}

static void yield(struct session *s)
{
    run_later(s, 0);
    MC_STAT_ADD(&s->th->st, conn_yields, 1);
}

static int on_read(struct core_conn *c)
{
    struct session *s = c->data;
    struct evbuffer *in = conn_in(c);
    size_t before = evbuffer_get_length(in);
    int rc = 0;
    bool wrote = false;
    int budget = mc_settings.reqs_per_event > 0 ? mc_settings.reqs_per_event : INT32_MAX;
    s->last_cmd = mc_now();
    s->tls_read = true;
    mc_watch_cfd = s->fd; /* the cfd= of this thread's watch lines */
    /* What the socket's queue holds; only flush_out changes it here. */
    size_t sockq = evbuffer_get_length(conn_out(c));
    for (;;) {
        if (s->auth_wait)
            break; /* after a failed SASL attempt: run_again resumes */
        if (s->state >= MC_SESS_DUMP) {
            if (s->state == MC_SESS_WATCH) {
                evbuffer_drain(in, evbuffer_get_length(in)); /* a watcher takes no more commands */
                break;
            }
            if (s->state == MC_SESS_EXT)
                break; /* extstore reads in flight: read_done runs us again */
            if (!dump_pump(s))
                break; /* it runs again from the loop (run_again) */
            continue;
        }
        size_t len = evbuffer_get_length(in);
        if (len == 0)
            break;
        if (s->olen + mc_out_queued(s) + sockq > SESSION_OUT_LIMIT) {
            flush_out(s);
            sockq = evbuffer_get_length(conn_out(c));
            if (s->olen + mc_out_queued(s) + sockq > SESSION_OUT_LIMIT)
                break; /* the core resumes us once the client has read */
        }
        if (s->state == MC_SESS_NREAD) {
            if (!do_nread(s, in))
                break;
            size_t mark = s->olen;
            bool meta = s->kind == MC_PEND_META;
            complete_store(s);
            if (s->dbg_noreply) {
                s->dbg_noreply = false;
                dbg_noreply_reply(s, mark);
            } else if (dbg_on()) {
                dbg_text_reply(s, mark, meta);
            }
            if (s->out_oom) {
                rc = reply_failed(s, mark, -1, 0);
                break;
            }
            continue;
        }
        if (s->state == MC_SESS_SWALLOW) {
            swallow(s, in, len);
            continue;
        }
        if (s->proto == MC_PROTO_UNKNOWN) {
            unsigned char b;
            evbuffer_copyout(in, &b, 1);
            if (mc_settings.protocol == MC_BIND_ASCII)
                s->proto = MC_PROTO_TEXT;
            else if (mc_settings.protocol == MC_BIND_BINARY)
                s->proto = MC_PROTO_BIN; /* a bad magic byte closes it (bin_step) */
            else
                s->proto = b == MC_BIN_REQ ? MC_PROTO_BIN : MC_PROTO_TEXT;
            if (dbg_on())
                fprintf(stderr, "%d: Client using the %s protocol\n", s->fd,
                        s->proto == MC_PROTO_BIN ? "binary" : "ascii");
            if (mc_settings.sasl && s->proto == MC_PROTO_TEXT) {
                mc_out_line(s, "CLIENT_ERROR unauthenticated");
                rc = 1;
                break;
            }
        }
        if (budget-- <= 0) {
            yield(s);
            break;
        }
        bool progress = false;
        rc = s->proto == MC_PROTO_BIN ? bin_step(s, in, len, &progress) : text_step(s, in, len, &progress);
        if (rc != 0 || !progress)
            break;
    }
    size_t consumed = before - evbuffer_get_length(in);
    MC_STAT_ADD(&s->th->st, bytes_read, consumed);
    wrote = s->olen > 0 || mc_out_queued(s) > 0;
    if (rc != 0 && wrote) {
        /* Closing: leave the last replies to the bufferevent. */
        struct evbuffer *out = mc_out_evb(s);
        MC_STAT_ADD(&s->th->st, bytes_written, evbuffer_get_length(out));
        evbuffer_add_buffer(conn_out(c), out);
        s->out_used = false;
    } else {
        flush_out(s);
    }
    if (rc < 0 && !wrote)
        return -1;
    if (rc != 0)
        conn_close_after_write(c);
    return 0;
}

static void on_close(struct core_conn *c, enum conn_close_reason why)
{
    struct session *s = c->data;
    if (!s)
        return;
    if (why == CONN_CLOSE_TIMEOUT)
        MC_STAT_ADD(&s->th->st, idle_kicks, 1);
    /* A TLS connection that failed before any request came through its
     * handshake: a plain-text client, a refused or missing client
     * certificate (a clean close before anything is no error). */
    if (s->tls && !s->tls_read && why == CONN_CLOSE_ERROR)
        mc_tls_handshake_failed();
    s->th->resp_objs -= s->resp_objs;
    if (s->state == MC_SESS_WATCH)
        mc_watch_stop(s);
    if (mc_watching(MC_WATCH_CONNEVENTS)) {
        /* memcached's reasons: error unless the client hung up or quit,
         * the idle timeout or a shutdown closed it */
        int reason = why == CONN_CLOSE_EOF || s->close_normal ? 1
                     : why == CONN_CLOSE_TIMEOUT              ? 2
                     : why == CONN_CLOSE_SHUTDOWN             ? 3
                                                              : 0;
        mc_watch_conn_event(false, (const struct sockaddr *)&c->peer, c->peer_len,
                            c->peer.ss_family == AF_INET || c->peer.ss_family == AF_INET6, reason, s->fd);
    }
    if (dbg_on())
        fprintf(stderr, "<%d connection closed.\n", s->fd);
    if (s->yield_ev)
        event_free(s->yield_ev);
    if (s->ext)
        mc_ext_session_gone(s);
    if (s->dump) {
        mc_dump_abort(s->dump);
        free(s->dump);
    }
    if (s->item)
        mc_item_free(s->item);
    if (s->out)
        evbuffer_free(s->out);
    ob_free(s->ob); /* one handed to the conn's queue is no longer s->ob */
    struct mc_thread *th = s->th;
    pthread_mutex_lock(&th->sessions_lock);
    if (s->prev)
        s->prev->next = s->next;
    else
        th->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    pthread_mutex_unlock(&th->sessions_lock);
    free(s);
    c->data = NULL;
}

const struct conn_ops mc_conn_ops = {
    .name = "memcached",
    .on_read = on_read,
    .on_close = on_close,
};

/* arg: NULL for a plain listener, else the holder of the TLS context. */
void mc_session_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    struct session *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return;
    }
    s->th = loop->data;
    s->out = evbuffer_new();
    if (!s->out) {
        free(s);
        close(fd);
        return;
    }
    struct core_conn *c;
    void *tls_ctx = arg ? __atomic_load_n((void **)arg, __ATOMIC_ACQUIRE) : NULL;
    if (tls_ctx) {
        struct bufferevent *bev = tls_accept_bev(tls_ctx, loop->base, fd);
        if (!bev) {
            close(fd);
            evbuffer_free(s->out);
            free(s);
            return;
        }
        s->tls = true;
        c = conn_new_bev(loop, bev, sa, salen, &mc_conn_ops, s);
    } else {
        c = conn_new(loop, fd, sa, salen, &mc_conn_ops, s);
    }
    if (!c) {
        evbuffer_free(s->out);
        free(s);
        return;
    }
    s->c = c;
    s->fd = fd;
    s->last_cmd = mc_now();
    s->auth_ascii = mc_settings.auth_file != NULL;
    if (dbg_on())
        fprintf(stderr, "<%d new %s client connection%s\n", fd,
                mc_settings.protocol == MC_BIND_ASCII    ? "ascii"
                : mc_settings.protocol == MC_BIND_BINARY ? "binary"
                                                         : "auto-negotiating",
                mc_settings.protocol == MC_BIND_AUTO ? "" : ".");
    struct mc_thread *th = s->th;
    pthread_mutex_lock(&th->sessions_lock);
    s->next = th->sessions;
    if (s->next)
        s->next->prev = s;
    th->sessions = s;
    pthread_mutex_unlock(&th->sessions_lock);
    conn_set_output_limit(c, 4u << 20);
    if (mc_watching(MC_WATCH_CONNEVENTS))
        mc_watch_conn_event(true, sa, salen, sa && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6), 0, fd);
    if (mc_settings.idle_timeout > 0)
        conn_set_timeouts(c, (uint32_t)mc_settings.idle_timeout * 1000, 0);
}

/* An address as memcached writes it in "stats conns": tcp:1.2.3.4:5,
 * tcp6:[::1]:5, unix:/path ("<AF 1>" for an unnamed unix peer). */
static void addr_text(const struct sockaddr_storage *ss, socklen_t len, char *out, size_t outlen)
{
    char host[INET6_ADDRSTRLEN + 2] = "";
    if (len == 0) {
        snprintf(out, outlen, "?:<AF 0>");
        return;
    }
    switch (ss->ss_family) {
    case AF_INET: {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        snprintf(out, outlen, "tcp:%s:%u", host, ntohs(a->sin_port));
        return;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        snprintf(out, outlen, "tcp6:[%s]:%u", host, ntohs(a->sin6_port));
        return;
    }
    case AF_UNIX: {
        const struct sockaddr_un *a = (const struct sockaddr_un *)ss;
        size_t n = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path) : 0;
        if (n > sizeof a->sun_path)
            n = sizeof a->sun_path;
        n = strnlen(a->sun_path, n);
        if (n < 2)
            snprintf(out, outlen, "unix:<AF %d>", AF_UNIX);
        else
            snprintf(out, outlen, "unix:%.*s", (int)n, a->sun_path);
        return;
    }
    default: snprintf(out, outlen, "?:<AF %d>", ss->ss_family);
    }
}

/* One block per client connection: addr, listen_addr, state,
 * secs_since_last_cmd (memcached's fields; its listening sockets' own
 * entries are not listed: the core does not expose its listeners). */
/* "stats conns": the listening sockets and every client connection, in
 * descriptor order as memcached lists them. */
struct conn_line {
    int fd;
    char text[640];
};
struct conn_lines {
    struct conn_line *v;
    size_t n, cap;
};

static struct conn_line *conn_line_add(struct conn_lines *cl, int fd)
{
    if (cl->n == cl->cap) {
        size_t cap = cl->cap ? cl->cap * 2 : 64;
        struct conn_line *v = realloc(cl->v, cap * sizeof *v);
        if (!v)
            return NULL;
        cl->v = v;
        cl->cap = cap;
    }
    struct conn_line *e = &cl->v[cl->n++];
    e->fd = fd;
    return e;
}

static void listener_line(const struct listen_info *li, void *arg)
{
    if (li->is_admin || li->on_accept != mc_session_accept)
        return; /* the console and metrics are the core's, not memcached's */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char addr[160];
    if (getsockname(li->fd, (struct sockaddr *)&ss, &sl) == 0)
        addr_text(&ss, sl, addr, sizeof addr);
    else
        snprintf(addr, sizeof addr, "?:<AF 0>");
    struct conn_line *e = conn_line_add(arg, li->fd);
    if (e)
        snprintf(e->text, sizeof e->text,
                 "STAT %d:addr %s\r\nSTAT %d:state conn_listening\r\nSTAT %d:secs_since_last_cmd 0\r\n", li->fd, addr,
                 li->fd, li->fd);
}

/* A UDP socket, as memcached lists it: marked UDP, its own address
 * (udp:/udp6:), state conn_read between datagrams. */
static void udp_line(int fd, const void *sa, unsigned salen, uint32_t last_cmd, void *arg)
{
    char addr[160];
    addr_text(sa, (socklen_t)salen, addr, sizeof addr);
    if (memcmp(addr, "tcp", 3) == 0)
        memcpy(addr, "udp", 3);
    uint32_t now = mc_now();
    struct conn_line *e = conn_line_add(arg, fd);
    if (e)
        snprintf(e->text, sizeof e->text,
                 "STAT %d:UDP UDP\r\nSTAT %d:addr %s\r\nSTAT %d:state conn_read\r\nSTAT %d:secs_since_last_cmd %u\r\n",
                 fd, fd, addr, fd, fd, now > last_cmd ? now - last_cmd : 0);
}

static int conn_line_cmp(const void *a, const void *b)
{
    const struct conn_line *x = a, *y = b;
    return (x->fd > y->fd) - (x->fd < y->fd);
}

void mc_session_stats_conns(struct evbuffer *out)
{
    static const char *const states[] = { "conn_parse_cmd", "conn_nread", "conn_swallow", "conn_mwrite", "conn_watch" };
    uint32_t now = mc_now();
    struct conn_lines cl = { 0 };
    listen_foreach(listener_line, &cl);
    mc_udp_foreach(udp_line, &cl);
    for (int i = 0; i < loop_count(); i++) {
        struct core_loop *l = loop_get(i);
        struct mc_thread *th = l ? l->data : NULL;
        if (!th)
            continue;
        pthread_mutex_lock(&th->sessions_lock);
        for (struct session *s = th->sessions; s; s = s->next) {
            char peer[160], local[160];
            int fd = s->fd;
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            addr_text(&s->c->peer, s->c->peer_len, peer, sizeof peer);
            if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
                addr_text(&ss, sl, local, sizeof local);
            else
                snprintf(local, sizeof local, "?:<AF 0>");
            struct conn_line *e = conn_line_add(&cl, fd);
            if (!e)
                break;
            snprintf(e->text, sizeof e->text,
                     "STAT %d:addr %s\r\nSTAT %d:listen_addr %s\r\nSTAT %d:state %s\r\n"
                     "STAT %d:secs_since_last_cmd %u\r\n",
                     fd, peer, fd, local, fd, states[s->state], fd, now > s->last_cmd ? now - s->last_cmd : 0);
        }
        pthread_mutex_unlock(&th->sessions_lock);
    }
    if (cl.n)
        qsort(cl.v, cl.n, sizeof *cl.v, conn_line_cmp);
    for (size_t i = 0; i < cl.n; i++)
        evbuffer_add(out, cl.v[i].text, strlen(cl.v[i].text));
    free(cl.v);
}

void mc_session_reject(int fd, void *arg)
{
    (void)arg;
    static const char msg[] = "ERROR Too many open connections\r\n";
    ssize_t r = send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)r;
}
