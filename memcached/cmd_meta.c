/* cmd_meta: the meta protocol's commands (mg, ms, md, ma, mn, me) run
 * against the store, with their flags and return flags as memcached 1.6
 * answers them. ms's data block is read by session.c, which calls
 * mc_cmd_meta_stored when it is in. Replies go through mc_out_*. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memcached/proto.h"
#include "memcached/session.h"
#include "memcached/extstore.h"
#include "memcached/watch.h"

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
    mc_out_add(s, o, pos);
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
            pos += mc_u64toa(mc_item_is_ext(it) ? mc_ext_nbytes(it) : it->nbytes, o + pos);
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

        default: break;
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
    const char *ev = NULL; /* the value, when it was read from extstore */
    uint32_t vlen = 0;
    if (it && __builtin_expect(mc_item_is_ext(it), 0) && (m->flags & MC_MF('v'))) {
        bool miss;
        if (!(ev = mc_ext_value(s, it, hv, &vlen, &miss))) {
            if (!miss) { /* being read: this mg runs again (extstore.c) */
                mc_key_unlock(hv);
                MC_STAT_ADD(ts, cmd_get, (uint64_t)-1);
                return;
            }
            it = NULL;
        }
    }
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
        MC_STAT_MISS_REASON(ts);
        meta_simple(s, "EN", m, m->flags & MC_MF('q'));
        return;
    }
    if (vivified) {
        MC_STAT_ADD(ts, get_misses, 1);
    } else {
        MC_STAT_ADD(ts, get_hits, 1);
        MC_SLAB_ADD(s->th, it->clsid, get_hits, 1);
    }
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
        } else if ((m->flags & MC_MF('R')) && it->exptime != 0 && (int64_t)it->exptime - (int64_t)now < m->R_ttl &&
                   !token_sent) {
            won = true;
            mc_bits_set(it, MC_IT_TOKEN);
        }
    }
    if (m->flags & MC_MF('T')) {
        it->exptime = mc_realtime(m->T_ttl);
        MC_STAT_ADD(ts, touch_hits, 1);
        MC_SLAB_ADD(s->th, it->clsid, touch_hits, 1);
        MC_STAT_ADD(ts, cmd_touch, 1);
    }
    if (m->flags & MC_MF('E'))
        it->cas = m->E_cas;
    bool with_value = m->flags & MC_MF('v');
    if (!ev)
        vlen = it->nbytes;
    size_t need = 64 + 2 * line_len + 600 + (with_value ? vlen + 2 : 0);
    char *o = mc_out_reserve(s, need);
    if (!o) {
        mc_key_unlock(hv);
        return;
    }
    size_t pos;
    if (with_value) {
        memcpy(o, "VA ", 3);
        pos = 3 + mc_u64toa(vlen, o + 3);
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
        if (__builtin_expect(ev != NULL, 0))
            memcpy(o + pos, ev, vlen);
        else
            mc_value_out(it, o + pos);
        pos += vlen;
        o[pos++] = '\r';
        o[pos++] = '\n';
    }
    /* Bump after the flags went out: l and h describe the time before. */
    if (!(m->flags & MC_MF('u')))
        mc_item_bump(it);
    mc_key_unlock(hv);
    mc_out_commit(s, pos);
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
        MC_SLAB_HIT(s->th, delete_hits);
    } else if (m->flags & MC_MF('x')) {
        /* Drop the value, keep the item (and its client flags? no: zeroed). */
        enum mc_alloc_err err;
        mc_item *n = mc_item_alloc(m->rkey, m->nrkey, 0, it->exptime, 0, &err);
        if (n)
            mc_item_link_locked(n, it, hv);
        code = "HD";
        MC_STAT_ADD(&s->th->st, delete_hits, 1);
        MC_SLAB_HIT(s->th, delete_hits);
    } else {
        mc_item_unlink_locked(it, hv);
        code = "HD";
        MC_STAT_ADD(&s->th->st, delete_hits, 1);
        MC_SLAB_HIT(s->th, delete_hits);
    }
    mc_key_unlock(hv);
    meta_simple(s, code, m, quiet && code[0] == 'H'); /* q hides only HD */
}

