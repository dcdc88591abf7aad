/* session: one memcached client connection: the state machine that feeds
 * bytes to the protocol parsers and runs the commands against the store.
 *
 *   SESS_CMD      waiting for a request (line or binary header)
 *   SESS_NREAD    copying a storage command's data block into its item
 *   SESS_SWALLOW  skipping the data block of a refused storage command
 *
 * The protocol is picked from the first byte (0x80 = binary). Replies
 * collect in the session's own flat buffer and go to the socket when
 * on_read has run every buffered request (flush_out), so a pipeline of
 * requests costs one write and no allocation; past 4 MB of unread replies
 * we stop taking requests until the client catches up. */
#include "memcached/session.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/log.h"
#include "common/loop.h"
#include "common/stats.h"
#include "memcached/proto.h"

enum sess_state { SESS_CMD = 0, SESS_NREAD, SESS_SWALLOW };
enum sess_proto { PROTO_UNKNOWN = 0, PROTO_TEXT, PROTO_BIN };
enum pend_kind { PEND_TEXT = 0, PEND_META, PEND_BIN };

struct pending_meta {
    uint64_t flags;
    char opaque[33];
    uint8_t nopaque;
    char mode;
    uint64_t C_cas, E_cas;
    bool key_b64;
    bool key_first;
};

struct session {
    struct core_conn *c;
    struct mc_thread *th;
    enum sess_proto proto;
    enum sess_state state;
    /* NREAD */
    mc_item *item;
    uint64_t nread_left;       /* value bytes still to copy */
    uint8_t crlf_got;          /* bytes of the trailing CRLF seen */
    char crlf[2];
    enum pend_kind kind;
    enum mc_store_op op;
    uint64_t cas;
    bool noreply;
    struct pending_meta pm;
    /* binary pending */
    uint8_t bin_opcode;
    uint32_t bin_opaque;
    bool bin_close;            /* close once the error reply is out */
    /* SWALLOW */
    uint64_t swallow_left;
    bool authenticated;
    uint32_t last_cmd;         /* rel time of the last request */
    /* Replies not yet handed to the socket (flush_out): they collect in ob
     * (olen bytes); output made by evbuffer writers (stats, dumps) goes to
     * out, ob's bytes moved there first so the order holds (out_evb). */
    struct obuf *ob;
    size_t olen;
    struct evbuffer *out;
    bool out_used;             /* out_evb ran since the last flush (else out is empty) */
    struct session *next, *prev;   /* th->sessions */
};

/* ------------------------------------------------------------------ */
/* output helpers */

/* The reply buffer. flush_out sends it straight from here; when the kernel
 * does not take it all, the rest is handed to the socket's queue by
 * reference (no copy), the queue frees it once sent (ob_release) and the
 * session starts a new one. */
struct obuf {
    size_t cap;
    char data[];
};

#define OB_MIN 2048            /* first size */
#define OB_KEEP (64u << 10)    /* larger ones are freed once flushed */

static void ob_release(const void *data, size_t len, void *extra)
{
    (void)data;
    (void)len;
    free(extra);
}

static char *out_grow(struct session *s, size_t need)
{
    struct obuf *b = s->ob;
    if (need > SIZE_MAX / 4 - s->olen)
        return NULL;
    size_t want = s->olen + need, cap = b ? b->cap : OB_MIN;
    while (cap < want)
        cap *= 2;
    struct obuf *nb = realloc(b, sizeof *nb + cap);
    if (!nb)
        return NULL;
    nb->cap = cap;
    s->ob = nb;
    return nb->data + s->olen;
}

/* Room for need bytes at the end of the replies (NULL: out of memory);
 * out_commit(s, n) then keeps the n written. */
static inline char *out_reserve(struct session *s, size_t need)
{
    struct obuf *b = s->ob;
    if (b && need <= b->cap - s->olen)
        return b->data + s->olen;
    return out_grow(s, need);
}

static inline void out_commit(struct session *s, size_t n) { s->olen += n; }

/* The evbuffer for writers that need one; what ob holds goes first. */
static struct evbuffer *out_evb(struct session *s)
{
    if (s->olen) {
        evbuffer_add(s->out, s->ob->data, s->olen);
        s->olen = 0;
    }
    s->out_used = true;
    return s->out;
}

/* Bytes in out (0 without asking when out_evb has not run). */
static inline size_t out_queued(struct session *s)
{
    return s->out_used ? evbuffer_get_length(s->out) : 0;
}

static inline void out_add(struct session *s, const void *p, size_t n)
{
    char *o = out_reserve(s, n);
    if (!o)
        return;
    memcpy(o, p, n);
    out_commit(s, n);
}

static inline void out_str(struct session *s, const char *str)
{
    out_add(s, str, strlen(str));
}

static inline void out_line(struct session *s, const char *str)
{
    size_t n = strlen(str);
    char *p = out_reserve(s, n + 2);
    if (!p)
        return;
    memcpy(p, str, n);
    p[n] = '\r';
    p[n + 1] = '\n';
    out_commit(s, n + 2);
}

/* ------------------------------------------------------------------ */
/* text protocol: gets */

/* Most reply bytes one get line may queue. */
#define MC_GET_REPLY_MAX (256u << 20)

static void text_get(struct session *s, const struct mc_text_req *r)
{
    bool with_cas = r->cmd == MC_TXT_GETS || r->cmd == MC_TXT_GATS;
    bool touch = r->cmd == MC_TXT_GAT || r->cmd == MC_TXT_GATS;
    uint32_t exptime = touch ? mc_realtime(r->exptime) : 0;
    size_t queued = out_queued(s);
    const char *p = r->keys, *end = r->keys + r->keys_len, *key;
    size_t nkey;
    uint64_t hits = 0, misses = 0;
    while (mc_text_next_key(&p, end, &key, &nkey)) {
        if (queued + s->olen > MC_GET_REPLY_MAX) {
            /* A get line naming the same big item thousands of times must
             * not make us buffer gigabytes. */
            out_line(s, "SERVER_ERROR out of memory writing get response");
            goto stats;
        }
        uint64_t hv = mc_hash(key, nkey);
        mc_key_lock(hv);
        mc_item *it = mc_item_find_locked(key, nkey, hv);
        if (!it) {
            mc_key_unlock(hv);
            misses++;
            continue;
        }
        if (touch)
            it->exptime = exptime;
        mc_item_bump(it);
        /* "VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n" in one piece. */
        size_t need = 6 + nkey + 1 + 10 + 1 + 10 + 1 + 20 + 2 + it->nbytes + 2;
        char *o = out_reserve(s, need), *o0 = o;
        if (!o) {
            mc_key_unlock(hv);
            break;
        }
        memcpy(o, "VALUE ", 6);
        o += 6;
        memcpy(o, key, nkey);
        o += nkey;
        *o++ = ' ';
        o += mc_u64toa(it->flags, o);
        *o++ = ' ';
        o += mc_u64toa(it->nbytes, o);
        if (with_cas) {
            *o++ = ' ';
            o += mc_u64toa(mc_settings.no_cas ? 0 : it->cas, o);
        }
        *o++ = '\r';
        *o++ = '\n';
        memcpy(o, mc_value(it), it->nbytes);
        o += it->nbytes;
        mc_key_unlock(hv);
        *o++ = '\r';
        *o++ = '\n';
        out_commit(s, (size_t)(o - o0));
        hits++;
    }
    out_add(s, "END\r\n", 5);
stats:;
    struct mc_thread_stats *st = &s->th->st;
    if (touch) {
        MC_STAT_ADD(st, cmd_touch, hits + misses);
        MC_STAT_ADD(st, touch_hits, hits);
        MC_STAT_ADD(st, touch_misses, misses);
    }
    MC_STAT_ADD(st, cmd_get, hits + misses);
    MC_STAT_ADD(st, get_hits, hits);
    MC_STAT_ADD(st, get_misses, misses);
}

/* ------------------------------------------------------------------ */
/* storage: item allocation, data block, completion */

static void begin_swallow(struct session *s, uint64_t n)
{
    s->state = SESS_SWALLOW;
    s->swallow_left = n;
}

/* Allocate the item for a storage command and switch to NREAD; on failure
 * reply (unless told not to) and swallow the data. Returns false on failure. */
static bool begin_store(struct session *s, const char *key, size_t nkey, uint32_t flags, int64_t exptime,
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
        return false;
    }
    s->item = it;
    s->nread_left = (uint64_t)bytes;
    s->crlf_got = 0;
    s->state = SESS_NREAD;
    return true;
}

static void meta_store_done(struct session *s, enum mc_status st, uint64_t cas, mc_item *it_for_key,
                            const char *key, size_t nkey);

