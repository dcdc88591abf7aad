/* cmd_bin: the binary protocol's commands run against the store. The
 * packet has been framed by session.c and decoded by proto_bin.c
 * (mc_bin_decode: lengths checked, extras read); this file only acts on
 * the decoded request and writes the replies. */
#include <stdlib.h>
#include <string.h>

#include "common/stats.h"
#include "memcached/proto.h"
#include "memcached/session.h"
#include "memcached/extstore.h"

/* The value is val, or when val is NULL, the item vit's (chunked or not). */
static void bin_reply_v(struct session *s, uint8_t opcode, uint32_t opaque, uint16_t status, uint64_t cas,
                        const void *ext, uint8_t extlen, const void *key, uint16_t keylen, const void *val,
                        uint32_t vlen, mc_item *vit)
{
    size_t total = MC_BIN_HDR + extlen + keylen + vlen;
    uint8_t *o = (uint8_t *)mc_out_reserve(s, total);
    if (!o)
        return;
    mc_bin_write_header(o, opcode, keylen, extlen, status, (uint32_t)(extlen + keylen + vlen), opaque, cas);
    size_t pos = MC_BIN_HDR;
    if (extlen)
        memcpy(o + pos, ext, extlen), pos += extlen;
    if (keylen)
        memcpy(o + pos, key, keylen), pos += keylen;
    if (vlen && val)
        memcpy(o + pos, val, vlen), pos += vlen;
    else if (vlen && vit)
        mc_value_out(vit, (char *)o + pos), pos += vlen;
    mc_out_commit(s, pos);
}

static void bin_reply(struct session *s, uint8_t opcode, uint32_t opaque, uint16_t status, uint64_t cas,
                      const void *ext, uint8_t extlen, const void *key, uint16_t keylen, const void *val, uint32_t vlen)
{
    bin_reply_v(s, opcode, opaque, status, cas, ext, extlen, key, keylen, val, vlen, NULL);
}

void mc_cmd_bin_error(struct session *s, uint8_t opcode, uint32_t opaque, uint16_t status)
{
    const char *msg = mc_bin_status_text(status);
    bin_reply(s, opcode, opaque, status, 0, NULL, 0, NULL, 0, msg, (uint32_t)strlen(msg));
    /* As memcached: after "invalid arguments" the connection is closed
     * (the client and we disagree about the framing). */
    if (status == MC_BIN_EINVAL)
        s->bin_close = true;
}

void mc_cmd_bin_oom(struct session *s, uint8_t opcode, uint32_t opaque)
{
    static const char msg[] = "out of memory writing get response";
    bin_reply(s, opcode, opaque, MC_BIN_ENOMEM, 0, NULL, 0, NULL, 0, msg, sizeof msg - 1);
}

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

static void bin_stats_cb(const char *name, const char *value, void *arg)
{
    void **a = arg;
    struct session *s = a[0];
    const struct mc_bin_req *r = a[1];
    bin_reply(s, r->opcode, r->opaque, MC_BIN_OK, 0, NULL, 0, name, (uint16_t)strlen(name), value,
              (uint32_t)strlen(value));
}