static void meta_arith(struct session *s, const struct mc_meta_req *m, const char *line, size_t line_len)
{
    bool incr = !(m->flags & MC_MF('M')) || strchr("Ii+", m->mode);
    uint64_t delta = (m->flags & MC_MF('D')) ? m->delta : 1;
    uint64_t cmp = (m->flags & MC_MF('C')) ? m->C_cas : 0;
    uint64_t result = 0, cas = 0;
    bool quiet = m->flags & MC_MF('q');
    enum mc_status st = mc_arith(m->rkey, m->nrkey, incr, delta, cmp, &result, &cas), first = st;
    uint8_t hit_cls = mc_hit_clsid;
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
    /* Counted as incr/decr, as memcached 1.6.18 does (the first try: a
     * vivified miss is a miss). */
    struct mc_thread_stats *ts = &s->th->st;
    if (st == MC_OK && first == MC_OK) {
        if (incr) {
            MC_STAT_ADD(ts, incr_hits, 1);
            MC_SLAB_ADD(s->th, hit_cls, incr_hits, 1);
        } else {
            MC_STAT_ADD(ts, decr_hits, 1);
            MC_SLAB_ADD(s->th, hit_cls, decr_hits, 1);
        }
    } else if (first == MC_NOT_FOUND) {
        if (incr)
            MC_STAT_ADD(ts, incr_misses, 1);
        else
            MC_STAT_ADD(ts, decr_misses, 1);
    }
    if (st == MC_OK && (m->flags & MC_MF('T')))
        mc_touch(m->rkey, m->nrkey, mc_realtime(m->T_ttl));
    switch (st) {
    case MC_OK: break;
    case MC_NOT_FOUND: meta_simple(s, "NF", m, false); return;
    case MC_EXISTS: meta_simple(s, "EX", m, false); return;
    case MC_NON_NUMERIC: mc_out_line(s, "CLIENT_ERROR cannot increment or decrement non-numeric value"); return;
    default: mc_out_line(s, "SERVER_ERROR out of memory"); return;
    }
    if (quiet) /* q: success (HD or VA) is not sent */
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
    mc_watch_mute = true; /* a re-read for the flags: watchers saw the lookup once, as memcached logs it */
    mc_item *it = mc_item_find_locked(m->rkey, m->nrkey, hv);
    mc_watch_mute = false;
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
    mc_out_add(s, o, pos);
}

static void meta_debug(struct session *s, const struct mc_meta_req *m)
{
    uint64_t hv = mc_hash(m->rkey, m->nrkey);
    mc_key_lock(hv);
    mc_item *it = mc_item_find_locked(m->rkey, m->nrkey, hv);
    if (!it) {
        mc_key_unlock(hv);
        mc_out_add(s, "EN\r\n", 4);
        return;
    }
    uint32_t now = mc_now();
    char buf[700];
    int n = snprintf(buf, sizeof buf, "ME %.*s exp=%" PRId64 " la=%u cas=%" PRIu64 " fetch=%s cls=%u size=%zu\r\n",
                     (int)m->nkey, m->key, it->exptime == 0 ? (int64_t)-1 : (int64_t)it->exptime - (int64_t)now,
                     now - it->atime, it->cas, (mc_bits(it) & MC_IT_FETCHED) ? "yes" : "no", it->clsid,
                     mc_item_total(it->nkey, it->nbytes));
    mc_key_unlock(hv);
    mc_out_add(s, buf, (size_t)n);
}