static void complete_store(struct session *s)
{
    mc_item *it = s->item;
    s->item = NULL;
    s->state = SESS_CMD;
    if (s->crlf[0] != '\r' || s->crlf[1] != '\n') {
        mc_item_free(it);
        MC_STAT_ADD(&s->th->st, protocol_errors, 1);
        if (s->kind == PEND_META || !s->noreply)
            out_line(s, "CLIENT_ERROR bad data chunk");
        return;
    }
    MC_STAT_ADD(&s->th->st, cmd_set, 1);
    char key[MC_KEY_MAX + 1];
    size_t nkey = it->nkey;
    memcpy(key, mc_key(it), nkey);
    uint64_t newcas = 0;
    if (s->kind == PEND_META) {
        struct pending_meta *pm = &s->pm;
        enum mc_store_op op = MC_OP_SET;
        switch (pm->mode) {
        case 'E': case 'e': op = MC_OP_ADD; break;
        case 'A': case 'a': op = MC_OP_APPEND; break;
        case 'P': case 'p': op = MC_OP_PREPEND; break;
        case 'R': case 'r': op = MC_OP_REPLACE; break;
        default: op = MC_OP_SET; break;
        }
        uint64_t cmp = (pm->flags & MC_MF('C')) ? pm->C_cas : 0;
        bool invalidate = pm->flags & MC_MF('I');
        enum mc_status st;
        if (invalidate && cmp) {
            /* I: a lower CAS is accepted and the result marked stale. */
            uint64_t hv = mc_hash(key, nkey);
            mc_key_lock(hv);
            mc_item *old = mc_item_find_locked(key, nkey, hv);
            if (old && cmp < old->cas) {
                /* As memcached: the value is replaced but stays stale,
                 * keeps its TTL and whether the win token went out. */
                it->exptime = old->exptime;
                uint8_t token = mc_bits(old) & MC_IT_TOKEN;
                mc_item_link_locked(it, old, hv);
                mc_bits_set(it, (uint8_t)(MC_IT_STALE | token));
                newcas = it->cas;
                st = MC_STORED;
                mc_key_unlock(hv);
            } else {
                mc_key_unlock(hv);
                st = mc_store(it, op == MC_OP_SET ? MC_OP_CAS : op, cmp, &newcas);
            }
        } else if (op == MC_OP_SET && (pm->flags & MC_MF('C'))) {
            st = mc_store(it, MC_OP_CAS, cmp, &newcas);   /* C0 never matches */
        } else {
            st = mc_store(it, op, cmp, &newcas);
        }
        meta_store_done(s, st, newcas, NULL, key, nkey);
        return;
    }
    enum mc_status st = mc_store(it, s->op, s->cas, &newcas);
    if (s->op == MC_OP_CAS) {
        if (st == MC_STORED)
            MC_STAT_ADD(&s->th->st, cas_hits, 1);
        else if (st == MC_EXISTS)
            MC_STAT_ADD(&s->th->st, cas_badval, 1);
        else if (st == MC_NOT_FOUND)
            MC_STAT_ADD(&s->th->st, cas_misses, 1);
    }
    if (s->kind == PEND_BIN) {
        extern void mc_bin_store_reply(struct session *s, enum mc_status st, uint64_t cas);
        mc_bin_store_reply(s, st, newcas);
        return;
    }
    if (s->noreply)
        return;
    switch (st) {
    case MC_STORED: out_add(s, "STORED\r\n", 8); break;
    case MC_EXISTS: out_add(s, "EXISTS\r\n", 8); break;
    case MC_NOT_FOUND: out_add(s, "NOT_FOUND\r\n", 11); break;
    case MC_TOO_LARGE: out_line(s, "SERVER_ERROR object too large for cache"); break;
    case MC_NO_MEMORY: out_line(s, "SERVER_ERROR out of memory storing object"); break;
    default: out_add(s, "NOT_STORED\r\n", 12); break;
    }
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
            memcpy(mc_value(s->item) + (s->item->nbytes - n), p, n);
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
        char *dst = mc_value(s->item) + (s->item->nbytes - s->nread_left);
        evbuffer_remove(in, dst, n);
        s->nread_left -= n;
        avail -= n;
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
/* text protocol: other commands */

static void text_arith(struct session *s, const struct mc_text_req *r)
{
    uint64_t result;
    bool incr = r->cmd == MC_TXT_INCR;
    enum mc_status st = mc_arith(r->key, r->nkey, incr, r->delta, 0, &result, NULL);
    struct mc_thread_stats *ts = &s->th->st;
    if (st == MC_OK) {
        if (incr)
            MC_STAT_ADD(ts, incr_hits, 1);
        else
            MC_STAT_ADD(ts, decr_hits, 1);
    } else if (st == MC_NOT_FOUND) {
        if (incr)
            MC_STAT_ADD(ts, incr_misses, 1);
        else
            MC_STAT_ADD(ts, decr_misses, 1);
    }
    if (r->noreply)
        return;
    switch (st) {
    case MC_OK: {
        char buf[24];
        size_t n = mc_u64toa(result, buf);
        buf[n++] = '\r';
        buf[n++] = '\n';
        out_add(s, buf, n);
        break;
    }
    case MC_NOT_FOUND: out_add(s, "NOT_FOUND\r\n", 11); break;
    case MC_NON_NUMERIC: out_line(s, "CLIENT_ERROR cannot increment or decrement non-numeric value"); break;
    default: out_line(s, "SERVER_ERROR out of memory"); break;
    }
}

static void stats_line_cb(const char *name, const char *value, void *arg)
{
    struct session *s = arg;
    evbuffer_add_printf(out_evb(s), "STAT %s %s\r\n", name, value);
}

static void text_stats(struct session *s, const struct mc_text_req *r)
{
    char group[64];
    size_t n = 0;
    while (n < r->args_len && r->args[n] != ' ' && n < sizeof group - 1) {
        group[n] = r->args[n];
        n++;
    }
    group[n] = 0;
    if (n == 0) {
        stats_render_text(out_evb(s), "");
        out_add(s, "END\r\n", 5);
        return;
    }
    if (strcmp(group, "reset") == 0) {
        mc_stats_reset();
        out_line(s, "RESET");
        return;
    }
    const char *arg = r->args + n, *aend = r->args + r->args_len;
    if (strcmp(group, "detail") == 0) {
        /* Per-prefix detail is not kept: on/off are accepted, dump is empty. */
        while (arg < aend && *arg == ' ')
            arg++;
        size_t an = (size_t)(aend - arg);
        if ((an == 2 && memcmp(arg, "on", 2) == 0) || (an == 3 && memcmp(arg, "off", 3) == 0))
            out_line(s, "OK");
        else if (an == 4 && memcmp(arg, "dump", 4) == 0)
            out_add(s, "END\r\n", 5);
        else
            out_line(s, "CLIENT_ERROR usage: stats detail on|off|dump");
        return;
    }
    if (strcmp(group, "cachedump") == 0) {
        uint32_t id = 0, limit = 0;
        const char *p = arg, *k;
        size_t nk;
        if (!mc_text_next_key(&p, aend, &k, &nk) || !mc_parse_u32(k, nk, &id) ||
            !mc_text_next_key(&p, aend, &k, &nk) || !mc_parse_u32(k, nk, &limit)) {
            out_line(s, "CLIENT_ERROR bad command line");
            return;
        }
        if (id == 0 || id > (uint32_t)mc_nclasses) {
            out_line(s, "CLIENT_ERROR Illegal slab id");
            return;
        }
        mc_cachedump(out_evb(s), (int)id, limit);
        out_add(s, "END\r\n", 5);
        return;
    }
    if (strcmp(group, "sizes") == 0) {
        out_line(s, "STAT sizes_status disabled");
        out_add(s, "END\r\n", 5);
        return;
    }
    if (strcmp(group, "conns") == 0) {
        mc_session_stats_conns(out_evb(s));
        out_add(s, "END\r\n", 5);
        return;
    }
    (void)stats_line_cb;
    if (stats_render_text(out_evb(s), group) < 0) {
        out_line(s, "ERROR");
        return;
    }
    out_add(s, "END\r\n", 5);
}

/* ------------------------------------------------------------------ */
/* meta protocol */

/* O and k of a reply without a hit, in the order the request gave them. */
static void meta_add_opaque_key(struct session *s, char *o, size_t *pos, uint64_t flags, const char *opaque,
                                size_t nopaque, const char *key, size_t nkey, bool b64, bool key_first)
{
    (void)s;
    if (key_first && (flags & MC_MF('O'))) {
        meta_add_opaque_key(s, o, pos, flags & ~MC_MF('O'), opaque, nopaque, key, nkey, b64, false);
        meta_add_opaque_key(s, o, pos, flags & ~MC_MF('k'), opaque, nopaque, key, nkey, b64, false);
        return;
    }
    if ((flags & MC_MF('O')) && nopaque) {
        o[(*pos)++] = ' ';
        o[(*pos)++] = 'O';
        memcpy(o + *pos, opaque, nopaque);
        *pos += nopaque;
    }
    if (flags & MC_MF('k')) {
        o[(*pos)++] = ' ';
        o[(*pos)++] = 'k';
        if (b64) {
            int n = mc_base64_encode(key, nkey, o + *pos, 400);
            if (n > 0)
                *pos += (size_t)n;
        } else {
            memcpy(o + *pos, key, nkey);
            *pos += nkey;
        }
    }
    if (b64 && (flags & MC_MF('k'))) {
        o[(*pos)++] = ' ';
        o[(*pos)++] = 'b';
    }
}

static void meta_simple(struct session *s, const char *code, const struct mc_meta_req *m, bool quiet)
{
    if (quiet)
        return;
    char o[800];
    size_t pos = strlen(code);
    memcpy(o, code, pos);
    meta_add_opaque_key(s, o, &pos, m->flags, m->opaque, m->nopaque, m->rkey, m->nrkey, m->flags & MC_MF('b'),
                        m->key_first);
    o[pos++] = '\r';
    o[pos++] = '\n';
    out_add(s, o, pos);
}

static void meta_store_done(struct session *s, enum mc_status st, uint64_t cas, mc_item *it_for_key,
                            const char *key, size_t nkey)
{
    (void)it_for_key;
    struct pending_meta *pm = &s->pm;
    const char *code;
    switch (st) {
    case MC_STORED: code = "HD"; break;
    case MC_EXISTS: code = "EX"; break;
    case MC_NOT_FOUND: code = "NF"; break;
    case MC_TOO_LARGE: out_line(s, "SERVER_ERROR object too large for cache"); return;
    case MC_NO_MEMORY: out_line(s, "SERVER_ERROR out of memory storing object"); return;
    default: code = "NS"; break;
    }
    if (st == MC_STORED && (pm->flags & MC_MF('q')))
        return;
    char o[800];
    size_t pos = 2;
    memcpy(o, code, 2);
    if (pm->flags & MC_MF('c')) {   /* c0 when nothing was stored, as 1.6.18 */
        o[pos++] = ' ';
        o[pos++] = 'c';
        pos += mc_u64toa(st == MC_STORED ? cas : 0, o + pos);
    }
    meta_add_opaque_key(s, o, &pos, pm->flags, pm->opaque, pm->nopaque, key, nkey, pm->key_b64, pm->key_first);
    o[pos++] = '\r';
    o[pos++] = '\n';
    out_add(s, o, pos);
}

/* Append the return flags of an mg/ma hit in the order they were asked. */
static size_t meta_hit_flags(char *o, const char *line, size_t line_len, mc_item *it, bool fetched_before,
                             const struct mc_meta_req *m, bool with_value_flags)
{
    size_t pos = 0;
    const char *p = line, *end = line + line_len;
    /* skip command and key (and nothing else: mg/ma have no datalen) */
    int skip = 2;
    while (p < end) {
        while (p < end && *p == ' ')
            p++;
        if (p >= end)
            break;
        const char *t = p;
        while (p < end && *p != ' ')
            p++;
        if (skip) {
            skip--;
            continue;
        }
        uint32_t now = mc_now();
        switch (t[0]) {
        case 'c':
            o[pos++] = ' ';
            o[pos++] = 'c';
            pos += mc_u64toa(it->cas, o + pos);
            break;
        case 'f':
            if (!with_value_flags)
                break;
            o[pos++] = ' ';
            o[pos++] = 'f';
            pos += mc_u64toa(it->flags, o + pos);
            break;
        case 'h':
            if (!with_value_flags)
                break;
            memcpy(o + pos, fetched_before ? " h1" : " h0", 3);
            pos += 3;
            break;
        case 'l':
            if (!with_value_flags)
                break;
            o[pos++] = ' ';
            o[pos++] = 'l';
            pos += mc_u64toa(now - it->atime, o + pos);
            break;
        case 's':
            if (!with_value_flags)
                break;
            o[pos++] = ' ';
            o[pos++] = 's';
            pos += mc_u64toa(it->nbytes, o + pos);
            break;
        case 't':
            o[pos++] = ' ';
            o[pos++] = 't';
            if (it->exptime == 0) {
                o[pos++] = '-';
                o[pos++] = '1';
            } else {
                pos += mc_u64toa(it->exptime > now ? it->exptime - now : 0, o + pos);
            }
            break;
        case 'O':
            if (m->nopaque) {
                o[pos++] = ' ';
                memcpy(o + pos, t, (size_t)(p - t));
                pos += (size_t)(p - t);
            }
            break;
        case 'k':
            o[pos++] = ' ';
            o[pos++] = 'k';
            if (m->flags & MC_MF('b')) {
                int n = mc_base64_encode(mc_key(it), it->nkey, o + pos, 400);
                if (n > 0)
                    pos += (size_t)n;
            } else {
                memcpy(o + pos, mc_key(it), it->nkey);
                pos += it->nkey;
            }
            if (m->flags & MC_MF('b')) {
                o[pos++] = ' ';
                o[pos++] = 'b';
            }
            break;

        default:
            break;
        }
    }
    return pos;
}

static void meta_get(struct session *s, const struct mc_meta_req *m, const char *line, size_t line_len)
{
    uint64_t hv = mc_hash(m->rkey, m->nrkey);
    struct mc_thread_stats *ts = &s->th->st;
    MC_STAT_ADD(ts, cmd_get, 1);
    mc_key_lock(hv);
    mc_item *it = mc_item_find_locked(m->rkey, m->nrkey, hv);
    bool won = false, vivified = false;
    if (!it && (m->flags & MC_MF('N'))) {
        enum mc_alloc_err err;
        it = mc_item_alloc(m->rkey, m->nrkey, 0, mc_realtime(m->N_ttl), 0, &err);
        if (it) {
            mc_item_link_locked(it, NULL, hv);
            mc_bits_set(it, MC_IT_TOKEN);
            won = vivified = true;
        }
    }
    if (!it) {
        mc_key_unlock(hv);
        MC_STAT_ADD(ts, get_misses, 1);
        meta_simple(s, "EN", m, m->flags & MC_MF('q'));
        return;
    }
    if (vivified)
        MC_STAT_ADD(ts, get_misses, 1);
    else
        MC_STAT_ADD(ts, get_hits, 1);
    uint8_t bits = mc_bits(it);
    bool fetched_before = bits & MC_IT_FETCHED;
    bool stale = bits & MC_IT_STALE;
    bool token_sent = bits & MC_IT_TOKEN;
    uint32_t now = mc_now();
    if (!vivified) {
        if (stale) {
            if (!token_sent) {
                won = true;
                mc_bits_set(it, MC_IT_TOKEN);
            }
        } else if ((m->flags & MC_MF('R')) && it->exptime != 0 &&
                   (int64_t)it->exptime - (int64_t)now < m->R_ttl && !token_sent) {
            won = true;
            mc_bits_set(it, MC_IT_TOKEN);
        }
    }
    if (m->flags & MC_MF('T')) {
        it->exptime = mc_realtime(m->T_ttl);
        MC_STAT_ADD(ts, touch_hits, 1);
        MC_STAT_ADD(ts, cmd_touch, 1);
    }
    if (m->flags & MC_MF('E'))
        it->cas = m->E_cas;
    bool with_value = m->flags & MC_MF('v');
    size_t need = 64 + 2 * line_len + 600 + (with_value ? it->nbytes + 2 : 0);
    char *o = out_reserve(s, need);
    if (!o) {
        mc_key_unlock(hv);
        return;
    }
    size_t pos;
    if (with_value) {
        memcpy(o, "VA ", 3);
        pos = 3 + mc_u64toa(it->nbytes, o + 3);
    } else {
        memcpy(o, "HD", 2);
        pos = 2;
    }
    pos += meta_hit_flags(o + pos, line, line_len, it, fetched_before, m, true);
    if (token_sent && !won)
        memcpy(o + pos, " Z", 2), pos += 2;
    if (stale)
        memcpy(o + pos, " X", 2), pos += 2;
    if (won)
        memcpy(o + pos, " W", 2), pos += 2;
    o[pos++] = '\r';
    o[pos++] = '\n';
    if (with_value) {
        memcpy(o + pos, mc_value(it), it->nbytes);
        pos += it->nbytes;
        o[pos++] = '\r';
        o[pos++] = '\n';
    }
    /* Bump after the flags went out: l and h describe the time before. */
    if (!(m->flags & MC_MF('u')))
        mc_item_bump(it);
    mc_key_unlock(hv);
    out_commit(s, pos);
}

static void meta_delete(struct session *s, const struct mc_meta_req *m)
{
    uint64_t hv = mc_hash(m->rkey, m->nrkey);
    bool quiet = m->flags & MC_MF('q');
    mc_key_lock(hv);
    mc_item *it = mc_item_find_locked(m->rkey, m->nrkey, hv);
    const char *code;
    if (!it) {
        code = "NF";
        MC_STAT_ADD(&s->th->st, delete_misses, 1);
    } else if ((m->flags & MC_MF('C')) && it->cas != m->C_cas) {
        code = "EX";
    } else if (m->flags & MC_MF('I')) {
        /* Invalidate: keep the item, mark it stale, new CAS, maybe new TTL. */
        mc_bits_set(it, MC_IT_STALE);
        mc_bits_clear(it, MC_IT_TOKEN);
        it->cas = (m->flags & MC_MF('E')) ? m->E_cas : mc_next_cas();
        if (m->flags & MC_MF('T'))
            it->exptime = mc_realtime(m->T_ttl);
        code = "HD";
        MC_STAT_ADD(&s->th->st, delete_hits, 1);
    } else if (m->flags & MC_MF('x')) {
        /* Drop the value, keep the item (and its client flags? no: zeroed). */
        enum mc_alloc_err err;
        mc_item *n = mc_item_alloc(m->rkey, m->nrkey, 0, it->exptime, 0, &err);
        if (n)
            mc_item_link_locked(n, it, hv);
        code = "HD";
        MC_STAT_ADD(&s->th->st, delete_hits, 1);
    } else {
        mc_item_unlink_locked(it, hv);
        code = "HD";
        MC_STAT_ADD(&s->th->st, delete_hits, 1);
    }
    mc_key_unlock(hv);
    meta_simple(s, code, m, quiet && code[0] == 'H');   /* q hides only HD */
}

static void meta_arith(struct session *s, const struct mc_meta_req *m, const char *line, size_t line_len)
{
    bool incr = !(m->flags & MC_MF('M')) || strchr("Ii+", m->mode);
    uint64_t delta = (m->flags & MC_MF('D')) ? m->delta : 1;
    uint64_t cmp = (m->flags & MC_MF('C')) ? m->C_cas : 0;
    uint64_t result = 0, cas = 0;
    bool quiet = m->flags & MC_MF('q');
    enum mc_status st = mc_arith(m->rkey, m->nrkey, incr, delta, cmp, &result, &cas);
    if (st == MC_NOT_FOUND && (m->flags & MC_MF('N'))) {
        /* Autovivify with J (default 0). */
        char buf[24];
        size_t n = mc_u64toa(m->initial, buf);
        enum mc_alloc_err err;
        mc_item *it = mc_item_alloc(m->rkey, m->nrkey, 0, mc_realtime(m->N_ttl), n, &err);
        if (it) {
            memcpy(mc_value(it), buf, n);
            st = mc_store(it, MC_OP_ADD, 0, &cas);
            if (st == MC_STORED) {
                result = m->initial;
                st = MC_OK;
            } else {
                st = mc_arith(m->rkey, m->nrkey, incr, delta, cmp, &result, &cas);
            }
        } else {
            st = MC_NO_MEMORY;
        }
    }
    if (st == MC_OK && (m->flags & MC_MF('T')))
        mc_touch(m->rkey, m->nrkey, mc_realtime(m->T_ttl));
    switch (st) {
    case MC_OK:
        break;
    case MC_NOT_FOUND:
        meta_simple(s, "NF", m, false);
        return;
    case MC_EXISTS:
        meta_simple(s, "EX", m, false);
        return;
    case MC_NON_NUMERIC:
        out_line(s, "CLIENT_ERROR cannot increment or decrement non-numeric value");
        return;
    default:
        out_line(s, "SERVER_ERROR out of memory");
        return;
    }
    if (quiet)   /* q: success (HD or VA) is not sent */
        return;
    /* Fetch the item again for t/c flags. */
    uint64_t hv = mc_hash(m->rkey, m->nrkey);
    char o[1200];
    char num[24];
    size_t nn = mc_u64toa(result, num);
    size_t pos;
    if (m->flags & MC_MF('v')) {
        memcpy(o, "VA ", 3);
        pos = 3 + mc_u64toa(nn, o + 3);
    } else {
        memcpy(o, "HD", 2);
        pos = 2;
    }
    mc_key_lock(hv);
    mc_item *it = mc_item_find_locked(m->rkey, m->nrkey, hv);
    if (it)
        pos += meta_hit_flags(o + pos, line, line_len < 600 ? line_len : 600, it, false, m, false);
    mc_key_unlock(hv);
    o[pos++] = '\r';
    o[pos++] = '\n';
    if (m->flags & MC_MF('v')) {
        memcpy(o + pos, num, nn);
        pos += nn;
        o[pos++] = '\r';
        o[pos++] = '\n';
    }
    out_add(s, o, pos);
}

static void meta_debug(struct session *s, const struct mc_meta_req *m)
{
    uint64_t hv = mc_hash(m->rkey, m->nrkey);
    mc_key_lock(hv);
    mc_item *it = mc_item_find_locked(m->rkey, m->nrkey, hv);
    if (!it) {
        mc_key_unlock(hv);
        out_add(s, "EN\r\n", 4);
        return;
    }
    uint32_t now = mc_now();
    char buf[700];
    int n = snprintf(buf, sizeof buf, "ME %.*s exp=%" PRId64 " la=%u cas=%" PRIu64 " fetch=%s cls=%u size=%zu\r\n",
                     (int)m->nkey, m->key, it->exptime == 0 ? (int64_t)-1 : (int64_t)it->exptime - (int64_t)now,
                     now - it->atime, it->cas, (mc_bits(it) & MC_IT_FETCHED) ? "yes" : "no", it->clsid,
                     mc_item_total(it->nkey, it->nbytes));
    mc_key_unlock(hv);
    out_add(s, buf, (size_t)n);
}

static void meta_dispatch(struct session *s, const struct mc_text_req *tr)
{
    struct mc_meta_req m;
    MC_STAT_ADD(&s->th->st, cmd_meta, 1);
    if (mc_meta_parse(tr->line, tr->line_len, tr->consumed, &m) != MC_PARSE_OK) {
        MC_STAT_ADD(&s->th->st, protocol_errors, 1);
        out_line(s, m.error);
        if (m.swallow >= 0)
            begin_swallow(s, (uint64_t)m.swallow);
        return;
    }
    switch (m.cmd) {
    case MC_META_NOOP:
        out_add(s, "MN\r\n", 4);
        return;
    case MC_META_GET:
        meta_get(s, &m, tr->line, tr->line_len);
        return;
    case MC_META_DELETE:
        meta_delete(s, &m);
        return;
    case MC_META_ARITH:
        meta_arith(s, &m, tr->line, tr->line_len);
        return;
    case MC_META_DEBUG:
        meta_debug(s, &m);
        return;
    case MC_META_SET: {
        const char *err;
        int64_t exptime = (m.flags & MC_MF('T')) ? m.T_ttl : 0;
        uint32_t flags = (m.flags & MC_MF('F')) ? m.F_flags : 0;
        s->kind = PEND_META;
        s->pm.flags = m.flags;
        s->pm.nopaque = (uint8_t)m.nopaque;
        memcpy(s->pm.opaque, m.opaque ? m.opaque : "", m.nopaque);
        s->pm.mode = (m.flags & MC_MF('M')) ? m.mode : 'S';
        s->pm.C_cas = m.C_cas;
        s->pm.E_cas = m.E_cas;
        s->pm.key_b64 = m.flags & MC_MF('b');
        s->pm.key_first = m.key_first;
        if (!begin_store(s, m.rkey, m.nrkey, flags, exptime, m.datalen, &err)) {
            if (s->pm.mode == 'S' || s->pm.mode == 's')
                mc_delete(m.rkey, m.nrkey, 0);   /* no stale value after a failed set */
            out_line(s, err);
            begin_swallow(s, (uint64_t)m.datalen + 2);
        }
        return;
    }
    }
}

/* ------------------------------------------------------------------ */
/* lru_crawler, slabs, lru: the store's maintenance commands */

static bool word_is(const char *w, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(w, lit, n) == 0;
}

static void text_tuning(struct session *s, const struct mc_text_req *r)
{
    const char *p = r->args, *end = r->args + r->args_len, *w[6];
    size_t wn[6];
    int n = 0;
    while (n < 6 && mc_text_next_key(&p, end, &w[n], &wn[n]))
        n++;
    if (n == 0) {
        out_line(s, "ERROR");
        return;
    }
    if (r->cmd == MC_TXT_LRU_CRAWLER) {
        if (word_is(w[0], wn[0], "enable") || word_is(w[0], wn[0], "disable")) {
            mc_settings.lru_crawler = w[0][0] == 'e';
            out_line(s, "OK");
        } else if (n == 2 && (word_is(w[0], wn[0], "crawl") || word_is(w[0], wn[0], "metadump"))) {
            bool all = word_is(w[1], wn[1], "all");
            if (!all) {
                /* a comma list of class ids, each must exist */
                const char *q = w[1], *qe = w[1] + wn[1];
                while (q < qe) {
                    const char *c = memchr(q, ',', (size_t)(qe - q));
                    size_t len = (size_t)((c ? c : qe) - q);
                    uint32_t id;
                    if (!mc_parse_u32(q, len, &id) || id == 0 || id > (uint32_t)mc_nclasses) {
                        out_line(s, "BADCLASS invalid class id");
                        return;
                    }
                    q += len + (c ? 1 : 0);
                }
            }
            if (w[0][0] == 'c') {
                if (!mc_settings.lru_crawler) {
                    out_line(s, "CLIENT_ERROR lru crawler disabled");
                    return;
                }
                mc_crawl_request();   /* the maintainer thread walks every class */
                out_line(s, "OK");
            } else {
                for (int id = 1; id <= mc_nclasses; id++)
                    mc_metadump(out_evb(s), id);
                out_add(s, "END\r\n", 5);
            }
        } else if (n == 2 && (word_is(w[0], wn[0], "sleep") || word_is(w[0], wn[0], "tocrawl"))) {
            out_line(s, "OK");   /* pacing knobs: our crawler paces itself (see README) */
        } else {
            out_line(s, "ERROR");
        }
        return;
    }
    if (r->cmd == MC_TXT_SLABS) {
        if (n == 2 && word_is(w[0], wn[0], "automove")) {
            /* Pages always move to the classes that need them (items.c). */
            out_line(s, (wn[1] == 1 && w[1][0] >= '0' && w[1][0] <= '2') ? "OK" : "ERROR");
        } else if (word_is(w[0], wn[0], "reassign")) {
            out_line(s, "CLIENT_ERROR slab reassignment disabled");
        } else {
            out_line(s, "ERROR");
        }
        return;
    }
    /* lru */
    if (word_is(w[0], wn[0], "tune") && n >= 3) {
        uint32_t hot, warm;
        if (!mc_parse_u32(w[1], wn[1], &hot) || !mc_parse_u32(w[2], wn[2], &warm) || hot < 1 || warm < 1 ||
            hot + warm > 80) {
            out_line(s, "ERROR");
            return;
        }
        mc_settings.hot_pct = (int)hot;
        mc_settings.warm_pct = (int)warm;
        out_line(s, "OK");
    } else if (n == 2 && word_is(w[0], wn[0], "mode")) {
        out_line(s, word_is(w[1], wn[1], "segmented") ? "OK" : "CLIENT_ERROR only the segmented LRU is built");
    } else {
        out_line(s, "ERROR");
    }
}

/* ------------------------------------------------------------------ */
/* text dispatch */

/* Returns -1 to close the connection now, 1 to close after writing. */
static int text_dispatch(struct session *s, const struct mc_text_req *r)
{
    struct mc_thread_stats *ts = &s->th->st;
    switch (r->cmd) {
    case MC_TXT_GET:
    case MC_TXT_GETS:
    case MC_TXT_GAT:
    case MC_TXT_GATS:
        text_get(s, r);
        return 0;
    case MC_TXT_SET:
    case MC_TXT_ADD:
    case MC_TXT_REPLACE:
    case MC_TXT_APPEND:
    case MC_TXT_PREPEND:
    case MC_TXT_CAS: {
        static const enum mc_store_op ops[] = {
            [MC_TXT_SET] = MC_OP_SET, [MC_TXT_ADD] = MC_OP_ADD, [MC_TXT_REPLACE] = MC_OP_REPLACE,
            [MC_TXT_APPEND] = MC_OP_APPEND, [MC_TXT_PREPEND] = MC_OP_PREPEND, [MC_TXT_CAS] = MC_OP_CAS,
        };
        s->kind = PEND_TEXT;
        s->op = ops[r->cmd];
        s->cas = r->cas;
        s->noreply = r->noreply;
        const char *err;
        if (!begin_store(s, r->key, r->nkey, r->flags, r->exptime, r->bytes, &err)) {
            /* As memcached: a set that cannot be stored removes the old
             * value (no stale data), and noreply silences "too large" but
             * not running out of memory. */
            if (r->cmd == MC_TXT_SET)
                mc_delete(r->key, r->nkey, 0);
            if (!r->noreply || strstr(err, "out of memory"))
                out_line(s, err);
            begin_swallow(s, (uint64_t)r->bytes + 2);
        }
        return 0;
    }
    case MC_TXT_INCR:
    case MC_TXT_DECR:
        text_arith(s, r);
        return 0;
    case MC_TXT_DELETE: {
        enum mc_status st = mc_delete(r->key, r->nkey, 0);
        if (st == MC_DELETED)
            MC_STAT_ADD(ts, delete_hits, 1);
        else
            MC_STAT_ADD(ts, delete_misses, 1);
        if (!r->noreply)
            out_str(s, st == MC_DELETED ? "DELETED\r\n" : "NOT_FOUND\r\n");
        return 0;
    }
    case MC_TXT_TOUCH: {
        enum mc_status st = mc_touch(r->key, r->nkey, mc_realtime(r->exptime));
        MC_STAT_ADD(ts, cmd_touch, 1);
        if (st == MC_TOUCHED)
            MC_STAT_ADD(ts, touch_hits, 1);
        else
            MC_STAT_ADD(ts, touch_misses, 1);
        if (!r->noreply)
            out_str(s, st == MC_TOUCHED ? "TOUCHED\r\n" : "NOT_FOUND\r\n");
        return 0;
    }
    case MC_TXT_FLUSH_ALL:
        if (mc_settings.flush_disabled) {
            out_line(s, "CLIENT_ERROR flush_all not allowed");
            return 0;
        }
        MC_STAT_ADD(ts, cmd_flush, 1);
        mc_flush(r->has_delay ? r->exptime : 0);
        if (!r->noreply)
            out_add(s, "OK\r\n", 4);
        return 0;
    case MC_TXT_VERSION:
        out_line(s, "VERSION " MC_VERSION);
        return 0;
    case MC_TXT_VERBOSITY:
        mc_settings.verbose = (int)r->delta;
        if (!r->noreply)
            out_add(s, "OK\r\n", 4);
        return 0;
    case MC_TXT_QUIT:
        return -1;
    case MC_TXT_STATS:
        text_stats(s, r);
        return 0;
    case MC_TXT_SHUTDOWN:
        if (!mc_settings.shutdown_enabled) {
            out_line(s, "ERROR: shutdown not enabled");
            return 0;
        }
        mc_shutdown_request(r->args_len >= 8 && memcmp(r->args, "graceful", 8) == 0);
        return 1;
    case MC_TXT_CACHE_MEMLIMIT:
        if (r->delta < 8) {
            out_line(s, "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m");
            return 0;
        }
        mc_slabs_set_limit(r->delta * 1024 * 1024);
        mc_settings.maxbytes = r->delta * 1024 * 1024;
        if (!r->noreply)
            out_add(s, "OK\r\n", 4);
        return 0;
    case MC_TXT_META:
        meta_dispatch(s, r);
        return 0;
    case MC_TXT_LRU_CRAWLER:
    case MC_TXT_SLABS:
    case MC_TXT_LRU:
    case MC_TXT_MISC_OK:
        text_tuning(s, r);
        return 0;
    case MC_TXT_NONE:
        break;
    }
    out_line(s, "ERROR");
    return 0;
}

/* len: what in holds. */
static int text_step(struct session *s, struct evbuffer *in, size_t len, bool *progress)
{
    size_t first = len < 4096 ? len : 4096;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)first);
    if (!p)
        return 0;
    struct mc_text_req r;
    enum mc_parse st = mc_text_parse(p, first, &r);
    if (st == MC_PARSE_NEED_MORE) {
        /* No LF in the first 4 KB: look further (up to the line limit). */
        if (len <= first)
            return 0;   /* need more */
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
    if (st == MC_PARSE_ERROR) {
        MC_STAT_ADD(&s->th->st, protocol_errors, 1);
        if (!r.noreply)
            out_line(s, r.error);
        if (r.close || r.consumed == 0)
            return 1;
        evbuffer_drain(in, r.consumed);
        return 0;
    }
    int rc = text_dispatch(s, &r);
    /* Storage commands: begin_store already copied the key; the line can go. */
    evbuffer_drain(in, r.consumed);
    return rc;
}