static void bin_get(struct session *s, const struct mc_bin_req *r, const struct mc_bin_cmd *c)
{
    const char *key = (const char *)r->key;
    size_t nkey = r->keylen;
    struct mc_thread_stats *ts = &s->th->st;
    uint64_t hv = mc_hash(key, nkey);
    /* A GAT counts as a touch only, as in memcached 1.6.18. */
    if (c->touch)
        MC_STAT_ADD(ts, cmd_touch, 1);
    else
        MC_STAT_ADD(ts, cmd_get, 1);
    mc_key_lock(hv);
    mc_item *it = mc_item_find_locked(key, nkey, hv);
    const char *ev = NULL; /* the value, when it was read from extstore */
    uint32_t vlen = 0;
    if (it && __builtin_expect(mc_item_is_ext(it), 0) && c->want_value) {
        bool miss;
        if (!(ev = mc_ext_value(s, it, hv, &vlen, &miss))) {
            if (!miss) { /* being read: this request runs again (extstore.c) */
                mc_key_unlock(hv);
                if (c->touch)
                    MC_STAT_ADD(ts, cmd_touch, (uint64_t)-1);
                else
                    MC_STAT_ADD(ts, cmd_get, (uint64_t)-1);
                return;
            }
            it = NULL;
        }
    }
    if (mc_detail_on())
        mc_prefix_record(key, nkey, MC_PREFIX_GET, it != NULL);
    if (!it) {
        mc_key_unlock(hv);
        if (c->touch) {
            MC_STAT_ADD(ts, touch_misses, 1);
        } else {
            MC_STAT_ADD(ts, get_misses, 1);
            MC_STAT_MISS_REASON(ts);
        }
        if (c->quiet)
            return;
        if (c->want_key)
            bin_reply(s, r->opcode, r->opaque, MC_BIN_KEY_ENOENT, 0, NULL, 0, key, (uint16_t)nkey, NULL, 0);
        else
            mc_cmd_bin_error(s, r->opcode, r->opaque, MC_BIN_KEY_ENOENT);
        return;
    }
    if (c->touch) {
        it->exptime = mc_realtime(c->exptime);
        MC_STAT_ADD(ts, touch_hits, 1);
        MC_SLAB_ADD(s->th, it->clsid, touch_hits, 1);
    }
    mc_item_bump(it);
    if (!c->touch) {
        MC_STAT_ADD(ts, get_hits, 1);
        MC_SLAB_ADD(s->th, it->clsid, get_hits, 1);
    }
    uint8_t ext[4];
    wr32(ext, it->flags);
    if (!ev)
        vlen = it->nbytes;
    bin_reply_v(s, r->opcode, r->opaque, MC_BIN_OK, it->cas, ext, 4, c->want_key ? key : NULL,
                c->want_key ? (uint16_t)nkey : 0, c->want_value ? ev : NULL, c->want_value ? vlen : 0,
                c->want_value && !ev ? it : NULL);
    mc_key_unlock(hv);
}

static void bin_store(struct session *s, const struct mc_bin_req *r, const struct mc_bin_cmd *c)
{
    const char *key = (const char *)r->key;
    size_t nkey = r->keylen;
    enum mc_alloc_err err = MC_ALLOC_TOO_LARGE;
    mc_item *it = NULL;
    if (mc_detail_on())
        mc_prefix_record(key, nkey, MC_PREFIX_SET, false);
    if (r->vlen <= mc_settings.item_size_max)
        it = mc_item_alloc(key, nkey, c->flags, mc_realtime(c->exptime), r->vlen, &err);
    if (!it) {
        if (c->store == MC_BINS_SET)
            mc_delete(key, nkey, 0); /* no stale value after a failed set */
        mc_cmd_bin_error(s, r->opcode, r->opaque, err == MC_ALLOC_TOO_LARGE ? MC_BIN_E2BIG : MC_BIN_ENOMEM);
        return;
    }
    mc_value_write(it, 0, (const char *)r->value, r->vlen);
    enum mc_store_op op;
    switch (c->store) {
    case MC_BINS_SET: op = r->cas ? MC_OP_CAS : MC_OP_SET; break;
    case MC_BINS_ADD: op = MC_OP_ADD; break;
    case MC_BINS_REPLACE: op = MC_OP_REPLACE; break;
    case MC_BINS_APPEND: op = MC_OP_APPEND; break;
    default: op = MC_OP_PREPEND; break;
    }
    uint64_t cas = 0;
    int clsid = it->clsid;
    enum mc_status st = mc_store(it, op, r->cas, &cas);
    MC_STAT_ADD(&s->th->st, cmd_set, 1);
    MC_SLAB_ADD(s->th, clsid, cmd_set, 1);
    if (op == MC_OP_CAS && st == MC_STORED) {
        MC_STAT_ADD(&s->th->st, cas_hits, 1);
        MC_SLAB_HIT(s->th, cas_hits);
    }
    if (st == MC_STORED) {
        if (!c->quiet)
            bin_reply(s, r->opcode, r->opaque, MC_BIN_OK, cas, NULL, 0, NULL, 0, NULL, 0);
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
        if (op == MC_OP_ADD)
            status = MC_BIN_KEY_EEXISTS;
        else if (op == MC_OP_REPLACE)
            status = MC_BIN_KEY_ENOENT;
        else
            status = MC_BIN_NOT_STORED;
        break;
    }
    mc_cmd_bin_error(s, r->opcode, r->opaque, status);
}

