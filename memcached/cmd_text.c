/* cmd_text: the text protocol's commands run against the store: the get
 * family, storage commands (their data block is read by session.c),
 * arithmetic, delete, touch, flush_all, stats and the maintenance commands
 * (lru_crawler, slabs, lru). Replies go through the session's mc_out_*
 * helpers; nothing here reads the socket. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/stats.h"
#include "memcached/proto.h"
#include "memcached/udp.h"
#include "memcached/session.h"
#include "memcached/extstore.h"
#include "memcached/watch.h"

/* ------------------------------------------------------------------ */
/* text protocol: gets */

/* Most reply bytes one get line may queue, whatever read_buf_mem_limit
 * says (0 there means no global bound). */
#define MC_GET_REPLY_MAX (1024u << 20)

static void text_get(struct session *s, const struct mc_text_req *r)
{
    bool with_cas = r->cmd == MC_TXT_GETS || r->cmd == MC_TXT_GATS;
    bool touch = r->cmd == MC_TXT_GAT || r->cmd == MC_TXT_GATS;
    uint32_t exptime = touch ? mc_realtime(r->exptime) : 0;
    size_t queued = mc_out_queued(s);
    const char *p = r->keys, *end = r->keys + r->keys_len, *key;
    size_t nkey;
    uint64_t hits = 0, misses = 0;
    /* A get naming on-disk keys runs again once their reads are in. The
     * keys before the first one read were counted (per class, stats
     * detail, miss reasons) by the pass that queued the reads: the next
     * pass skips counting them; after the first read queued, a pass only
     * queues the other reads (extstore.c keeps the count). */
    size_t counted = __builtin_expect(s->ext != NULL, 0) ? mc_ext_counted(s) : 0, idx = 0;
    bool collecting = false;
    while (mc_text_next_key(&p, end, &key, &nkey)) {
        bool count = idx++ >= counted;
        if (idx > 1 && __builtin_expect(!mc_resp_obj_take(s), 0)) {
            /* memcached: a response object per key; none left answers
             * the error, the connection stays (session.c) */
            s->out_oom = true;
            s->out_oom_keep = true;
            break;
        }
        if (__builtin_expect(collecting, 0)) {
            uint64_t hv = mc_hash(key, nkey);
            mc_key_lock(hv);
            mc_item *it = mc_item_find_locked(key, nkey, hv);
            if (it && mc_item_is_ext(it)) {
                bool miss;
                uint32_t vlen;
                (void)mc_ext_value(s, it, hv, &vlen, &miss);
            }
            mc_key_unlock(hv);
            continue;
        }
        if (queued + s->olen > MC_GET_REPLY_MAX) {
            /* A get line naming the same big item thousands of times must
             * not make us buffer gigabytes: the session answers with
             * memcached's out-of-memory error and closes (session.c). */
            s->out_oom = true;
            break;
        }
        uint64_t hv = mc_hash(key, nkey);
        mc_key_lock(hv);
        mc_item *it = mc_item_find_locked(key, nkey, hv);
        const char *ev = NULL; /* the value, when it was read from extstore */
        uint32_t vlen = 0;
        if (it && __builtin_expect(mc_item_is_ext(it), 0)) {
            bool miss;
            if (!(ev = mc_ext_value(s, it, hv, &vlen, &miss))) {
                if (!miss) { /* being read: this get runs again (extstore.c) */
                    mc_key_unlock(hv);
                    if (idx - 1 > counted)
                        mc_ext_set_counted(s, idx - 1);
                    collecting = true;
                    continue;
                }
                it = NULL;
            }
        }
        if (__builtin_expect(mc_detail_on(), 0) && count)
            mc_prefix_record(key, nkey, MC_PREFIX_GET, it != NULL);
        if (!it) {
            mc_key_unlock(hv);
            misses++;
            if (count)
                MC_STAT_MISS_REASON(&s->th->st);
            continue;
        }
        if (touch)
            it->exptime = exptime;
        if (count) {
            if (touch)
                MC_SLAB_ADD(s->th, it->clsid, touch_hits, 1);
            else
                MC_SLAB_ADD(s->th, it->clsid, get_hits, 1);
            mc_item_bump(it);
        }
        if (!ev)
            vlen = it->nbytes;
        /* "VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n" in one piece. */
        size_t need = 6 + nkey + 1 + 10 + 1 + 10 + 1 + 20 + 2 + vlen + 2;
        char *o = mc_out_reserve(s, need), *o0 = o;
        if (!o) { /* s->out_oom is set: session.c answers the error */
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
        o += mc_u64toa(vlen, o);
        if (with_cas) {
            *o++ = ' ';
            o += mc_u64toa(mc_settings.no_cas ? 0 : it->cas, o);
        }
        *o++ = '\r';
        *o++ = '\n';
        if (__builtin_expect(ev != NULL, 0))
            memcpy(o, ev, vlen);
        else
            mc_value_out(it, o);
        o += vlen;
        mc_key_unlock(hv);
        *o++ = '\r';
        *o++ = '\n';
        mc_out_commit(s, (size_t)(o - o0));
        hits++;
    }
    if (__builtin_expect(s->ext != NULL, 0) && mc_ext_waiting(s))
        return; /* runs again with the values read: counted then */
    if (!s->out_oom)
        mc_out_add(s, "END\r\n", 5);
    struct mc_thread_stats *st = &s->th->st;
    if (touch) { /* gat/gats count as touches only, as in memcached 1.6.18 */
        MC_STAT_ADD(st, cmd_touch, hits + misses);
        MC_STAT_ADD(st, touch_hits, hits);
        MC_STAT_ADD(st, touch_misses, misses);
        return;
    }
    MC_STAT_ADD(st, cmd_get, hits + misses);
    MC_STAT_ADD(st, get_hits, hits);
    MC_STAT_ADD(st, get_misses, misses);
}

/* A get line refused for a key over 250 bytes (the parser checks every
 * key first). memcached has run the keys before that one by then: counted
 * their hits and misses, queued the reads of on-disk values and aborted
 * them (get_aborted_extstore). Count the same; the reply is the error
 * alone, as memcached's. */
void mc_cmd_text_get_refused(struct session *s, const struct mc_text_req *r)
{
    if ((r->cmd != MC_TXT_GET && r->cmd != MC_TXT_GETS) || !r->keys)
        return;
    const char *p = r->keys, *end = r->keys + r->keys_len, *key;
    size_t nkey;
    uint64_t hits = 0, misses = 0;
    while (mc_text_next_key(&p, end, &key, &nkey) && nkey <= MC_KEY_MAX_LEN) {
        uint64_t hv = mc_hash(key, nkey);
        mc_key_lock(hv);
        mc_item *it = mc_item_find_locked(key, nkey, hv);
        if (!it) {
            mc_key_unlock(hv);
            misses++;
            MC_STAT_MISS_REASON(&s->th->st);
            continue;
        }
        if (mc_item_is_ext(it))
            mc_ext_count_aborted();
        MC_SLAB_ADD(s->th, it->clsid, get_hits, 1);
        mc_key_unlock(hv);
        hits++;
    }
    struct mc_thread_stats *st = &s->th->st;
    MC_STAT_ADD(st, cmd_get, hits + misses);
    MC_STAT_ADD(st, get_hits, hits);
    MC_STAT_ADD(st, get_misses, misses);
}

/* The data block of set/add/replace/append/prepend/cas is in (session.c
 * checked its CRLF): store it and answer. */
void mc_cmd_text_stored(struct session *s, mc_item *it)
{
    uint64_t newcas = 0;
    enum mc_status st = mc_store(it, s->op, s->cas, &newcas);
    if (s->op == MC_OP_CAS) {
        if (st == MC_STORED) {
            MC_STAT_ADD(&s->th->st, cas_hits, 1);
            MC_SLAB_HIT(s->th, cas_hits);
        } else if (st == MC_EXISTS) {
            MC_STAT_ADD(&s->th->st, cas_badval, 1);
            MC_SLAB_HIT(s->th, cas_badval);
        } else if (st == MC_NOT_FOUND)
            MC_STAT_ADD(&s->th->st, cas_misses, 1);
    }
    if (s->noreply)
        return;
    switch (st) {
    case MC_STORED: mc_out_add(s, "STORED\r\n", 8); break;
    case MC_EXISTS: mc_out_add(s, "EXISTS\r\n", 8); break;
    case MC_NOT_FOUND: mc_out_add(s, "NOT_FOUND\r\n", 11); break;
    case MC_TOO_LARGE: mc_out_line(s, "SERVER_ERROR object too large for cache"); break;
    case MC_NO_MEMORY: mc_out_line(s, "SERVER_ERROR out of memory storing object"); break;
    default: mc_out_add(s, "NOT_STORED\r\n", 12); break;
    }
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
        if (incr) {
            MC_STAT_ADD(ts, incr_hits, 1);
            MC_SLAB_HIT(s->th, incr_hits);
        } else {
            MC_STAT_ADD(ts, decr_hits, 1);
            MC_SLAB_HIT(s->th, decr_hits);
        }
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
        mc_out_add(s, buf, n);
        break;
    }
    case MC_NOT_FOUND: mc_out_add(s, "NOT_FOUND\r\n", 11); break;
    case MC_NON_NUMERIC: mc_out_line(s, "CLIENT_ERROR cannot increment or decrement non-numeric value"); break;
    default: mc_out_line(s, "SERVER_ERROR out of memory"); break;
    }
}