/* ------------------------------------------------------------------ */
/* binary protocol */

static void bin_reply(struct session *s, uint8_t opcode, uint32_t opaque, uint16_t status, uint64_t cas,
                      const void *ext, uint8_t extlen, const void *key, uint16_t keylen, const void *val,
                      uint32_t vlen)
{
    size_t total = MC_BIN_HDR + extlen + keylen + vlen;
    uint8_t *o = (uint8_t *)out_reserve(s, total);
    if (!o)
        return;
    mc_bin_write_header(o, opcode, keylen, extlen, status, (uint32_t)(extlen + keylen + vlen), opaque, cas);
    size_t pos = MC_BIN_HDR;
    if (extlen)
        memcpy(o + pos, ext, extlen), pos += extlen;
    if (keylen)
        memcpy(o + pos, key, keylen), pos += keylen;
    if (vlen)
        memcpy(o + pos, val, vlen), pos += vlen;
    out_commit(s, pos);
}

static void bin_error(struct session *s, uint8_t opcode, uint32_t opaque, uint16_t status)
{
    const char *msg;
    switch (status) {
    case MC_BIN_KEY_ENOENT: msg = "Not found"; break;
    case MC_BIN_KEY_EEXISTS: msg = "Data exists for key."; break;
    case MC_BIN_E2BIG: msg = "Too large."; break;
    case MC_BIN_EINVAL: msg = "Invalid arguments"; break;
    case MC_BIN_NOT_STORED: msg = "Not stored."; break;
    case MC_BIN_DELTA_BADVAL: msg = "Non-numeric server-side value for incr or decr"; break;
    case MC_BIN_AUTH_ERROR: msg = "Auth failure."; break;
    case MC_BIN_ENOMEM: msg = "Out of memory"; break;
    default: msg = "Unknown command"; break;
    }
    bin_reply(s, opcode, opaque, status, 0, NULL, 0, NULL, 0, msg, (uint32_t)strlen(msg));
    /* As memcached: after "invalid arguments" the connection is closed
     * (the client and we disagree about the framing). */
    if (status == MC_BIN_EINVAL)
        s->bin_close = true;
}