static void bin_arith(struct session *s, const struct mc_bin_req *r, const struct mc_bin_cmd *c)
{
    const char *key = (const char *)r->key;
    size_t nkey = r->keylen;
    struct mc_thread_stats *ts = &s->th->st;
    uint64_t result = 0, cas = 0;
    enum mc_status st = mc_arith(key, nkey, c->incr, c->delta, r->cas, &result, &cas);
    if (st == MC_NOT_FOUND && c->create && r->cas == 0) {
        char buf[24];
        size_t n = mc_u64toa(c->initial, buf);
        enum mc_alloc_err err;
        mc_item *it = mc_item_alloc(key, nkey, 0, mc_realtime(c->exptime), n, &err);
        if (!it) {
            st = MC_NO_MEMORY;
        } else {
            memcpy(mc_value(it), buf, n);
            st = mc_store(it, MC_OP_ADD, 0, &cas);
            if (st == MC_STORED) {
                result = c->initial;
                st = MC_OK;
            } else {
                st = mc_arith(key, nkey, c->incr, c->delta, 0, &result, &cas);
            }
        }
    }
    if (st == MC_OK) {
        if (c->incr) {
            MC_STAT_ADD(ts, incr_hits, 1);
            MC_SLAB_HIT(s->th, incr_hits);
        } else {
            MC_STAT_ADD(ts, decr_hits, 1);
            MC_SLAB_HIT(s->th, decr_hits);
        }
        if (!c->quiet) {
            uint8_t v[8];
            wr64(v, result);
            bin_reply(s, r->opcode, r->opaque, MC_BIN_OK, cas, NULL, 0, NULL, 0, v, 8);
        }
        return;
    }
    if (st == MC_NOT_FOUND) {
        if (c->incr)
            MC_STAT_ADD(ts, incr_misses, 1);
        else
            MC_STAT_ADD(ts, decr_misses, 1);
    }
    mc_cmd_bin_error(s, r->opcode, r->opaque,
                     st == MC_NOT_FOUND     ? MC_BIN_KEY_ENOENT
                     : st == MC_EXISTS      ? MC_BIN_KEY_EEXISTS
                     : st == MC_NON_NUMERIC ? MC_BIN_DELTA_BADVAL
                                            : MC_BIN_ENOMEM);
}

static void bin_stat(struct session *s, const struct mc_bin_req *r)
{
    char group[64];
    size_t n = r->keylen < sizeof group - 1 ? r->keylen : sizeof group - 1;
    memcpy(group, r->key, n);
    group[n] = 0;
    if (n && strcmp(group, "reset") == 0) {
        mc_stats_reset();
    } else if (n >= 6 && strncmp(group, "detail", 6) == 0) {
        /* detail on|off|dump over binary: accepted, not answered with data */
    } else if (n && strcmp(group, "sizes") == 0) {
        bin_reply(s, r->opcode, r->opaque, MC_BIN_OK, 0, NULL, 0, "sizes_status", 12, "disabled", 8);
    } else {
        void *a[2] = { s, (void *)r };
        if (stats_visit(group, bin_stats_cb, a) < 0) {
            mc_cmd_bin_error(s, r->opcode, r->opaque, MC_BIN_KEY_ENOENT);
            return;
        }
    }
    bin_reply(s, r->opcode, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, NULL, 0);
}