static void stats_line_cb(const char *name, const char *value, void *arg)
{
    struct session *s = arg;
    evbuffer_add_printf(mc_out_evb(s), "STAT %s %s\r\n", name, value);
}

/* "stats": memcached 1.6.18's names in its order. The stats sources also
 * feed the metrics, which keep what memcached does not print: the core's
 * accept_fd_exhausted (and its threads, which memcached prints further
 * down, where ours comes), our protocol_errors, outofmemory and
 * total_malloced (memcached: in "stats slabs"), idle_kicks without
 * -o idle_timeout and rejected_connections without maxconns_fast. */
static void general_stats_text(struct session *s)
{
    static const char *const drop[] = { "accept_fd_exhausted", "protocol_errors", "outofmemory", "total_malloced",
                                        "udp_dropped" };
    struct evbuffer *all = evbuffer_new();
    if (!all) {
        mc_out_line(s, "SERVER_ERROR out of memory");
        return;
    }
    stats_render_text(all, "");
    bool core_threads = true;
    size_t len;
    char *line;
    while ((line = evbuffer_readln(all, &len, EVBUFFER_EOL_CRLF_STRICT)) != NULL) {
        const char *name = line + 5, *sp = memchr(name, ' ', len > 5 ? len - 5 : 0);
        size_t nn = sp ? (size_t)(sp - name) : 0;
        bool keep = len > 5 && memcmp(line, "STAT ", 5) == 0;
        for (size_t i = 0; keep && i < sizeof drop / sizeof drop[0]; i++)
            keep = !(nn == strlen(drop[i]) && memcmp(name, drop[i], nn) == 0);
        if (keep && nn == 7 && memcmp(name, "threads", 7) == 0 && core_threads) {
            core_threads = false;
            keep = false;
        }
        if (keep && nn == 10 && memcmp(name, "idle_kicks", 10) == 0 && mc_settings.idle_timeout <= 0)
            keep = false;
        if (keep && nn == 20 && memcmp(name, "rejected_connections", 20) == 0 && !mc_settings.maxconns_fast)
            keep = false; /* as memcached: only with maxconns_fast */
        uint64_t udp = 0;
        if (keep && ((nn == 16 && memcmp(name, "curr_connections", 16) == 0) ||
                     (nn == 17 && memcmp(name, "total_connections", 17) == 0)))
            udp = mc_udp_count(); /* memcached counts each UDP socket as a connection */
        if (keep && udp) {
            char buf[96];
            int k = snprintf(buf, sizeof buf, "STAT %.*s %" PRIu64 "\r\n", (int)nn, name,
                             (uint64_t)strtoull(sp + 1, NULL, 10) + udp);
            mc_out_add(s, buf, (size_t)k);
        } else if (keep) {
            mc_out_add(s, line, len);
            mc_out_add(s, "\r\n", 2);
        }
        free(line);
    }
    evbuffer_free(all);
    mc_out_add(s, "END\r\n", 5);
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
        general_stats_text(s);
        return;
    }
    if (strcmp(group, "reset") == 0) {
        mc_stats_reset();
        mc_out_line(s, "RESET");
        return;
    }
    const char *arg = r->args + n, *aend = r->args + r->args_len;
    if (strcmp(group, "detail") == 0) {
        /* Per-prefix counts (prefix.c), recorded only while on. */
        while (arg < aend && *arg == ' ')
            arg++;
        size_t an = (size_t)(aend - arg);
        if ((an == 2 && memcmp(arg, "on", 2) == 0) || (an == 3 && memcmp(arg, "off", 3) == 0)) {
            atomic_store(&mc_detail_enabled, an == 2);
            mc_out_line(s, "OK");
        } else if (an == 4 && memcmp(arg, "dump", 4) == 0) {
            mc_prefix_dump(mc_out_evb(s));
            mc_out_add(s, "END\r\n", 5);
        } else {
            mc_out_line(s, "CLIENT_ERROR usage: stats detail on|off|dump");
        }
        return;
    }
    if (strcmp(group, "cachedump") == 0) {
        if (mc_settings.dump_disabled) {
            mc_out_line(s, "CLIENT_ERROR stats cachedump not allowed");
            return;
        }
        uint32_t id = 0, limit = 0;
        const char *p = arg, *k;
        size_t nk;
        if (!mc_text_next_key(&p, aend, &k, &nk) || !mc_parse_u32(k, nk, &id) || !mc_text_next_key(&p, aend, &k, &nk) ||
            !mc_parse_u32(k, nk, &limit)) {
            mc_out_line(s, "CLIENT_ERROR bad command line");
            return;
        }
        if (id == 0 || id > (uint32_t)mc_nclasses) {
            mc_out_line(s, "CLIENT_ERROR Illegal slab id");
            return;
        }
        mc_cachedump(mc_out_evb(s), (int)id, limit);
        mc_out_add(s, "END\r\n", 5);
        return;
    }
    if (strcmp(group, "sizes") == 0) {
        mc_out_line(s, "STAT sizes_status disabled");
        mc_out_add(s, "END\r\n", 5);
        return;
    }
    if (strcmp(group, "conns") == 0) {
        mc_session_stats_conns(mc_out_evb(s));
        mc_out_add(s, "END\r\n", 5);
        return;
    }
    (void)stats_line_cb;
    if (stats_render_text(mc_out_evb(s), group) < 0) {
        mc_out_line(s, "ERROR");
        return;
    }
    mc_out_add(s, "END\r\n", 5);
}