static bool bin_quiet(uint8_t op)
{
    switch (op) {
    case MC_BIN_GETQ: case MC_BIN_GETKQ: case MC_BIN_SETQ: case MC_BIN_ADDQ: case MC_BIN_REPLACEQ:
    case MC_BIN_DELETEQ: case MC_BIN_INCRQ: case MC_BIN_DECRQ: case MC_BIN_QUITQ: case MC_BIN_FLUSHQ:
    case MC_BIN_APPENDQ: case MC_BIN_PREPENDQ: case MC_BIN_GATQ: case MC_BIN_GATKQ:
        return true;
    default:
        return false;
    }
}

static uint32_t rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static uint64_t rd64(const uint8_t *p) { return ((uint64_t)rd32(p) << 32) | rd32(p + 4); }
static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)(v >> 32));
    wr32(p + 4, (uint32_t)v);
}

void mc_bin_store_reply(struct session *s, enum mc_status st, uint64_t cas);
void mc_bin_store_reply(struct session *s, enum mc_status st, uint64_t cas)
{
    uint8_t op = s->bin_opcode;
    if (st == MC_STORED) {
        if (!bin_quiet(op))
            bin_reply(s, op, s->bin_opaque, MC_BIN_OK, cas, NULL, 0, NULL, 0, NULL, 0);
        return;
    }
    uint16_t status;
    switch (st) {
    case MC_EXISTS: status = MC_BIN_KEY_EEXISTS; break;
    case MC_NOT_FOUND: status = MC_BIN_KEY_ENOENT; break;
    case MC_TOO_LARGE: status = MC_BIN_E2BIG; break;
    case MC_NO_MEMORY: status = MC_BIN_ENOMEM; break;
    default:
        /* NOT_STORED: add on an existing key = EEXISTS, replace on a
         * missing one = ENOENT, append/prepend = NOT_STORED. */
        if (s->op == MC_OP_ADD)
            status = MC_BIN_KEY_EEXISTS;
        else if (s->op == MC_OP_REPLACE)
            status = MC_BIN_KEY_ENOENT;
        else
            status = MC_BIN_NOT_STORED;
        break;
    }
    bin_error(s, op, s->bin_opaque, status);
}