static void meta_store_done(struct session *s, enum mc_status st, uint64_t cas, const char *key, size_t nkey)
{
    struct mc_pending_meta *pm = &s->pm;
    const char *code;
    switch (st) {
    case MC_STORED: code = "HD"; break;
    case MC_EXISTS: code = "EX"; break;
    case MC_NOT_FOUND: code = "NF"; break;
    case MC_TOO_LARGE: mc_out_line(s, "SERVER_ERROR object too large for cache"); return;
    case MC_NO_MEMORY: mc_out_line(s, "SERVER_ERROR out of memory storing object"); return;
    default: code = "NS"; break;
    }
    if (st == MC_STORED && (pm->flags & MC_MF('q')))
        return;
    char o[800];
    size_t pos = 2;
    memcpy(o, code, 2);
    if (pm->flags & MC_MF('c')) { /* c0 when nothing was stored, as 1.6.18 */
        o[pos++] = ' ';
        o[pos++] = 'c';
        pos += mc_u64toa(st == MC_STORED ? cas : 0, o + pos);
    }
    meta_add_opaque_key(s, o, &pos, pm->flags, pm->opaque, pm->nopaque, key, nkey, pm->key_b64, pm->key_first);
    o[pos++] = '\r';
    o[pos++] = '\n';
    mc_out_add(s, o, pos);
}

/* The data block of an ms is in (session.c checked its CRLF): store it by
 * its mode, C/I compare and answer with the flags kept in s->pm. */
void mc_cmd_meta_stored(struct session *s, mc_item *it)
{
    char key[MC_KEY_MAX + 1];
    size_t nkey = it->nkey;
    memcpy(key, mc_key(it), nkey);
    uint64_t newcas = 0;
    struct mc_pending_meta *pm = &s->pm;
    enum mc_store_op op = MC_OP_SET;
    switch (pm->mode) {
    case 'E':
    case 'e': op = MC_OP_ADD; break;
    case 'A':
    case 'a': op = MC_OP_APPEND; break;
    case 'P':
    case 'p': op = MC_OP_PREPEND; break;
    case 'R':
    case 'r': op = MC_OP_REPLACE; break;
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
        st = mc_store(it, MC_OP_CAS, cmp, &newcas); /* C0 never matches */
    } else {
        st = mc_store(it, op, cmp, &newcas);
    }
    meta_store_done(s, st, newcas, key, nkey);
}

void mc_cmd_meta(struct session *s, const struct mc_text_req *tr)
{
    struct mc_meta_req m;
    /* cmd_meta stays 0, as memcached 1.6.18 counts it only in its proxy. */
    if (mc_meta_parse(tr->line, tr->line_len, tr->consumed, &m) != MC_PARSE_OK) {
        MC_STAT_ADD(&s->th->st, protocol_errors, 1);
        mc_out_line(s, m.error);
        if (m.swallow >= 0)
            mc_sess_begin_swallow(s, (uint64_t)m.swallow);
        return;
    }
    switch (m.cmd) {
    case MC_META_NOOP: mc_out_add(s, "MN\r\n", 4); return;
    case MC_META_GET: meta_get(s, &m, tr->line, tr->line_len); return;
    case MC_META_DELETE: meta_delete(s, &m); return;
    case MC_META_ARITH: meta_arith(s, &m, tr->line, tr->line_len); return;
    case MC_META_DEBUG: meta_debug(s, &m); return;
    case MC_META_SET: {
        const char *err;
        int64_t exptime = (m.flags & MC_MF('T')) ? m.T_ttl : 0;
        uint32_t flags = (m.flags & MC_MF('F')) ? m.F_flags : 0;
        s->kind = MC_PEND_META;
        s->pm.flags = m.flags;
        s->pm.nopaque = (uint8_t)m.nopaque;
        memcpy(s->pm.opaque, m.opaque ? m.opaque : "", m.nopaque);
        s->pm.mode = (m.flags & MC_MF('M')) ? m.mode : 'S';
        s->pm.C_cas = m.C_cas;
        s->pm.E_cas = m.E_cas;
        s->pm.key_b64 = m.flags & MC_MF('b');
        s->pm.key_first = m.key_first;
        if (!mc_sess_begin_store(s, m.rkey, m.nrkey, flags, exptime, m.datalen, &err)) {
            if (s->pm.mode == 'S' || s->pm.mode == 's')
                mc_delete(m.rkey, m.nrkey, 0); /* no stale value after a failed set */
            mc_out_line(s, err);
            mc_sess_begin_swallow(s, (uint64_t)m.datalen + 2);
        }
        return;
    }
    }
}