/* ------------------------------------------------------------------ */
/* lru_crawler, slabs, lru: the store's maintenance commands */

static bool word_is(const char *w, size_t n, const char *lit) { return n == strlen(lit) && memcmp(w, lit, n) == 0; }

static void text_tuning(struct session *s, const struct mc_text_req *r)
{
    const char *p = r->args, *end = r->args + r->args_len, *w[6];
    size_t wn[6];
    int n = 0;
    while (n < 6 && mc_text_next_key(&p, end, &w[n], &wn[n]))
        n++;
    if (n == 0) {
        mc_out_line(s, "ERROR");
        return;
    }
    if (r->cmd == MC_TXT_LRU_CRAWLER) {
        if (word_is(w[0], wn[0], "enable") || word_is(w[0], wn[0], "disable")) {
            mc_settings.lru_crawler = w[0][0] == 'e';
            mc_out_line(s, "OK");
        } else if (n == 2 && (word_is(w[0], wn[0], "crawl") || word_is(w[0], wn[0], "metadump"))) {
            /* "hash" (metadump only): memcached walks its hash table; the
             * same items come out of our per-class walk. */
            bool all = word_is(w[1], wn[1], "all") || (w[0][0] == 'm' && word_is(w[1], wn[1], "hash"));
            if (!all) {
                /* a comma list of class ids, each must exist */
                const char *q = w[1], *qe = w[1] + wn[1];
                while (q < qe) {
                    const char *c = memchr(q, ',', (size_t)(qe - q));
                    size_t len = (size_t)((c ? c : qe) - q);
                    uint32_t id;
                    if (!mc_parse_u32(q, len, &id) || id == 0 || id > (uint32_t)mc_nclasses) {
                        mc_out_line(s, "BADCLASS invalid class id");
                        return;
                    }
                    q += len + (c ? 1 : 0);
                }
            }
            if (w[0][0] == 'c') {
                if (!mc_settings.lru_crawler) {
                    mc_out_line(s, "CLIENT_ERROR lru crawler disabled");
                    return;
                }
                mc_crawl_request(); /* the maintainer thread walks every class */
                mc_out_line(s, "OK");
            } else {
                if (!mc_settings.lru_crawler) {
                    mc_out_line(s, "CLIENT_ERROR lru crawler disabled");
                    return;
                }
                if (mc_settings.dump_disabled) {
                    mc_out_line(s, "ERROR metadump not allowed");
                    return;
                }
                if (s->olen || mc_out_queued(s)) {
                    /* As memcached: the dump must be the only reply in flight. */
                    mc_out_line(s, "ERROR cannot pipeline other commands before metadump");
                    return;
                }
                /* Streamed in pieces by the session (no whole dump in
                 * memory, no long lock hold). */
                struct mc_dump *d = malloc(sizeof *d);
                if (!d) {
                    s->out_oom = true;
                    return;
                }
                mc_dump_init(d);
                for (int id = 1; id <= mc_nclasses; id++)
                    d->want[id] = all;
                const char *q = w[1], *qe = w[1] + wn[1];
                while (!all && q < qe) {
                    const char *cm = memchr(q, ',', (size_t)(qe - q));
                    size_t len = (size_t)((cm ? cm : qe) - q);
                    uint32_t id;
                    if (mc_parse_u32(q, len, &id))
                        d->want[id] = true;
                    q += len + (cm ? 1 : 0);
                }
                mc_sess_begin_dump(s, d);
            }
        } else if (n == 2 && (word_is(w[0], wn[0], "sleep") || word_is(w[0], wn[0], "tocrawl"))) {
            mc_out_line(s, "OK"); /* pacing knobs: our crawler paces itself (see README) */
        } else {
            mc_out_line(s, "ERROR");
        }
        return;
    }
    if (r->cmd == MC_TXT_SLABS) {
        if (n == 3 && word_is(w[0], wn[0], "reassign")) {
            if (!mc_settings.slab_reassign) {
                mc_out_line(s, "CLIENT_ERROR slab reassignment disabled");
                return;
            }
            int64_t src, dst;
            if (!mc_parse_i32(w[1], wn[1], &src) || !mc_parse_i32(w[2], wn[2], &dst)) {
                mc_out_line(s, "CLIENT_ERROR bad command line format");
                return;
            }
            static const char *const replies[] = {
                [MC_REASSIGN_OK] = "OK",
                [MC_REASSIGN_BUSY] = "BUSY currently processing reassign request",
                [MC_REASSIGN_BADCLASS] = "BADCLASS invalid src or dst class id",
                [MC_REASSIGN_NOSPARE] = "NOSPARE source class has no spare pages",
                [MC_REASSIGN_SAME] = "SAME src and dst class are identical",
            };
            mc_out_line(s, replies[mc_slabs_reassign((int)src, (int)dst)]);
        } else if (n >= 2 && word_is(w[0], wn[0], "automove")) {
            uint32_t level;
            if (word_is(w[1], wn[1], "ratio")) {
                char num[32];
                char *e;
                double ratio = 0;
                if (n >= 3 && wn[2] < sizeof num) {
                    memcpy(num, w[2], wn[2]);
                    num[wn[2]] = 0;
                    ratio = strtod(num, &e);
                }
                if (n < 3 || wn[2] >= sizeof num || *e || e == num) {
                    mc_out_line(s, "ERROR");
                    return;
                }
                mc_settings.slab_automove_ratio = ratio;
            } else if (!mc_parse_u32(w[1], wn[1], &level)) {
                mc_out_line(s, "CLIENT_ERROR bad command line format");
                return;
            } else if (level > 2) {
                mc_out_line(s, "ERROR");
                return;
            } else {
                mc_settings.slab_automove = (int)level;
            }
            if (!r->noreply)
                mc_out_line(s, "OK");
        } else {
            mc_out_line(s, "ERROR");
        }
        return;
    }
    /* lru */
    if (word_is(w[0], wn[0], "tune") && n >= 5) {
        uint32_t hot, warm;
        char num[2][32];
        double f[2] = { 0, 0 };
        bool ok = mc_parse_u32(w[1], wn[1], &hot) && mc_parse_u32(w[2], wn[2], &warm);
        for (int i = 0; ok && i < 2; i++) {
            char *e;
            ok = wn[3 + i] < sizeof num[i];
            if (ok) {
                memcpy(num[i], w[3 + i], wn[3 + i]);
                num[i][wn[3 + i]] = 0;
                f[i] = strtod(num[i], &e);
                ok = e != num[i] && !*e;
            }
        }
        if (!ok)
            mc_out_line(s, "ERROR");
        else if (hot + warm > 80)
            mc_out_line(s, "ERROR hot and warm pcts must not exceed 80");
        else if (f[0] <= 0 || f[1] <= 0)
            mc_out_line(s, "ERROR hot/warm age factors must be greater than 0");
        else {
            mc_settings.hot_pct = (int)hot;
            mc_settings.warm_pct = (int)warm;
            mc_settings.hot_max_factor = f[0];
            mc_settings.warm_max_factor = f[1];
            if (!r->noreply)
                mc_out_line(s, "OK");
        }
    } else if (n >= 2 && word_is(w[0], wn[0], "mode") && mc_settings.lru_maintainer) {
        if (word_is(w[1], wn[1], "segmented") || word_is(w[1], wn[1], "flat")) {
            mc_settings.lru_segmented = word_is(w[1], wn[1], "segmented");
            if (!r->noreply)
                mc_out_line(s, "OK");
        } else {
            mc_out_line(s, "ERROR");
        }
    } else if (n >= 2 && word_is(w[0], wn[0], "temp_ttl") && mc_settings.lru_maintainer) {
        /* A negative TTL turns the TEMP LRU off; items in it stay there. */
        int64_t ttl;
        if (!mc_parse_i64(w[1], wn[1], &ttl) || ttl > INT32_MAX) {
            mc_out_line(s, "ERROR");
        } else {
            if (ttl < 0) {
                mc_settings.temp_lru = false;
            } else {
                mc_settings.temporary_ttl = (int)ttl;
                mc_settings.temp_lru = true;
            }
            if (!r->noreply)
                mc_out_line(s, "OK");
        }
    } else {
        mc_out_line(s, "ERROR");
    }
}