static void bin_stats_cb(const char *name, const char *value, void *arg)
{
    void **a = arg;
    struct session *s = a[0];
    const struct mc_bin_req *r = a[1];
    bin_reply(s, r->opcode, r->opaque, MC_BIN_OK, 0, NULL, 0, name, (uint16_t)strlen(name), value,
              (uint32_t)strlen(value));
}

/* Returns -1 to close now, 1 to close after writing, 0 to go on. */
static int bin_dispatch(struct session *s, const struct mc_bin_req *r)
{
    uint8_t op = r->opcode;
    bool quiet = bin_quiet(op);
    const char *key = (const char *)r->key;
    size_t nkey = r->keylen;
    struct mc_thread_stats *ts = &s->th->st;

    if (mc_settings.sasl && !s->authenticated && op != MC_BIN_SASL_LIST && op != MC_BIN_SASL_AUTH &&
        op != MC_BIN_SASL_STEP && op != MC_BIN_VERSION && op != MC_BIN_NOOP && op != MC_BIN_QUIT &&
        op != MC_BIN_QUITQ) {
        bin_error(s, op, r->opaque, MC_BIN_AUTH_ERROR);
        return 0;
    }
    if (nkey > MC_KEY_MAX) {
        bin_error(s, op, r->opaque, MC_BIN_EINVAL);
        return 0;
    }
    switch (op) {
    case MC_BIN_GET: case MC_BIN_GETQ: case MC_BIN_GETK: case MC_BIN_GETKQ:
    case MC_BIN_TOUCH: case MC_BIN_GAT: case MC_BIN_GATQ: case MC_BIN_GATK: case MC_BIN_GATKQ: {
        bool is_touch = op == MC_BIN_TOUCH || op == MC_BIN_GAT || op == MC_BIN_GATQ || op == MC_BIN_GATK ||
                        op == MC_BIN_GATKQ;
        if (nkey == 0 || r->extlen != (is_touch ? 4 : 0) || r->vlen != 0) {
            bin_error(s, op, r->opaque, MC_BIN_EINVAL);
            return 0;
        }
        bool want_key = op == MC_BIN_GETK || op == MC_BIN_GETKQ || op == MC_BIN_GATK || op == MC_BIN_GATKQ;
        bool want_value = op != MC_BIN_TOUCH;
        uint64_t hv = mc_hash(key, nkey);
        MC_STAT_ADD(ts, cmd_get, 1);
        if (is_touch)
            MC_STAT_ADD(ts, cmd_touch, 1);
        mc_key_lock(hv);
        mc_item *it = mc_item_find_locked(key, nkey, hv);
        if (!it) {
            mc_key_unlock(hv);
            MC_STAT_ADD(ts, get_misses, 1);
            if (is_touch)
                MC_STAT_ADD(ts, touch_misses, 1);
            if (quiet)
                return 0;
            if (want_key)
                bin_reply(s, op, r->opaque, MC_BIN_KEY_ENOENT, 0, NULL, 0, key, (uint16_t)nkey, NULL, 0);
            else
                bin_error(s, op, r->opaque, MC_BIN_KEY_ENOENT);
            return 0;
        }
        if (is_touch) {
            it->exptime = mc_realtime((int32_t)rd32(r->extras));
            MC_STAT_ADD(ts, touch_hits, 1);
        }
        mc_item_bump(it);
        MC_STAT_ADD(ts, get_hits, 1);
        uint8_t ext[4];
        wr32(ext, it->flags);
        bin_reply(s, op, r->opaque, MC_BIN_OK, it->cas, ext, 4, want_key ? key : NULL,
                  want_key ? (uint16_t)nkey : 0, want_value ? mc_value(it) : NULL, want_value ? it->nbytes : 0);
        mc_key_unlock(hv);
        return 0;
    }
    case MC_BIN_SET: case MC_BIN_SETQ: case MC_BIN_ADD: case MC_BIN_ADDQ: case MC_BIN_REPLACE:
    case MC_BIN_REPLACEQ: case MC_BIN_APPEND: case MC_BIN_APPENDQ: case MC_BIN_PREPEND: case MC_BIN_PREPENDQ: {
        bool is_cat = op == MC_BIN_APPEND || op == MC_BIN_APPENDQ || op == MC_BIN_PREPEND || op == MC_BIN_PREPENDQ;
        if (nkey == 0 || r->extlen != (is_cat ? 0 : 8)) {
            bin_error(s, op, r->opaque, MC_BIN_EINVAL);
            return 0;
        }
        uint32_t flags = is_cat ? 0 : rd32(r->extras);
        int64_t exptime = is_cat ? 0 : (int32_t)rd32(r->extras + 4);
        enum mc_alloc_err err = MC_ALLOC_TOO_LARGE;
        mc_item *it = NULL;
        if (r->vlen <= mc_settings.item_size_max)
            it = mc_item_alloc(key, nkey, flags, mc_realtime(exptime), r->vlen, &err);
        if (!it) {
            if (op == MC_BIN_SET || op == MC_BIN_SETQ)
                mc_delete(key, nkey, 0);   /* no stale value after a failed set */
            bin_error(s, op, r->opaque, err == MC_ALLOC_TOO_LARGE ? MC_BIN_E2BIG : MC_BIN_ENOMEM);
            return 0;
        }
        memcpy(mc_value(it), r->value, r->vlen);
        switch (op) {
        case MC_BIN_SET: case MC_BIN_SETQ: s->op = r->cas ? MC_OP_CAS : MC_OP_SET; break;
        case MC_BIN_ADD: case MC_BIN_ADDQ: s->op = MC_OP_ADD; break;
        case MC_BIN_REPLACE: case MC_BIN_REPLACEQ: s->op = MC_OP_REPLACE; break;
        case MC_BIN_APPEND: case MC_BIN_APPENDQ: s->op = MC_OP_APPEND; break;
        default: s->op = MC_OP_PREPEND; break;
        }
        s->bin_opcode = op;
        s->bin_opaque = r->opaque;
        uint64_t cas = 0;
        enum mc_status st = mc_store(it, s->op, r->cas, &cas);
        MC_STAT_ADD(ts, cmd_set, 1);
        if (s->op == MC_OP_CAS)
            MC_STAT_ADD(ts, cas_hits, st == MC_STORED ? 1 : 0);
        mc_bin_store_reply(s, st, cas);
        return 0;
    }
    case MC_BIN_DELETE: case MC_BIN_DELETEQ: {
        if (nkey == 0 || r->extlen != 0 || r->vlen != 0) {
            bin_error(s, op, r->opaque, MC_BIN_EINVAL);
            return 0;
        }
        enum mc_status st = mc_delete(key, nkey, r->cas);
        if (st == MC_DELETED) {
            MC_STAT_ADD(ts, delete_hits, 1);
            if (!quiet)
                bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, NULL, 0);
        } else {
            MC_STAT_ADD(ts, delete_misses, 1);
            bin_error(s, op, r->opaque, st == MC_EXISTS ? MC_BIN_KEY_EEXISTS : MC_BIN_KEY_ENOENT);
        }
        return 0;
    }
    case MC_BIN_INCR: case MC_BIN_INCRQ: case MC_BIN_DECR: case MC_BIN_DECRQ: {
        if (nkey == 0 || r->extlen != 20 || r->vlen != 0) {
            bin_error(s, op, r->opaque, MC_BIN_EINVAL);
            return 0;
        }
        bool incr = op == MC_BIN_INCR || op == MC_BIN_INCRQ;
        uint64_t delta = rd64(r->extras), initial = rd64(r->extras + 8);
        uint32_t exp = rd32(r->extras + 16);
        uint64_t result = 0, cas = 0;
        enum mc_status st = mc_arith(key, nkey, incr, delta, r->cas, &result, &cas);
        if (st == MC_NOT_FOUND && exp != 0xffffffffu && r->cas == 0) {
            char buf[24];
            size_t n = mc_u64toa(initial, buf);
            enum mc_alloc_err err;
            mc_item *it = mc_item_alloc(key, nkey, 0, mc_realtime((int32_t)exp), n, &err);
            if (!it) {
                st = MC_NO_MEMORY;
            } else {
                memcpy(mc_value(it), buf, n);
                st = mc_store(it, MC_OP_ADD, 0, &cas);
                if (st == MC_STORED) {
                    result = initial;
                    st = MC_OK;
                } else {
                    st = mc_arith(key, nkey, incr, delta, 0, &result, &cas);
                }
            }
        }
        if (st == MC_OK) {
            if (incr)
                MC_STAT_ADD(ts, incr_hits, 1);
            else
                MC_STAT_ADD(ts, decr_hits, 1);
            if (!quiet) {
                uint8_t v[8];
                wr64(v, result);
                bin_reply(s, op, r->opaque, MC_BIN_OK, cas, NULL, 0, NULL, 0, v, 8);
            }
            return 0;
        }
        if (st == MC_NOT_FOUND) {
            if (incr)
                MC_STAT_ADD(ts, incr_misses, 1);
            else
                MC_STAT_ADD(ts, decr_misses, 1);
        }
        bin_error(s, op, r->opaque,
                  st == MC_NOT_FOUND ? MC_BIN_KEY_ENOENT
                  : st == MC_EXISTS  ? MC_BIN_KEY_EEXISTS
                  : st == MC_NON_NUMERIC ? MC_BIN_DELTA_BADVAL : MC_BIN_ENOMEM);
        return 0;
    }
    case MC_BIN_QUIT:
    case MC_BIN_QUITQ:
        if (op == MC_BIN_QUIT)
            bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, NULL, 0);
        return 1;
    case MC_BIN_FLUSH:
    case MC_BIN_FLUSHQ: {
        if (nkey != 0 || (r->extlen != 0 && r->extlen != 4) || r->vlen != 0) {
            bin_error(s, op, r->opaque, MC_BIN_EINVAL);
            return 0;
        }
        if (mc_settings.flush_disabled) {
            bin_error(s, op, r->opaque, MC_BIN_AUTH_ERROR);
            return 0;
        }
        int64_t delay = r->extlen == 4 ? (int32_t)rd32(r->extras) : 0;
        MC_STAT_ADD(ts, cmd_flush, 1);
        mc_flush(delay);
        if (!quiet)
            bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, NULL, 0);
        return 0;
    }
    case MC_BIN_NOOP:
        bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, NULL, 0);
        return 0;
    case MC_BIN_VERSION:
        bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, MC_VERSION, (uint32_t)strlen(MC_VERSION));
        return 0;
    case MC_BIN_VERBOSITY:
        if (r->extlen != 4 || nkey != 0 || r->vlen != 0) {
            bin_error(s, op, r->opaque, MC_BIN_UNKNOWN_COMMAND);   /* what memcached 1.6 answers */
            return 0;
        }
        mc_settings.verbose = (int)rd32(r->extras);
        bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, NULL, 0);
        return 0;
    case MC_BIN_STAT: {
        char group[64];
        size_t n = nkey < sizeof group - 1 ? nkey : sizeof group - 1;
        memcpy(group, key, n);
        group[n] = 0;
        if (n && strcmp(group, "reset") == 0) {
            mc_stats_reset();
        } else if (n >= 6 && strncmp(group, "detail", 6) == 0) {
            /* detail on|off|dump: accepted, nothing recorded (see README) */
        } else if (n && strcmp(group, "sizes") == 0) {
            bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, "sizes_status", 12, "disabled", 8);
        } else {
            void *a[2] = { s, (void *)r };
            if (stats_visit(group, bin_stats_cb, a) < 0) {
                bin_error(s, op, r->opaque, MC_BIN_KEY_ENOENT);
                return 0;
            }
        }
        bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, NULL, 0);
        return 0;
    }
    case MC_BIN_SASL_LIST:
        if (!mc_settings.sasl) {
            bin_error(s, op, r->opaque, MC_BIN_UNKNOWN_COMMAND);
            return 0;
        }
        bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, "PLAIN", 5);
        return 0;
    case MC_BIN_SASL_AUTH:
    case MC_BIN_SASL_STEP: {
        if (!mc_settings.sasl) {
            bin_error(s, op, r->opaque, MC_BIN_UNKNOWN_COMMAND);
            return 0;
        }
        MC_STAT_ADD(ts, auth_cmds, 1);
        /* PLAIN: [authzid] NUL authcid NUL passwd */
        const char *v = (const char *)r->value;
        size_t vl = r->vlen;
        bool ok = false;
        if (nkey == 5 && memcmp(key, "PLAIN", 5) == 0) {
            const char *z1 = memchr(v, 0, vl);
            if (z1) {
                const char *user = z1 + 1;
                const char *z2 = memchr(user, 0, vl - (size_t)(user - v));
                if (z2) {
                    const char *pass = z2 + 1;
                    ok = mc_sasl_check(user, (size_t)(z2 - user), pass, vl - (size_t)(pass - v));
                }
            }
        }
        if (ok) {
            s->authenticated = true;
            bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, "Authenticated", 13);
        } else {
            MC_STAT_ADD(ts, auth_errors, 1);
            bin_error(s, op, r->opaque, MC_BIN_AUTH_ERROR);
        }
        return 0;
    }
    default:
        bin_error(s, op, r->opaque, MC_BIN_UNKNOWN_COMMAND);
        return 0;
    }
}