int mc_cmd_bin(struct session *s, const struct mc_bin_req *r)
{
    struct mc_bin_cmd c;
    mc_bin_decode(r, &c);
    uint8_t op = r->opcode;
    struct mc_thread_stats *ts = &s->th->st;

    if (mc_settings.sasl && !s->authenticated && !c.pre_auth) {
        mc_cmd_bin_error(s, op, r->opaque, MC_BIN_AUTH_ERROR);
        return 0;
    }
    if (c.status != MC_BIN_OK) {
        mc_cmd_bin_error(s, op, r->opaque, c.status);
        return 0;
    }
    switch (c.kind) {
    case MC_BINK_GET: bin_get(s, r, &c); return 0;
    case MC_BINK_STORE: bin_store(s, r, &c); return 0;
    case MC_BINK_DELETE: {
        if (mc_detail_on())
            mc_prefix_record((const char *)r->key, r->keylen, MC_PREFIX_DEL, false);
        enum mc_status st = mc_delete((const char *)r->key, r->keylen, r->cas);
        if (st == MC_DELETED) {
            MC_STAT_ADD(ts, delete_hits, 1);
            MC_SLAB_HIT(s->th, delete_hits);
            if (!c.quiet)
                bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, NULL, 0);
        } else {
            MC_STAT_ADD(ts, delete_misses, 1);
            mc_cmd_bin_error(s, op, r->opaque, st == MC_EXISTS ? MC_BIN_KEY_EEXISTS : MC_BIN_KEY_ENOENT);
        }
        return 0;
    }
    case MC_BINK_ARITH: bin_arith(s, r, &c); return 0;
    case MC_BINK_QUIT:
        if (!c.quiet)
            bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, NULL, 0);
        s->close_normal = true;
        return 1;
    case MC_BINK_FLUSH:
        if (mc_settings.flush_disabled) {
            mc_cmd_bin_error(s, op, r->opaque, MC_BIN_AUTH_ERROR);
            return 0;
        }
        MC_STAT_ADD(ts, cmd_flush, 1);
        mc_flush(c.has_delay ? c.delay : 0);
        if (!c.quiet)
            bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, NULL, 0);
        return 0;
    case MC_BINK_NOOP: bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, NULL, 0); return 0;
    case MC_BINK_VERSION:
        bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, MC_VERSION, (uint32_t)strlen(MC_VERSION));
        return 0;
    case MC_BINK_VERBOSITY:
        mc_settings.verbose = (int)c.verbosity;
        bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, NULL, 0);
        return 0;
    case MC_BINK_STAT: bin_stat(s, r); return 0;
    case MC_BINK_SASL_LIST:
        if (!mc_settings.sasl) {
            mc_cmd_bin_error(s, op, r->opaque, MC_BIN_UNKNOWN_COMMAND);
            return 0;
        }
        bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, "PLAIN", 5);
        return 0;
    case MC_BINK_SASL_AUTH:
        if (!mc_settings.sasl) {
            mc_cmd_bin_error(s, op, r->opaque, MC_BIN_UNKNOWN_COMMAND);
            return 0;
        }
        MC_STAT_ADD(ts, auth_cmds, 1);
        if (c.plain_ok && mc_sasl_check(c.user, c.nuser, c.pass, c.npass)) {
            s->authenticated = true;
            bin_reply(s, op, r->opaque, MC_BIN_OK, 0, NULL, 0, NULL, 0, "Authenticated", 13);
        } else {
            MC_STAT_ADD(ts, auth_errors, 1);
            mc_cmd_bin_error(s, op, r->opaque, MC_BIN_AUTH_ERROR);
            mc_sess_auth_failed(s);
        }
        return 0;
    case MC_BINK_UNKNOWN: break;
    }
    mc_cmd_bin_error(s, op, r->opaque, MC_BIN_UNKNOWN_COMMAND);
    return 0;
}