/* ------------------------------------------------------------------ */
/* text dispatch */

/* Returns -1 to close the connection now, 1 to close after writing. */
/* "watch": memcached 1.6.18's answers; from OK on the connection is a
 * log stream (watch.c) and its later input is ignored (session.c). */
static void text_watch(struct session *s, const struct mc_text_req *r)
{
    if (mc_watch_disabled) {
        mc_out_line(s, "CLIENT_ERROR watch commands not allowed");
        return;
    }
    if (s->olen || mc_out_queued(s)) {
        mc_out_line(s, "ERROR cannot pipeline other commands before watch");
        return;
    }
    switch (mc_watch_start(s, (uint32_t)r->delta)) {
    case MC_WATCH_ADD_TOO_MANY: mc_out_line(s, "WATCHER_TOO_MANY log watcher limit reached"); return;
    case MC_WATCH_ADD_FAILED: mc_out_line(s, "WATCHER_FAILED failed to add log watcher"); return;
    case MC_WATCH_ADD_OK: break;
    }
    mc_out_add(s, "OK\r\n", 4);
    s->state = MC_SESS_WATCH;
}

int mc_cmd_text(struct session *s, const struct mc_text_req *r)
{
    struct mc_thread_stats *ts = &s->th->st;
    switch (r->cmd) {
    case MC_TXT_GET:
    case MC_TXT_GETS:
    case MC_TXT_GAT:
    case MC_TXT_GATS: text_get(s, r); return 0;
    case MC_TXT_SET:
    case MC_TXT_ADD:
    case MC_TXT_REPLACE:
    case MC_TXT_APPEND:
    case MC_TXT_PREPEND:
    case MC_TXT_CAS: {
        static const enum mc_store_op ops[] = {
            [MC_TXT_SET] = MC_OP_SET,       [MC_TXT_ADD] = MC_OP_ADD,         [MC_TXT_REPLACE] = MC_OP_REPLACE,
            [MC_TXT_APPEND] = MC_OP_APPEND, [MC_TXT_PREPEND] = MC_OP_PREPEND, [MC_TXT_CAS] = MC_OP_CAS,
        };
        s->kind = MC_PEND_TEXT;
        s->op = ops[r->cmd];
        if (mc_detail_on())
            mc_prefix_record(r->key, r->nkey, MC_PREFIX_SET, false);
        s->cas = r->cas;
        s->noreply = r->noreply;
        const char *err;
        if (!mc_sess_begin_store(s, r->key, r->nkey, r->flags, r->exptime, r->bytes, &err)) {
            /* As memcached: a set that cannot be stored removes the old
             * value (no stale data), and noreply silences "too large" but
             * not running out of memory. */
            if (r->cmd == MC_TXT_SET)
                mc_delete(r->key, r->nkey, 0);
            if (!r->noreply || strstr(err, "out of memory"))
                mc_out_line(s, err);
            mc_sess_begin_swallow(s, (uint64_t)r->bytes + 2);
        }
        return 0;
    }
    case MC_TXT_INCR:
    case MC_TXT_DECR: text_arith(s, r); return 0;
    case MC_TXT_DELETE: {
        if (mc_detail_on())
            mc_prefix_record(r->key, r->nkey, MC_PREFIX_DEL, false);
        enum mc_status st = mc_delete(r->key, r->nkey, 0);
        if (st == MC_DELETED) {
            MC_STAT_ADD(ts, delete_hits, 1);
            MC_SLAB_HIT(s->th, delete_hits);
        } else {
            MC_STAT_ADD(ts, delete_misses, 1);
        }
        if (!r->noreply)
            mc_out_str(s, st == MC_DELETED ? "DELETED\r\n" : "NOT_FOUND\r\n");
        return 0;
    }
    case MC_TXT_TOUCH: {
        enum mc_status st = mc_touch(r->key, r->nkey, mc_realtime(r->exptime));
        MC_STAT_ADD(ts, cmd_touch, 1);
        if (st == MC_TOUCHED) {
            MC_STAT_ADD(ts, touch_hits, 1);
            MC_SLAB_HIT(s->th, touch_hits);
        } else {
            MC_STAT_ADD(ts, touch_misses, 1);
        }
        if (!r->noreply)
            mc_out_str(s, st == MC_TOUCHED ? "TOUCHED\r\n" : "NOT_FOUND\r\n");
        return 0;
    }
    case MC_TXT_FLUSH_ALL:
        if (mc_settings.flush_disabled) {
            mc_out_line(s, "CLIENT_ERROR flush_all not allowed");
            return 0;
        }
        MC_STAT_ADD(ts, cmd_flush, 1);
        mc_flush(r->has_delay ? r->exptime : 0);
        if (!r->noreply)
            mc_out_add(s, "OK\r\n", 4);
        return 0;
    case MC_TXT_VERSION: mc_out_line(s, "VERSION " MC_VERSION); return 0;
    case MC_TXT_VERBOSITY:
        mc_settings.verbose = (int)r->delta;
        if (!r->noreply)
            mc_out_add(s, "OK\r\n", 4);
        return 0;
    case MC_TXT_QUIT: s->close_normal = true; return -1;
    case MC_TXT_STATS: text_stats(s, r); return 0;
    case MC_TXT_SHUTDOWN:
        if (!mc_settings.shutdown_enabled) {
            mc_out_line(s, "ERROR: shutdown not enabled");
            return 0;
        }
        {
            const char *p = r->args, *end = r->args + r->args_len, *w0, *w1;
            size_t n0, n1;
            bool has0 = mc_text_next_key(&p, end, &w0, &n0);
            bool has1 = has0 && mc_text_next_key(&p, end, &w1, &n1);
            if (!has0) {
                mc_shutdown_request(false); /* memcached: SIGINT, stop now */
            } else if (!has1 && word_is(w0, n0, "graceful")) {
                mc_shutdown_request(true); /* memcached: SIGUSR1 */
            } else {
                mc_out_line(s, "CLIENT_ERROR invalid shutdown mode");
                return 0;
            }
        }
        return 1;
    case MC_TXT_CACHE_MEMLIMIT:
        /* Megabytes, as memcached: under 8 is too small; over 10^9 is
         * taken for bytes given by mistake and refused (no overflow: the
         * parser took it as a u64). Lowering it frees pages in the
         * maintainer thread (mc_slabs_release_over_limit). */
        if (r->delta < 8) {
            mc_out_line(s, "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m");
            return 0;
        }
        if (r->delta > 1000000000) {
            mc_out_line(s, "MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes");
            return 0;
        }
        if (mc_slabs_preallocated()) { /* -L: reserved at start, as memcached's */
            mc_out_line(s, "MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust");
            return 0;
        }
        mc_slabs_set_limit(r->delta * 1024 * 1024);
        mc_settings.maxbytes = r->delta * 1024 * 1024;
        if (!r->noreply)
            mc_out_add(s, "OK\r\n", 4);
        return 0;
    case MC_TXT_META: mc_cmd_meta(s, r); return 0;
    case MC_TXT_EXTSTORE: {
        const char *reply = mc_ext_command(r->args, r->args_len);
        if (!r->noreply)
            mc_out_line(s, reply);
        return 0;
    }
    case MC_TXT_REFRESH_CERTS: {
        char msg[1024];
        if (mc_tls_refresh(msg, sizeof msg) < 0)
            mc_out_line(s, msg); /* memcached's line, sent even with noreply, as 1.6.18 */
        else if (!r->noreply)
            mc_out_line(s, "OK");
        return 0;
    }
    case MC_TXT_LRU_CRAWLER:
    case MC_TXT_SLABS:
    case MC_TXT_LRU:
    case MC_TXT_MISC_OK: text_tuning(s, r); return 0;
    case MC_TXT_WATCH: text_watch(s, r); return 0;
    case MC_TXT_NONE: break;
    }
    mc_out_line(s, "ERROR");
    return 0;
}