static int bin_step(struct session *s, struct evbuffer *in, size_t len, bool *progress)
{
    if (len < MC_BIN_HDR)
        return 0;
    const uint8_t *p = evbuffer_pullup(in, MC_BIN_HDR);
    struct mc_bin_req r;
    uint32_t max_body = (uint32_t)(mc_settings.item_size_max + MC_KEY_MAX + 64);
    enum mc_parse st = mc_bin_parse_header(p, MC_BIN_HDR, UINT32_MAX, &r);
    if (st == MC_PARSE_ERROR)
        return -1;   /* bad magic: the stream is lost */
    if (r.bodylen > max_body) {
        /* Too big for any item: refuse without buffering it. */
        *progress = true;
        bin_error(s, r.opcode, r.opaque, MC_BIN_E2BIG);
        evbuffer_drain(in, MC_BIN_HDR);
        begin_swallow(s, r.bodylen);
        return 0;
    }
    if (len < r.consumed)
        return 0;
    p = evbuffer_pullup(in, (ssize_t)r.consumed);
    if (mc_bin_parse(p, r.consumed, max_body, &r) != MC_PARSE_OK)
        return -1;
    *progress = true;
    s->c->requests++;
    s->kind = PEND_BIN;
    int rc = bin_dispatch(s, &r);
    evbuffer_drain(in, r.consumed);
    if (rc == 0 && s->bin_close)
        rc = 1;
    return rc;
}

/* ------------------------------------------------------------------ */
/* conn ops */

/* Hand the replies to the socket: written straight away when nothing is
 * queued before them, so a request/reply round trip costs one send and no
 * epoll changes or allocation. That is conn_write_now() for a flat buffer
 * (sessions are always plain accepted sockets, never TLS); a core call for
 * it has been requested. What the kernel does not take is queued on the
 * conn, by reference (see struct obuf). */
static void flush_out(struct session *s)
{
    size_t queued = out_queued(s);
    if (s->olen + queued == 0)
        return;
    MC_STAT_ADD(&s->th->st, bytes_written, s->olen + queued);
    struct core_conn *c = s->c;
    if (queued || evbuffer_get_length(conn_out(c)) > 0) {
        conn_write_now(c, out_evb(s));
    } else {
        struct obuf *b = s->ob;
        size_t n = s->olen;
        ssize_t w = send(c->fd, b->data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0)
            w = 0;   /* EAGAIN; an error surfaces on the queued write */
        s->olen = 0;
        if ((size_t)w < n) {
            if (evbuffer_add_reference(conn_out(c), b->data + w, n - (size_t)w, ob_release, b) == 0)
                s->ob = NULL;   /* the queue owns it now */
            else
                evbuffer_add(conn_out(c), b->data + w, n - (size_t)w);
        }
    }
    s->out_used = false;         /* conn_write_now took all of out */
    if (s->ob && s->ob->cap > OB_KEEP) {
        free(s->ob);
        s->ob = NULL;
    }
}

/* Replies waiting for the client; above this we stop reading requests
 * (the conn's output limit pauses the socket until it drains). */
#define SESSION_OUT_LIMIT (4u << 20)


static int on_read(struct core_conn *c)
{
    struct session *s = c->data;
    struct evbuffer *in = conn_in(c);
    size_t before = evbuffer_get_length(in);
    int rc = 0;
    bool wrote = false;
    s->last_cmd = mc_now();
    /* What the socket's queue holds; only flush_out changes it here. */
    size_t sockq = evbuffer_get_length(conn_out(c));
    for (;;) {
        size_t len = evbuffer_get_length(in);
        if (len == 0)
            break;
        if (s->olen + out_queued(s) + sockq > SESSION_OUT_LIMIT) {
            flush_out(s);
            sockq = evbuffer_get_length(conn_out(c));
            if (s->olen + out_queued(s) + sockq > SESSION_OUT_LIMIT)
                break;   /* the core resumes us once the client has read */
        }
        if (s->state == SESS_NREAD) {
            if (!do_nread(s, in))
                break;
            complete_store(s);
            continue;
        }
        if (s->state == SESS_SWALLOW) {
            size_t n = len < s->swallow_left ? len : (size_t)s->swallow_left;
            evbuffer_drain(in, n);
            s->swallow_left -= n;
            if (s->swallow_left == 0)
                s->state = SESS_CMD;
            continue;
        }
        if (s->proto == PROTO_UNKNOWN) {
            unsigned char b;
            evbuffer_copyout(in, &b, 1);
            s->proto = b == MC_BIN_REQ ? PROTO_BIN : PROTO_TEXT;
            if (mc_settings.sasl && s->proto == PROTO_TEXT) {
                out_line(s, "CLIENT_ERROR unauthenticated");
                rc = 1;
                break;
            }
        }
        bool progress = false;
        rc = s->proto == PROTO_BIN ? bin_step(s, in, len, &progress) : text_step(s, in, len, &progress);
        if (rc != 0 || !progress)
            break;
    }
    size_t consumed = before - evbuffer_get_length(in);
    MC_STAT_ADD(&s->th->st, bytes_read, consumed);
    wrote = s->olen > 0 || out_queued(s) > 0;
    if (rc != 0 && wrote) {
        /* Closing: leave the last replies to the bufferevent. */
        struct evbuffer *out = out_evb(s);
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
    (void)why;
    struct session *s = c->data;
    if (!s)
        return;
    if (s->item)
        mc_item_free(s->item);
    if (s->out)
        evbuffer_free(s->out);
    free(s->ob);   /* one handed to the conn's queue is no longer s->ob */
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

void mc_session_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
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
    struct core_conn *c = conn_new(loop, fd, sa, salen, &mc_conn_ops, s);
    if (!c) {
        evbuffer_free(s->out);
        free(s);
        return;
    }
    s->c = c;
    s->last_cmd = mc_now();
    struct mc_thread *th = s->th;
    pthread_mutex_lock(&th->sessions_lock);
    s->next = th->sessions;
    if (s->next)
        s->next->prev = s;
    th->sessions = s;
    pthread_mutex_unlock(&th->sessions_lock);
    conn_set_output_limit(c, 4u << 20);
    if (mc_settings.idle_timeout > 0)
        conn_set_timeouts(c, (uint32_t)mc_settings.idle_timeout * 1000, 0);
}

void mc_session_stats_conns(struct evbuffer *out)
{
    static const char *const states[] = { "conn_parse_cmd", "conn_nread", "conn_swallow" };
    uint32_t now = mc_now();
    for (int i = 0; i < loop_count(); i++) {
        struct core_loop *l = loop_get(i);
        struct mc_thread *th = l ? l->data : NULL;
        if (!th)
            continue;
        pthread_mutex_lock(&th->sessions_lock);
        for (struct session *s = th->sessions; s; s = s->next) {
            char peer[96];
            conn_peer_str(s->c, peer, sizeof peer);
            int fd = s->c->fd;
            bool is_unix = strcmp(peer, "unix") == 0;
            evbuffer_add_printf(out, "STAT %d:addr %s%s\r\n", fd, is_unix ? "" : "tcp:", is_unix ? "unix" : peer);
            evbuffer_add_printf(out, "STAT %d:state %s\r\n", fd, states[s->state]);
            evbuffer_add_printf(out, "STAT %d:secs_since_last_cmd %u\r\n", fd,
                                now > s->last_cmd ? now - s->last_cmd : 0);
        }
        pthread_mutex_unlock(&th->sessions_lock);
    }
}

void mc_session_reject(int fd, void *arg)
{
    (void)arg;
    static const char msg[] = "ERROR Too many open connections\r\n";
    ssize_t r = send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)r;
}
