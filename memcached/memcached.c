/* memcached: the daemon's main: settings (memcached's own flags plus the
 * core's), start-up wiring (store, maintainer thread, listeners), stats
 * sources and console commands. The protocol work is in session.c, the
 * store in items.c/slabs.c/assoc.c/crawler.c. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <openssl/ssl.h>

#include "common/admin.h"
#include "common/config.h"
#include "common/conn.h"
#include "common/daemon.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/stats.h"
#include "common/tls.h"
#include "common/uring.h"
#include "memcached/auth.h"
#include "memcached/mc.h"
#include "memcached/proto.h"
#include "memcached/restart.h"
#include "memcached/session.h"
#include "memcached/extstore.h"
#include "memcached/udp.h"
#include "memcached/watch.h"

struct mc_settings mc_settings;
static char *dummy_str;

/* -m: a plain number is megabytes (memcached), a suffix gives a size. */
static int set_maxbytes(const struct cfg_setting *s, const char *v, char *err, size_t errlen)
{
    (void)s;
    uint64_t n;
    if (!v || cfg_parse_size(v, &n) < 0) {
        snprintf(err, errlen, "memory-limit: '%s' is not a size", v ? v : "");
        return -1;
    }
    bool plain = true;
    for (const char *p = v; *p; p++)
        if (*p < '0' || *p > '9')
            plain = false;
    mc_settings.maxbytes = plain ? n * 1024 * 1024 : n;
    return 0;
}

static int set_unix_mask(const struct cfg_setting *s, const char *v, char *err, size_t errlen)
{
    (void)s;
    char *end;
    long m = strtol(v ? v : "", &end, 8);
    if (!v || *end || m < 0 || m > 0777) {
        snprintf(err, errlen, "unix-mask: '%s' is not an octal mode", v ? v : "");
        return -1;
    }
    mc_settings.unix_mask = (int)m;
    return 0;
}

/* -o: memcached's extended options, one table: name, kind, where the value
 * goes, its bounds. Values are parsed strictly (a bad number refuses to
 * start, naming the option). Which of them change what this store does
 * and which are only shown in "stats settings" is in README.md. */
enum ext_kind { EXT_FLAG_ON, EXT_FLAG_OFF, EXT_INT, EXT_U64_MB, EXT_DOUBLE, EXT_STR };
struct ext_opt {
    const char *name;
    enum ext_kind kind;
    void *where;
    double min, max;
};

static bool mc_hashpower_given;
static bool mc_no_modern = true;        /* false once -o no_modern is seen */
static bool mc_chunk_max_page;          /* no_modern: slab_chunk_max defaults to a page */
static bool mc_slab_automove_on = true; /* false once -o no_slab_automove is seen */

static const struct ext_opt ext_opts[] = {
    { "maxconns_fast", EXT_FLAG_ON, &mc_settings.maxconns_fast, 0, 0 },
    { "hashpower", EXT_INT, &mc_settings.hashpower, 12, 32 },
    { "tail_repair_time", EXT_INT, &mc_settings.tail_repair_time, 10, 1e9 },
    { "hash_algorithm", EXT_STR, &mc_settings.hash_algorithm, 0, 0 },
    { "lru_crawler", EXT_FLAG_ON, &mc_settings.lru_crawler, 0, 0 },
    { "no_lru_crawler", EXT_FLAG_OFF, &mc_settings.lru_crawler, 0, 0 },
    { "lru_crawler_sleep", EXT_INT, &mc_settings.lru_crawler_sleep, 0, 1000000 },
    { "lru_crawler_tocrawl", EXT_INT, &mc_settings.lru_crawler_tocrawl, 0, 2e9 },
    { "lru_maintainer", EXT_FLAG_ON, &mc_settings.lru_maintainer, 0, 0 },
    { "no_lru_maintainer", EXT_FLAG_OFF, &mc_settings.lru_maintainer, 0, 0 },
    { "hot_lru_pct", EXT_INT, &mc_settings.hot_pct, 1, 80 },
    { "warm_lru_pct", EXT_INT, &mc_settings.warm_pct, 1, 80 },
    { "hot_max_factor", EXT_DOUBLE, &mc_settings.hot_max_factor, 0, 1e6 },
    { "warm_max_factor", EXT_DOUBLE, &mc_settings.warm_max_factor, 0, 1e6 },
    { "temporary_ttl", EXT_INT, &mc_settings.temporary_ttl, 0, 2e9 },
    { "idle_timeout", EXT_INT, &mc_settings.idle_timeout, 0, 2e9 },
    { "slab_reassign", EXT_FLAG_ON, &mc_settings.slab_reassign, 0, 0 },
    { "slab_automove", EXT_INT, &mc_settings.slab_automove, 0, 2 },
    { "slab_automove_ratio", EXT_DOUBLE, &mc_settings.slab_automove_ratio, 0, 1 },
    { "slab_automove_window", EXT_INT, &mc_settings.slab_automove_window, 1, 1e6 },
    { "slab_automove_freeratio", EXT_DOUBLE, &mc_settings.slab_automove_freeratio, 0, 1 },
    { "slab_chunk_max", EXT_INT, &mc_settings.slab_chunk_max, 1024, 1 << 30 },
    { "read_buf_mem_limit", EXT_U64_MB, &mc_settings.out_mem_limit, 0, 1 << 30 },
    { "track_sizes", EXT_FLAG_ON, &mc_settings.track_sizes, 0, 0 },
    { "no_hashexpand", EXT_FLAG_OFF, &mc_settings.hash_expand, 0, 0 },
    { "modern", EXT_FLAG_ON, NULL, 0, 0 },
    { "no_modern", EXT_FLAG_OFF, &mc_no_modern, 0, 0 },
    { "no_slab_reassign", EXT_FLAG_OFF, &mc_settings.slab_reassign, 0, 0 },
    { "no_slab_automove", EXT_FLAG_OFF, &mc_slab_automove_on, 0, 0 },
    { "no_maxconns_fast", EXT_FLAG_OFF, &mc_settings.maxconns_fast, 0, 0 },
    { "relaxed_privileges", EXT_FLAG_ON, NULL, 0, 0 },
    { "drop_privileges", EXT_FLAG_ON, NULL, 0, 0 },
    { "no_drop_privileges", EXT_FLAG_OFF, NULL, 0, 0 },
    { "inline_ascii_response", EXT_FLAG_ON, NULL, 0, 0 },
    { "no_inline_ascii_response", EXT_FLAG_OFF, NULL, 0, 0 },
    { "sasl_pwdb", EXT_STR, &mc_settings.sasl_pwdb, 0, 0 },
    { "watcher_logbuf_size", EXT_INT, &mc_watch_buf_kb, 1, 1 << 20 },       /* KB */
    { "worker_logbuf_size", EXT_INT, &mc_watch_worker_buf_kb, 1, 1 << 20 }, /* KB */
    { NULL, 0, NULL, 0, 0 },
};

/* The options that stand for several settings, applied where they appear. */
static void apply_presets(void)
{
    if (!mc_no_modern) {
        /* As memcached's no_modern: no page mover, no LRU crawler or
         * maintainer work, no fast connection refusal. (Our LRU stays
         * segmented: the flat LRU is not built.) */
        mc_settings.slab_reassign = false;
        mc_settings.slab_automove = 0;
        mc_settings.maxconns_fast = false;
        mc_settings.lru_crawler = false;
        mc_settings.lru_maintainer = false;
        mc_chunk_max_page = true;
        mc_no_modern = true;
    }
    if (!mc_slab_automove_on) {
        mc_settings.slab_automove = 0;
        mc_slab_automove_on = true;
    }
}

static int set_ext(const struct cfg_setting *s, const char *v, char *err, size_t errlen)
{
    (void)s;
    if (!v)
        return 0;
    char *copy = strdup(v), *save = NULL;
    if (!copy)
        return -1;
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        const char *val = NULL;
        if (eq) {
            *eq = 0;
            val = eq + 1;
        }
        int xr = mc_ext_option(tok, val, err, errlen); /* ext_*: extstore.c */
        if (xr == 0)
            xr = mc_tls_option(tok, val, err, errlen); /* ssl_*: tls.c */
        if (xr != 0) {
            if (xr < 0)
                rc = -1;
            continue;
        }
        const struct ext_opt *o = ext_opts;
        while (o->name && strcmp(o->name, tok) != 0)
            o++;
        if (!o->name) {
            snprintf(err, errlen, "Illegal suboption \"%s\"", tok);
            rc = -1;
            break;
        }
        if (o->kind == EXT_FLAG_ON || o->kind == EXT_FLAG_OFF) {
            if (o->where)
                *(bool *)o->where = o->kind == EXT_FLAG_ON;
            apply_presets(); /* in order, as memcached: "no_modern,lru_crawler" keeps the crawler */
            continue;
        }
        if (!val && o->where == &mc_settings.slab_automove) {
            mc_settings.slab_automove = 1; /* memcached: bare slab_automove means 1 */
            continue;
        }
        if (!val || !*val) {
            snprintf(err, errlen, "Missing %s argument", tok);
            rc = -1;
            break;
        }
        if (o->kind == EXT_STR) {
            char **dst = o->where;
            free(*dst);
            *dst = strdup(val);
            continue;
        }
        char *end;
        errno = 0;
        double d = o->kind == EXT_DOUBLE ? strtod(val, &end) : (double)strtoll(val, &end, 10);
        if (errno || end == val || *end || d < o->min || d > o->max) {
            snprintf(err, errlen, "could not parse argument to %s: '%s' (%g..%g)", tok, val, o->min, o->max);
            rc = -1;
            break;
        }
        if (o->where == &mc_settings.hashpower)
            mc_hashpower_given = true;
        if (o->where == &mc_settings.out_mem_limit)
            mc_settings.out_mem_limit_given = true;
        if (o->where == &mc_settings.temporary_ttl)
            mc_settings.temp_lru = true; /* as memcached: giving it turns the TEMP LRU on */
        if (o->kind == EXT_INT)
            *(int *)o->where = (int)d;
        else if (o->kind == EXT_U64_MB)
            *(uint64_t *)o->where = (uint64_t)d * 1024 * 1024;
        else
            *(double *)o->where = d;
    }
    free(copy);
    if (rc == 0 && mc_settings.hash_algorithm && strcmp(mc_settings.hash_algorithm, "murmur3") != 0 &&
        strcmp(mc_settings.hash_algorithm, "jenkins") != 0 && strcmp(mc_settings.hash_algorithm, "xxh3") != 0) {
        snprintf(err, errlen, "Unknown hash_algorithm option (jenkins, murmur3, xxh3)");
        rc = -1;
    }
    return rc;
}

/* -D: the character ending a key's prefix for "stats detail". */
static int set_delimiter(const struct cfg_setting *s, const char *v, char *err, size_t errlen)
{
    (void)s;
    if (!v || strlen(v) != 1) {
        snprintf(err, errlen, "-D takes a single character");
        return -1;
    }
    mc_prefix_delimiter = v[0];
    return 0;
}

/* -p and -U: a port, -1 for one the kernel picks, 0 for none. Whether
 * each was given matters: -U alone sets the TCP port too, as memcached.
 * (The defaults are applied through here with value == s->def.) */
static bool mc_tcp_specified, mc_udp_specified;
static int set_port_opt(const struct cfg_setting *s, const char *v, char *err, size_t errlen)
{
    int64_t n;
    if (!v || !mc_parse_i64(v, strlen(v), &n) || n < -1 || n > 65535) {
        snprintf(err, errlen, "Invalid port number %s.", v ? v : "");
        return -1;
    }
    *(int *)s->ptr = (int)n;
    if (v != s->def) {
        if (s->ptr == &mc_settings.port)
            mc_tcp_specified = true;
        else
            mc_udp_specified = true;
    }
    return 0;
}

static void fmt_port(const struct cfg_setting *s, char *buf, size_t len) { snprintf(buf, len, "%d", *(int *)s->ptr); }

/* -B: auto (pick per connection by the first byte), ascii or binary. */
static bool mc_protocol_specified;
static int set_protocol(const struct cfg_setting *s, const char *v, char *err, size_t errlen)
{
    if (v != s->def)
        mc_protocol_specified = true;
    if (v && strcmp(v, "auto") == 0)
        mc_settings.protocol = MC_BIND_AUTO;
    else if (v && strcmp(v, "ascii") == 0)
        mc_settings.protocol = MC_BIND_ASCII;
    else if (v && strcmp(v, "binary") == 0)
        mc_settings.protocol = MC_BIND_BINARY;
    else {
        snprintf(err, errlen, "Invalid value for binding protocol: %s -- should be one of auto, binary, or ascii",
                 v ? v : "");
        return -1;
    }
    return 0;
}

/* `show settings` shows what runs, not the defaults, for -m, -a and -o
 * (registered with cfg_set_formatter in main). -o: every extended option
 * with its running value, flags by the name of the state they are in. */
static void fmt_maxbytes(const struct cfg_setting *s, char *buf, size_t len)
{
    (void)s;
    uint64_t b = mc_settings.maxbytes;
    if (b % (1024 * 1024) == 0)
        snprintf(buf, len, "%llu", (unsigned long long)(b >> 20));
    else
        snprintf(buf, len, "%llu", (unsigned long long)b); /* bytes, as -m 1500k was given */
}

static void fmt_unix_mask(const struct cfg_setting *s, char *buf, size_t len)
{
    (void)s;
    snprintf(buf, len, "%o", (unsigned)mc_settings.unix_mask);
}

static void fmt_ext(const struct cfg_setting *s, char *buf, size_t len)
{
    (void)s;
    size_t o = 0;
    buf[0] = '\0';
    for (const struct ext_opt *e = ext_opts; e->name && o < len; e++) {
        char one[160];
        one[0] = '\0';
        if ((e->kind == EXT_FLAG_ON || e->kind == EXT_FLAG_OFF) && e->where) {
            if (*(bool *)e->where == (e->kind == EXT_FLAG_ON))
                snprintf(one, sizeof one, "%s", e->name);
        } else if (e->kind == EXT_INT)
            snprintf(one, sizeof one, "%s=%d", e->name, *(int *)e->where);
        else if (e->kind == EXT_U64_MB)
            snprintf(one, sizeof one, "%s=%llu", e->name, (unsigned long long)(*(uint64_t *)e->where >> 20));
        else if (e->kind == EXT_DOUBLE)
            snprintf(one, sizeof one, "%s=%g", e->name, *(double *)e->where);
        else if (e->kind == EXT_STR && *(char **)e->where && !strstr(e->name, "pwdb") && !strstr(e->name, "key"))
            snprintf(one, sizeof one, "%s=%s", e->name, *(char **)e->where);
        if (one[0])
            o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? "," : "", one);
    }
}

static const struct cfg_setting mc_table[] = {
    { "port", 'p', CFG_CUSTOM, &mc_settings.port, "11211", "TCP port to listen on (0 = off, -1 = any free port)", false,
      set_port_opt },
    { "listen", 'l', CFG_STRING, &mc_settings.listen, NULL, "interfaces to listen on, comma separated (default all)",
      false, NULL },
    { "unix-socket", 's', CFG_STRING, &mc_settings.unix_path, NULL, "UNIX socket path to listen on (disables TCP)",
      false, NULL },
    { "unix-mask", 'a', CFG_CUSTOM, &mc_settings.unix_mask, "700", "access mask for the UNIX socket, in octal", false,
      set_unix_mask },
    { "conn-limit", 'c', CFG_INT, &mc_settings.maxconns, "1024", "max simultaneous connections", false, NULL },
    { "threads", 't', CFG_INT, &mc_settings.threads, "4", "number of worker threads (event loops)", false, NULL },
    { "memory-limit", 'm', CFG_CUSTOM, &mc_settings.maxbytes, "64", "item memory in megabytes (or with k/m/g suffix)",
      false, set_maxbytes },
    { "max-item-size", 'I', CFG_SIZE, &mc_settings.item_size_max, "1m",
      "largest item (min 1k, max 1g, at most half of -m)", false, NULL },
    { "slab-growth-factor", 'f', CFG_DOUBLE, &mc_settings.factor, "1.25",
      "chunk size growth factor between slab classes", false, NULL },
    { "slab-min-size", 'n', CFG_INT, &mc_settings.chunk_min, "48",
      "min space for key+value+flags in the smallest chunk", false, NULL },
    { "verbose", 'v', CFG_COUNT, &mc_settings.verbose, "0", "verbose (-vv: more)", true, NULL },
    { "udp-port", 'U', CFG_CUSTOM, &mc_settings.udp_port, "0",
      "UDP port to listen on (0 = off, -1 = any free port; given alone, the TCP port too)", false, set_port_opt },
    { "listen-backlog", 'b', CFG_INT, &mc_settings.backlog, "1024", "listen backlog", false, NULL },
    { "disable-cas", 'C', CFG_BOOL, &mc_settings.no_cas, "no", "do not report CAS values", false, NULL },
    { "disable-evictions", 'M', CFG_BOOL, &mc_settings.no_evict, "no",
      "return errors when memory is full instead of evicting", false, NULL },
    { "disable-flush-all", 'F', CFG_BOOL, &mc_settings.flush_disabled, "no", "refuse flush_all", true, NULL },
    { "prefix-delimiter", 'D', CFG_CUSTOM, &dummy_str, ":", "key prefix delimiter for stats detail (one character)",
      false, set_delimiter },
    { "disable-dumping", 'X', CFG_BOOL, &mc_settings.dump_disabled, "no",
      "refuse stats cachedump and lru_crawler metadump", true, NULL },
    { "memory-file", 'e', CFG_STRING, &mc_memory_file, NULL,
      "mmap this file for item memory: a restartable cache (stop with SIGUSR1 or shutdown graceful; put it on tmpfs)",
      false, NULL },
    { "disable-watch", 'W', CFG_BOOL, &mc_watch_disabled, "no", "refuse the watch command (log streams)", false, NULL },
    { "enable-shutdown", 'A', CFG_BOOL, &mc_settings.shutdown_enabled, "no", "allow the shutdown command", true, NULL },
    { "enable-sasl", 'S', CFG_BOOL, &mc_settings.sasl, "no", "require SASL PLAIN authentication (binary protocol only)",
      false, NULL },
    { "lock-memory", 'k', CFG_BOOL, &mc_settings.lock_memory, "no", "lock down all paged memory (mlockall)", false,
      NULL },
    { "enable-largepages", 'L', CFG_BOOL, &mc_settings.large_pages, "no",
      "reserve -m at start in transparent huge pages (no cache_memlimit changes then)", false, NULL },
    { "auth-file", 'Y', CFG_STRING, &mc_settings.auth_file, NULL,
      "text protocol login: user:password lines; a client sends \"set <key> 0 0 <n>\\r\\n<user> <password>\\r\\n\" "
      "first (re-read on SIGHUP)",
      false, NULL },
    { "sasl-pwdb", 0, CFG_STRING, &mc_settings.sasl_pwdb, NULL,
      "user:password file for SASL (also $MEMCACHED_SASL_PWDB)", false, NULL },
    { "extended", 'o', CFG_CUSTOM, &mc_settings.ext_opts, NULL,
      "comma separated extended options: maxconns_fast, hashpower=N (12..32), idle_timeout=S, "
      "read_buf_mem_limit=MB (all reply buffers; default 256, 0 = none), hot_lru_pct=N, warm_lru_pct=N, "
      "hot_max_factor=F, warm_max_factor=F, temporary_ttl=S, lru_crawler, no_lru_crawler, lru_crawler_sleep=US, "
      "lru_crawler_tocrawl=N, lru_maintainer, no_lru_maintainer, slab_reassign, slab_automove=0|1|2, "
      "slab_automove_ratio=F, slab_automove_window=N, slab_automove_freeratio=F, slab_chunk_max=BYTES, "
      "tail_repair_time=S, hash_algorithm=murmur3|jenkins|xxh3, track_sizes, no_hashexpand, modern, "
      "sasl_pwdb=FILE, ssl_chain_cert=FILE (PEM chain), ssl_key=FILE, ssl_keyformat=1|2 (PEM, DER), "
      "ssl_verify_mode=0|1|2|3 (client certificates: none, request, require, once), ssl_ca_cert=FILE (PEM: acceptable "
      "client CAs), ssl_ciphers=LIST, ssl_wbuf_size=KB (shown only), ssl_session_cache, ssl_kernel_tls, "
      "ssl_min_version=0|1|2|3 (tlsv1.0 .. tlsv1.3; default 2), watcher_logbuf_size=KB (each watch stream's buffer), "
      "worker_logbuf_size=KB (shown only); extstore: ext_path=FILE:SIZE (repeatable), "
      "ext_page_size=MB (before ext_path), ext_wbuf_size=MB, ext_threads=N, ext_item_size=BYTES, ext_item_age=S, "
      "ext_low_ttl=S, ext_recache_rate=N, ext_compact_under=PAGES, ext_drop_under=PAGES, ext_max_frag=F, "
      "ext_max_sleep=US, ext_drop_unread",
      false, set_ext },
    { "protocol", 'B', CFG_CUSTOM, &dummy_str, "auto", "binding protocol: auto (by the first byte), ascii or binary",
      false, set_protocol },
    { "max-reqs-per-event", 'R', CFG_INT, &mc_settings.reqs_per_event, "20",
      "max requests run per connection per event before yielding to others (counted in conn_yields)", false, NULL },
    { "enable-ssl", 'Z', CFG_BOOL, &mc_settings.ssl_enabled, "no",
      "TLS on the TCP listeners (-o ssl_chain_cert=PEM,ssl_key=PEM[,ssl_verify_mode=N,ssl_ca_cert=PEM,...]); "
      "an address given as notls:ADDR in -l stays plain",
      false, NULL },
    { "user", 'u', CFG_STRING, &core_opts.user, NULL, "drop privileges to this user after binding", false, NULL },
    { "pidfile", 'P', CFG_STRING, &core_opts.pidfile, NULL, "write the process id to this file", false, NULL },
    CFG_END
};

/* ------------------------------------------------------------------ */
/* stats */

void mc_stats_sum(struct mc_thread_stats *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < loop_count(); i++) {
        struct core_loop *l = loop_get(i);
        struct mc_thread *th = l ? l->data : NULL;
        if (!th)
            continue;
#define X(n)                                                                                                           \
    atomic_store_explicit(&out->n,                                                                                     \
                          atomic_load_explicit(&out->n, memory_order_relaxed) +                                        \
                              atomic_load_explicit(&th->st.n, memory_order_relaxed),                                   \
                          memory_order_relaxed);
        MC_THREAD_STATS(X)
#undef X
    }
}

/* A class's hit counters summed over the threads, less what "stats
 * reset" saw. */
struct slab_hits {
    uint64_t v[8];
};
static struct slab_hits slab_reset_base[MC_MAX_CLASSES];

static void slab_hits_now(int id, struct slab_hits *h)
{
    memset(h, 0, sizeof *h);
    for (int i = 0; i < loop_count(); i++) {
        struct core_loop *l = loop_get(i);
        struct mc_thread *th = l ? l->data : NULL;
        if (!th)
            continue;
        const struct mc_slab_stats *ss = &th->slab[id];
        const _Atomic uint64_t *f[8] = { &ss->get_hits,  &ss->cmd_set,  &ss->delete_hits, &ss->incr_hits,
                                         &ss->decr_hits, &ss->cas_hits, &ss->cas_badval,  &ss->touch_hits };
        for (int j = 0; j < 8; j++)
            h->v[j] += atomic_load_explicit(f[j], memory_order_relaxed);
    }
}

static void slab_hits_sum(int id, struct slab_hits *h)
{
    slab_hits_now(id, h);
    for (int j = 0; j < 8; j++)
        h->v[j] -= slab_reset_base[id].v[j];
}

static struct mc_thread_stats reset_base;

void mc_stats_reset(void)
{
    mc_prefix_clear();
    mc_stats_sum(&reset_base);
    for (int i = 1; i <= mc_nclasses; i++)
        slab_hits_now(i, &slab_reset_base[i]);
    atomic_store(&mc_sstats.evictions, 0);
    atomic_store(&mc_sstats.reclaimed, 0);
    atomic_store(&mc_sstats.total_items, 0);
    atomic_store(&mc_sstats.expired_unfetched, 0);
    atomic_store(&mc_sstats.evicted_unfetched, 0);
    atomic_store(&mc_sstats.outofmemory, 0);
    atomic_store(&mc_sstats.crawler_reclaimed, 0);
    atomic_store(&mc_sstats.malloc_fails, 0);
    /* and "stats items" per class, as memcached's item_stats_reset */
    for (int i = 1; i <= mc_nclasses; i++) {
        struct mc_class *c = &mc_classes[i];
        pthread_mutex_lock(&c->lock);
        c->evicted = c->evicted_nonzero = c->reclaimed = c->expired_unfetched = c->evicted_unfetched = 0;
        c->outofmemory = c->crawler_reclaimed = c->moves_to_cold = c->moves_to_warm = c->moves_within_lru = 0;
        c->crawler_items_checked = c->evicted_active = c->direct_reclaims = 0;
        c->evicted_time = 0;
        for (int seg = 0; seg < MC_LRU_N; seg++)
            atomic_store_explicit(&c->hits_to[seg], 0, memory_order_relaxed);
        pthread_mutex_unlock(&c->lock);
    }
}

#define GET(s, n)                                                                                                      \
    (atomic_load_explicit(&(s).n, memory_order_relaxed) - atomic_load_explicit(&reset_base.n, memory_order_relaxed))

static void count_spare(const struct listen_info *li, void *arg)
{
    if (!li->is_admin)
        (*(uint64_t *)arg)++;
}

static uint64_t reserved_fds(void)
{
    uint64_t spares = 0;
    listen_foreach(count_spare, &spares);
    return 4 * (uint64_t)loop_count() + spares;
}

static void general_stats(struct stats_sink *k, void *arg)
{
    (void)arg;
    struct mc_thread_stats t;
    mc_stats_sum(&t);
    uint64_t bytes = 0;
    for (int i = 1; i <= mc_nclasses; i++)
        bytes += __atomic_load_n(&mc_classes[i].bytes, __ATOMIC_RELAXED);
    /* Per-class counters summed (each read under its class lock). */
    uint64_t to_cold = 0, to_warm = 0, within = 0, move_evicted = 0, rescued = 0, chunk_rescued = 0, checked = 0,
             ev_active = 0, direct = 0;
    for (int i = 1; i <= mc_nclasses; i++) {
        struct mc_class *c = &mc_classes[i];
        pthread_mutex_lock(&c->lock);
        to_cold += c->moves_to_cold;
        to_warm += c->moves_to_warm;
        within += c->moves_within_lru;
        move_evicted += c->pages_evicted;
        rescued += c->pages_rescued;
        chunk_rescued += c->chunks_rescued;
        checked += c->crawler_items_checked;
        ev_active += c->evicted_active;
        direct += c->direct_reclaims;
        pthread_mutex_unlock(&c->lock);
    }
    /* memcached 1.6.18's names in its order, each group only where
     * memcached shows it (slab_reassign, lru_crawler, lru_maintainer), after
     * the core's pid .. rejected_connections; text "stats" drops the core's threads and
     * accept_fd_exhausted there, threads comes below). A value that is 0
     * by design here is said so where it is printed. */
    stats_u64(k, "connection_structures", conn_total_current() + mc_udp_count());
    stats_u64(k, "response_obj_oom", GET(t, response_obj_oom));
    stats_u64(k, "response_obj_count", atomic_load(&mc_out_bufs));
    stats_u64(k, "response_obj_bytes", atomic_load(&mc_out_mem_bytes));
    /* No pooled read buffers: input stays in each connection's own buffer. */
    stats_u64(k, "read_buf_count", 0);
    stats_u64(k, "read_buf_bytes", 0);
    stats_u64(k, "read_buf_bytes_free", 0);
    stats_u64(k, "read_buf_oom", 0);
    /* Descriptors kept for the daemon's own use, as memcached counts its
     * (5 per worker thread): per loop its epoll descriptor, libevent's
     * internal pipe pair and the loop's wake-up eventfd; per listening
     * socket the spare the core holds for accept's EMFILE
     * (accept_fd_exhausted). */
    stats_u64(k, "reserved_fds", reserved_fds());
    stats_u64(k, "cmd_get", GET(t, cmd_get));
    stats_u64(k, "cmd_set", GET(t, cmd_set));
    stats_u64(k, "cmd_flush", GET(t, cmd_flush));
    stats_u64(k, "cmd_touch", GET(t, cmd_touch));
    stats_u64(k, "cmd_meta", GET(t, cmd_meta));
    stats_u64(k, "get_hits", GET(t, get_hits));
    stats_u64(k, "get_misses", GET(t, get_misses));
    stats_u64(k, "get_expired", GET(t, get_expired));
    stats_u64(k, "get_flushed", GET(t, get_flushed));
    mc_ext_stats_gets(k); /* get_extstore .. badcrc_from_extstore, with ext_path */
    stats_u64(k, "delete_misses", GET(t, delete_misses));
    stats_u64(k, "delete_hits", GET(t, delete_hits));
    stats_u64(k, "incr_misses", GET(t, incr_misses));
    stats_u64(k, "incr_hits", GET(t, incr_hits));
    stats_u64(k, "decr_misses", GET(t, decr_misses));
    stats_u64(k, "decr_hits", GET(t, decr_hits));
    stats_u64(k, "cas_misses", GET(t, cas_misses));
    stats_u64(k, "cas_hits", GET(t, cas_hits));
    stats_u64(k, "cas_badval", GET(t, cas_badval));
    stats_u64(k, "touch_hits", GET(t, touch_hits));
    stats_u64(k, "touch_misses", GET(t, touch_misses));
    stats_u64(k, "store_too_large", GET(t, store_too_large));
    stats_u64(k, "store_no_memory", GET(t, store_no_memory));
    stats_u64(k, "auth_cmds", GET(t, auth_cmds));
    stats_u64(k, "auth_errors", GET(t, auth_errors));
    stats_u64(k, "idle_kicks", GET(t, idle_kicks)); /* text "stats": only with idle_timeout, as memcached */
    stats_u64(k, "bytes_read", GET(t, bytes_read));
    stats_u64(k, "bytes_written", GET(t, bytes_written));
    stats_u64(k, "limit_maxbytes", mc_slabs_limit());
    stats_u64(k, "accepting_conns", 1);
    /* The core refuses over-limit connections (rejected_connections)
     * instead of disabling the listener. */
    stats_u64(k, "listen_disabled_num", 0);
    stats_u64(k, "time_in_listen_disabled_us", 0);
    stats_u64(k, "threads", (uint64_t)mc_settings.threads);
    stats_u64(k, "conn_yields", GET(t, conn_yields));
    stats_u64(k, "hash_power_level", mc_assoc_hashpower());
    stats_u64(k, "hash_bytes", mc_assoc_bytes());
    stats_u64(k, "hash_is_expanding", mc_assoc_expanding() ? 1 : 0);
    if (mc_settings.slab_reassign) {
        stats_u64(k, "slab_reassign_rescues", rescued);
        stats_u64(k, "slab_reassign_chunk_rescues", chunk_rescued);
        stats_u64(k, "slab_reassign_evictions_nomem", move_evicted);
        /* Page moves run inline under the class lock: nothing is ever found
         * busy (items have no reference counts) or left running. */
        stats_u64(k, "slab_reassign_inline_reclaim", 0);
        stats_u64(k, "slab_reassign_busy_items", 0);
        stats_u64(k, "slab_reassign_busy_deletes", 0);
        stats_u64(k, "slab_reassign_running", 0);
        stats_u64(k, "slabs_moved", atomic_load(&mc_sstats.slabs_moved));
    }
    if (mc_settings.lru_crawler) {
        stats_u64(k, "lru_crawler_running", mc_crawler_running() ? 1 : 0);
        stats_u64(k, "lru_crawler_starts", atomic_load(&mc_sstats.lru_crawler_starts));
    }
    if (mc_settings.lru_maintainer) {
        stats_u64(k, "lru_maintainer_juggles", atomic_load(&mc_sstats.maintainer_juggles));
    }
    stats_u64(k, "malloc_fails", atomic_load(&mc_sstats.malloc_fails));
    /* watch (watch.c): lines made, lines too long to make (none are),
     * lines lost to full watcher buffers, lines queued to watchers. No
     * NAPI ids here. */
    struct mc_watch_stats ws;
    mc_watch_stats_get(&ws);
    stats_u64(k, "log_worker_dropped", ws.dropped);
    stats_u64(k, "log_worker_written", ws.written);
    stats_u64(k, "log_watcher_skipped", ws.skipped);
    stats_u64(k, "log_watcher_sent", ws.sent);
    stats_u64(k, "log_watchers", ws.watchers);
    mc_ext_stats_store(k); /* extstore_*, with ext_path */
    mc_tls_stats(k);        /* ssl_*, with -Z */
    stats_u64(k, "unexpected_napi_ids", 0);
    stats_u64(k, "round_robin_fallback", 0);
    stats_u64(k, "bytes", bytes);
    stats_u64(k, "curr_items", atomic_load(&mc_sstats.curr_items));
    stats_u64(k, "total_items", atomic_load(&mc_sstats.total_items));
    stats_u64(k, "slab_global_page_pool", mc_slabs_pool_pages());
    stats_u64(k, "expired_unfetched", atomic_load(&mc_sstats.expired_unfetched));
    stats_u64(k, "evicted_unfetched", atomic_load(&mc_sstats.evicted_unfetched));
    if (mc_settings.lru_maintainer) {
        stats_u64(k, "evicted_active", ev_active);
    }
    stats_u64(k, "evictions", atomic_load(&mc_sstats.evictions));
    stats_u64(k, "reclaimed", atomic_load(&mc_sstats.reclaimed));
    stats_u64(k, "crawler_reclaimed", atomic_load(&mc_sstats.crawler_reclaimed));
    stats_u64(k, "crawler_items_checked", checked);
    stats_u64(k, "lrutail_reflocked", 0); /* items have no reference counts */
    if (mc_settings.lru_maintainer) {
        stats_u64(k, "moves_to_cold", to_cold);
        stats_u64(k, "moves_to_warm", to_warm);
        stats_u64(k, "moves_within_lru", within);
        stats_u64(k, "direct_reclaims", direct);
        stats_u64(k, "lru_bumps_dropped", 0); /* bumps are done at once, never queued */
    }
    /* Ours, after memcached's (in the metrics; text "stats" leaves them
     * out, as it does the core's accept_fd_exhausted: cmd_text.c): */
    stats_u64(k, "protocol_errors", GET(t, protocol_errors));
    stats_u64(k, "udp_dropped", mc_udp_dropped());
    stats_u64(k, "outofmemory", atomic_load(&mc_sstats.outofmemory));
    stats_u64(k, "total_malloced", mc_slabs_malloced());
}

static void slabs_stats(struct stats_sink *k, void *arg)
{
    (void)arg;
    int active = 0;
    for (int i = 1; i <= mc_nclasses; i++) {
        struct mc_class *c = &mc_classes[i];
        pthread_mutex_lock(&c->lock);
        uint64_t pages = c->pages, freec = c->free_count;
        pthread_mutex_unlock(&c->lock);
        if (!pages)
            continue;
        active++;
        stats_u64f(k, c->size, "%d:chunk_size", i);
        stats_u64f(k, c->perpage, "%d:chunks_per_page", i);
        stats_u64f(k, pages, "%d:total_pages", i);
        stats_u64f(k, pages * c->perpage, "%d:total_chunks", i);
        stats_u64f(k, pages * c->perpage - freec, "%d:used_chunks", i);
        stats_u64f(k, freec, "%d:free_chunks", i);
        stats_u64f(k, 0, "%d:free_chunks_end", i);
        struct slab_hits h;
        slab_hits_sum(i, &h);
        stats_u64f(k, h.v[0], "%d:get_hits", i);
        stats_u64f(k, h.v[1], "%d:cmd_set", i);
        stats_u64f(k, h.v[2], "%d:delete_hits", i);
        stats_u64f(k, h.v[3], "%d:incr_hits", i);
        stats_u64f(k, h.v[4], "%d:decr_hits", i);
        stats_u64f(k, h.v[5], "%d:cas_hits", i);
        stats_u64f(k, h.v[6], "%d:cas_badval", i);
        stats_u64f(k, h.v[7], "%d:touch_hits", i);
    }
    stats_u64(k, "active_slabs", (uint64_t)active);
    stats_u64(k, "total_malloced", mc_slabs_malloced());
}

static void items_stats(struct stats_sink *k, void *arg)
{
    (void)arg;
    uint32_t now = mc_now();
    for (int i = 1; i <= mc_nclasses; i++) {
        struct mc_class *c = &mc_classes[i];
        pthread_mutex_lock(&c->lock);
        uint64_t cnt[MC_LRU_N];
        uint64_t total = 0;
        for (int seg = 0; seg < MC_LRU_N; seg++)
            total += cnt[seg] = c->count[seg];
        uint32_t age = c->tail[MC_LRU_COLD] ? now - c->tail[MC_LRU_COLD]->atime : 0;
        uint32_t age_hot = c->tail[MC_LRU_HOT] ? now - c->tail[MC_LRU_HOT]->atime : 0;
        uint32_t age_warm = c->tail[MC_LRU_WARM] ? now - c->tail[MC_LRU_WARM]->atime : 0;
        struct mc_class snap = *c;
        pthread_mutex_unlock(&c->lock);
        if (!total && !snap.evicted && !snap.outofmemory)
            continue;
        /* As memcached 1.6.18: the per-LRU figures only with the LRU
         * maintainer, number_temp only with the TEMP LRU. */
        bool maint = mc_settings.lru_maintainer;
        stats_u64f(k, total, "items:%d:number", i);
        if (maint) {
            stats_u64f(k, cnt[MC_LRU_HOT], "items:%d:number_hot", i);
            stats_u64f(k, cnt[MC_LRU_WARM], "items:%d:number_warm", i);
            stats_u64f(k, cnt[MC_LRU_COLD], "items:%d:number_cold", i);
            if (mc_settings.temp_lru)
                stats_u64f(k, cnt[MC_LRU_TEMP], "items:%d:number_temp", i);
            stats_u64f(k, age_hot, "items:%d:age_hot", i);
            stats_u64f(k, age_warm, "items:%d:age_warm", i);
        }
        stats_u64f(k, age, "items:%d:age", i);
        stats_u64f(k, snap.bytes, "items:%d:mem_requested", i);
        stats_u64f(k, snap.evicted, "items:%d:evicted", i);
        stats_u64f(k, snap.evicted_nonzero, "items:%d:evicted_nonzero", i);
        stats_u64f(k, snap.evicted_time, "items:%d:evicted_time", i);
        stats_u64f(k, snap.outofmemory, "items:%d:outofmemory", i);
        stats_u64f(k, 0, "items:%d:tailrepairs", i); /* no reference counts to repair */
        stats_u64f(k, snap.reclaimed, "items:%d:reclaimed", i);
        stats_u64f(k, snap.expired_unfetched, "items:%d:expired_unfetched", i);
        stats_u64f(k, snap.evicted_unfetched, "items:%d:evicted_unfetched", i);
        if (maint)
            stats_u64f(k, snap.evicted_active, "items:%d:evicted_active", i);
        stats_u64f(k, snap.crawler_reclaimed, "items:%d:crawler_reclaimed", i);
        stats_u64f(k, snap.crawler_items_checked, "items:%d:crawler_items_checked", i);
        stats_u64f(k, 0, "items:%d:lrutail_reflocked", i);
        if (!maint)
            continue;
        stats_u64f(k, snap.moves_to_cold, "items:%d:moves_to_cold", i);
        stats_u64f(k, snap.moves_to_warm, "items:%d:moves_to_warm", i);
        stats_u64f(k, snap.moves_within_lru, "items:%d:moves_within_lru", i);
        stats_u64f(k, snap.direct_reclaims, "items:%d:direct_reclaims", i);
        static const char *const hit_names[MC_LRU_N] = { "items:%d:hits_to_hot", "items:%d:hits_to_warm",
                                                         "items:%d:hits_to_cold", "items:%d:hits_to_temp" };
        for (int seg = 0; seg < MC_LRU_N; seg++)
            stats_u64f(k, atomic_load_explicit(&c->hits_to[seg], memory_order_relaxed), hit_names[seg], i);
    }
}

static void stats_fmt(struct stats_sink *k, const char *name, const char *fmt, double v)
{
    char buf[32];
    snprintf(buf, sizeof buf, fmt, v);
    stats_str(k, name, buf);
}

/* "stats settings": memcached 1.6.18's names, in its order, with the
 * values this daemon runs with (extstore and proxy fields are left out:
 * neither is built). */
static void settings_stats(struct stats_sink *k, void *arg)
{
    (void)arg;
    static const char *const protos[] = { "auto-negotiate", "ascii", "binary" };
    stats_u64(k, "maxbytes", mc_slabs_limit());
    stats_u64(k, "maxconns", (uint64_t)mc_settings.maxconns);
    stats_i64(k, "tcpport", mc_settings.port);
    stats_i64(k, "udpport", mc_settings.udp_port);
    stats_str(k, "inter", mc_settings.listen ? mc_settings.listen : "NULL");
    stats_u64(k, "verbosity", (uint64_t)mc_settings.verbose);
    stats_u64(k, "oldest", 0);
    stats_str(k, "evictions", mc_settings.no_evict ? "off" : "on");
    stats_str(k, "domain_socket", mc_settings.unix_path ? mc_settings.unix_path : "NULL");
    char buf[32];
    snprintf(buf, sizeof buf, "%o", mc_settings.unix_mask);
    stats_str(k, "umask", buf);
    stats_str(k, "shutdown_command", mc_settings.shutdown_enabled ? "yes" : "no");
    stats_fmt(k, "growth_factor", "%.2f", mc_settings.factor);
    stats_u64(k, "chunk_size", (uint64_t)mc_settings.chunk_min);
    stats_u64(k, "num_threads", (uint64_t)mc_settings.threads);
    /* as memcached: one thread per UDP socket when -l names several */
    bool multi_listen = mc_settings.listen && strchr(mc_settings.listen, ',');
    stats_u64(k, "num_threads_per_udp", multi_listen ? 1 : (uint64_t)mc_settings.threads);
    char delim[2] = { mc_prefix_delimiter, 0 };
    stats_str(k, "stat_key_prefix", delim);
    stats_str(k, "detail_enabled", mc_detail_on() ? "yes" : "no");
    stats_u64(k, "reqs_per_event", (uint64_t)mc_settings.reqs_per_event);
    stats_str(k, "cas_enabled", mc_settings.no_cas ? "no" : "yes");
    stats_u64(k, "tcp_backlog", (uint64_t)mc_settings.backlog);
    stats_str(k, "binding_protocol", protos[mc_settings.protocol]);
    stats_str(k, "auth_enabled_sasl", mc_settings.sasl ? "yes" : "no");
    stats_str(k, "auth_enabled_ascii", mc_settings.auth_file ? mc_settings.auth_file : "no");
    stats_u64(k, "item_size_max", mc_settings.item_size_max);
    stats_str(k, "maxconns_fast", mc_settings.maxconns_fast ? "yes" : "no");
    /* As memcached: what -o hashpower asked for, 0 when not given. */
    stats_u64(k, "hashpower_init", mc_hashpower_given ? (uint64_t)mc_settings.hashpower : 0);
    stats_str(k, "slab_reassign", mc_settings.slab_reassign ? "yes" : "no");
    stats_u64(k, "slab_automove", (uint64_t)mc_settings.slab_automove);
    stats_fmt(k, "slab_automove_ratio", "%.2f", mc_settings.slab_automove_ratio);
    stats_u64(k, "slab_automove_window", (uint64_t)mc_settings.slab_automove_window);
    stats_u64(k, "slab_chunk_max", (uint64_t)mc_settings.slab_chunk_max);
    stats_str(k, "lru_crawler", mc_settings.lru_crawler ? "yes" : "no");
    stats_u64(k, "lru_crawler_sleep", (uint64_t)mc_settings.lru_crawler_sleep);
    stats_u64(k, "lru_crawler_tocrawl", (uint64_t)mc_settings.lru_crawler_tocrawl);
    stats_u64(k, "tail_repair_time", (uint64_t)mc_settings.tail_repair_time);
    stats_str(k, "flush_enabled", mc_settings.flush_disabled ? "no" : "yes");
    stats_str(k, "dump_enabled", mc_settings.dump_disabled ? "no" : "yes");
    stats_str(k, "hash_algorithm", "xxh3"); /* common/hash: hash64 is XXH3 */
    stats_str(k, "lru_maintainer_thread", mc_settings.lru_maintainer ? "yes" : "no");
    stats_str(k, "lru_segmented", mc_settings.lru_segmented ? "yes" : "no");
    stats_u64(k, "hot_lru_pct", (uint64_t)mc_settings.hot_pct);
    stats_u64(k, "warm_lru_pct", (uint64_t)mc_settings.warm_pct);
    stats_fmt(k, "hot_max_factor", "%.2f", mc_settings.hot_max_factor);
    stats_fmt(k, "warm_max_factor", "%.2f", mc_settings.warm_max_factor);
    stats_str(k, "temp_lru", mc_settings.temp_lru ? "yes" : "no");
    stats_u64(k, "temporary_ttl", (uint64_t)mc_settings.temporary_ttl);
    stats_u64(k, "idle_timeout", (uint64_t)mc_settings.idle_timeout);
    stats_u64(k, "watcher_logbuf_size", (uint64_t)mc_watch_buf_kb * 1024);
    stats_u64(k, "worker_logbuf_size", (uint64_t)mc_watch_worker_buf_kb * 1024);
    stats_u64(k, "read_buf_mem_limit", mc_settings.out_mem_limit);
    stats_str(k, "track_sizes", mc_settings.track_sizes ? "yes" : "no");
    stats_str(k, "inline_ascii_response", "no");
    mc_ext_stats_settings(k);
    stats_fmt(k, "ext_max_frag", "%.2f", mc_ext.max_frag);
    stats_fmt(k, "slab_automove_freeratio", "%.3f", mc_settings.slab_automove_freeratio);
    stats_str(k, "ext_drop_unread", mc_ext.drop_unread ? "yes" : "no");
    mc_tls_stats_settings(k); /* ssl_*: tls.c */
    stats_str(k, "memory_file", mc_memory_file ? mc_memory_file : "(null)");
}

static void conns_stats(struct stats_sink *k, void *arg)
{
    (void)arg;
    /* Connections live on their loops; report the totals. */
    /* memcached counts each UDP socket as a connection */
    stats_u64(k, "curr_connections", conn_total_current() + mc_udp_count());
    stats_u64(k, "total_connections", conn_total_accepted() + mc_udp_count());
}

/* ------------------------------------------------------------------ */
/* SASL password file */

/* The password file is read at start and on SIGHUP (never per attempt),
 * into an array the loops read under a read lock. Reading it blocks the
 * thread that loads it: at start that is main, on HUP loop 0 (a small
 * file, rarely; the core's work pool is the place for it once it lands). */
static struct mc_pwfile sasl_users = MC_PWFILE_INIT;

static const char *sasl_path(void)
{
    return mc_settings.sasl_pwdb ? mc_settings.sasl_pwdb : getenv("MEMCACHED_SASL_PWDB");
}

/* Returns 0, or -1 (the old list stays) when the file can't be read. */
static int sasl_load(void)
{
    const char *path = sasl_path();
    if (!path)
        return -1;
    char err[512];
    long n = mc_pwfile_load(&sasl_users, path, false, err, sizeof err);
    if (n < 0) {
        log_error("SASL password file: %s", err);
        return -1;
    }
    log_info("SASL: %ld users loaded from %s", n, path);
    return 0;
}

bool mc_sasl_check(const char *user, size_t ulen, const char *pass, size_t plen)
{
    return mc_pwfile_check(&sasl_users, user, ulen, pass, plen);
}

static void mc_reload(void)
{
    if (mc_settings.sasl && sasl_load() < 0)
        log_warn("SASL password file not reloaded: the previous users stay");
    char err[512];
    if (mc_settings.auth_file && mc_auth_ascii_load(err, sizeof err) < 0)
        log_warn("-Y auth file not reloaded (%s): the previous users stay", err);
}

/* "shutdown graceful": stop accepting and let connections finish (the
 * core's grace period); "shutdown": the same with no grace, as memcached
 * exits at once on SIGINT. */
void mc_shutdown_request(bool graceful)
{
    if (graceful)
        mc_restart_request_save(); /* -e: as memcached, only a graceful stop keeps the items */
    if (!graceful)
        loop_set_grace(0);
    loop_request_stop();
}

/* -e: SIGUSR1 is memcached's graceful stop that keeps the items. */
static void usr1_graceful_stop(void) { mc_shutdown_request(true); }

/* ------------------------------------------------------------------ */
/* console */

static enum admin_result cmd_flush(struct admin_ctx *ctx, int argc, char **argv)
{
    int64_t delay = argc > 1 ? atoll(argv[1]) : 0;
    mc_flush(delay);
    admin_printf(ctx, "OK\r\n");
    return ADMIN_OK;
}

static enum admin_result cmd_crawl(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    /* The maintainer thread walks the classes; a console loop never does. */
    mc_crawl_request();
    admin_printf(ctx, "OK\r\n");
    return ADMIN_OK;
}

static const struct admin_cmd mc_admin[] = {
    { "flush_all", "flush_all [delay]", "invalidate every item (now or after delay seconds)", cmd_flush },
    { "crawl", "crawl", "ask the LRU crawler to reclaim expired items in every class now", cmd_crawl },
    { NULL, NULL, NULL, NULL },
};

/* ------------------------------------------------------------------ */
/* start-up */

static void thread_start(struct core_loop *loop)
{
    /* One mc_thread per loop, in an array that lives as long as the
     * process: sessions closed while the loops are freed still use theirs. */
    static struct mc_thread *threads;
    static int nthreads;
    if (loop->data)
        return;
    if (!threads) {
        nthreads = loop_count();
        threads = calloc((size_t)nthreads, sizeof *threads);
        if (!threads)
            return;
        for (int i = 0; i < nthreads; i++)
            pthread_mutex_init(&threads[i].sessions_lock, NULL);
    }
    if (loop->index >= 0 && loop->index < nthreads)
        loop->data = &threads[loop->index];
}

/* -o read_buf_mem_limit given: memcached 1.6.18 splits it between its
 * worker threads in 16 KB blocks, one kept for reading, each of the others
 * holding 14 response objects (one per command, one per key of a get),
 * freed once written. A command finding none closes the connection, a get
 * key finding none answers SERVER_ERROR (response_obj_oom). We bound the
 * same count per loop, beside our bound on reply bytes. */
static void resp_obj_cap_init(void)
{
    if (!mc_settings.out_mem_limit_given || !mc_settings.out_mem_limit)
        return;
    uint64_t per_loop = mc_settings.out_mem_limit / (uint64_t)(mc_settings.threads > 0 ? mc_settings.threads : 1);
    uint64_t blocks = per_loop < 16384 ? 1 : per_loop / 16384;
    uint64_t cap = (blocks > 1 ? blocks - 1 : 1) * 14;
    mc_settings.resp_obj_cap = cap > UINT32_MAX ? UINT32_MAX : (uint32_t)cap;
}

/* $MEMCACHED_PORT_FILENAME, as memcached: "TCP INET: <port>" (and UDP,
 * INET6) lines for each socket bound, written to <name>.lck and renamed
 * once all are open (test suites read the ports chosen for -p/-U -1). */
static FILE *mc_port_file;
static void port_file_line(const char *proto, bool v6, int port)
{
    if (mc_port_file)
        fprintf(mc_port_file, "%s INET%s: %d\n", proto, v6 ? "6" : "", port);
}

/* A dual-stack [::] socket serves IPv4 too: both lines. */
static void port_file_spec(const char *proto, const char *spec, int port)
{
    const char *colon = strchr(spec, ':');
    bool v6 = spec[0] == '[' || (colon && strchr(colon + 1, ':'));
    bool any6 = strncmp(spec, "[::]", 4) == 0;
    if (!v6 || any6)
        port_file_line(proto, false, port);
    if (v6)
        port_file_line(proto, true, port);
}

static struct core_listener *open_listener_l(const char *spec, int port, bool tls)
{
    char err[256];
    struct listen_opts lo = { .backlog = mc_settings.backlog, .unix_mask = mc_settings.unix_mask };
    struct core_listener *l = listen_open(spec, port < 0 ? 0 : port, &lo, mc_session_accept, mc_session_reject,
                                          tls ? &mc_tls_ctx : NULL, err, sizeof err);
    if (!l)
        log_error("failed to listen on %s: %s", spec, err);
    else if (strncmp(spec, "unix:", 5) != 0)
        port_file_spec("TCP", spec, listen_port(l));
    return l;
}

static int open_listener(const char *spec, int port, bool tls) { return open_listener_l(spec, port, tls) ? 0 : -1; }

static int open_udp(const char *spec)
{
    char err[256];
    int bound = 0;
    if (mc_udp_open(spec, mc_settings.udp_port, &bound, err, sizeof err) < 0) {
        log_error("failed to listen on UDP port %d%s%s: %s", mc_settings.udp_port, spec ? " of " : "", spec ? spec : "",
                  err);
        return -1;
    }
    port_file_spec("UDP", spec ? spec : "[::]", bound);
    return 0;
}

/* TCP (-p) and UDP (-U) on each -l address, or on all of them. */
static int open_network(void)
{
    if (mc_settings.port != 0) {
        if (!mc_settings.listen || !*mc_settings.listen) {
            /* All interfaces: a dual-stack [::] socket takes IPv4 too;
             * without IPv6, 0.0.0.0. */
            char err[256];
            struct listen_opts lo = { .backlog = mc_settings.backlog };
            int port = mc_settings.port < 0 ? 0 : mc_settings.port;
            struct core_listener *l = listen_open("[::]", port, &lo, mc_session_accept, mc_session_reject,
                                                  mc_settings.ssl_enabled ? &mc_tls_ctx : NULL, err, sizeof err);
            if (l)
                port_file_spec("TCP", "[::]", listen_port(l));
            else if (open_listener("0.0.0.0", mc_settings.port, mc_settings.ssl_enabled) < 0)
                return -1;
        } else {
            char *copy = strdup(mc_settings.listen), *save = NULL;
            for (char *a = strtok_r(copy, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
                while (*a == ' ')
                    a++;
                bool tls = mc_settings.ssl_enabled;
                if (strncmp(a, "notls:", 6) == 0) {
                    a += 6;
                    tls = false;
                }
                if (open_listener(a, mc_settings.port, tls) < 0) {
                    free(copy);
                    return -1;
                }
            }
            free(copy);
        }
    }
    if (mc_settings.udp_port == 0)
        return 0;
    if (!mc_settings.listen || !*mc_settings.listen)
        return open_udp(NULL);
    char *copy = strdup(mc_settings.listen), *save = NULL;
    int rc = 0;
    for (char *a = strtok_r(copy, ",", &save); a && rc == 0; a = strtok_r(NULL, ",", &save)) {
        while (*a == ' ')
            a++;
        if (strncmp(a, "notls:", 6) == 0)
            a += 6;
        rc = open_udp(a);
    }
    free(copy);
    return rc;
}

static int mc_init(void)
{
    if (mc_settings.verbose >= 2)
        log_set_level(LOG_LEVEL_DEBUG);
    else if (mc_settings.verbose == 1 && log_get_level() < LOG_LEVEL_INFO)
        log_set_level(LOG_LEVEL_INFO);
    if (mc_settings.threads < 1) {
        log_error("Number of threads must be greater than 0");
        return -1;
    }
    /* -U alone listens on that port for TCP too, as memcached. */
    if (mc_udp_specified && mc_settings.udp_port != 0 && !mc_tcp_specified)
        mc_settings.port = mc_settings.udp_port;
    if (mc_settings.udp_port && mc_settings.sasl) {
        log_error("Cannot enable UDP while using binary SASL authentication.");
        return -1;
    }
    if (mc_settings.reqs_per_event < 1) {
        log_error("Number of requests per event must be greater than 0");
        return -1;
    }
    if (mc_settings.hot_pct + mc_settings.warm_pct > 80) {
        log_error("hot_lru_pct + warm_lru_pct cannot be more than 80%% combined");
        return -1;
    }
    if (mc_settings.maxconns < 1) {
        log_error("Maximum connections must be greater than 0");
        return -1;
    }
    if (mc_settings.chunk_min < 1) {
        log_error("Chunk size must be greater than 0");
        return -1;
    }
    if (mc_settings.item_size_max < 1024) {
        log_error("Item max size cannot be less than 1024 bytes.");
        return -1;
    }
    if (mc_settings.item_size_max > (1u << 30)) {
        log_error("Cannot set item size limit higher than 1 gigabyte.");
        return -1;
    }
    if (mc_settings.item_size_max > mc_settings.maxbytes / 2) {
        log_error("Cannot set item size limit higher than 1/2 of memory max.");
        return -1;
    }
    if (mc_settings.temp_lru && !mc_settings.lru_maintainer) {
        log_error("temporary_ttl requires lru_maintainer to be enabled");
        return -1;
    }
    if (!mc_settings.lru_maintainer)
        mc_settings.lru_segmented = false; /* as memcached: one LRU per class without the maintainer */
    if (mc_settings.slab_chunk_max == 0) {
        /* memcached 1.6.18 refuses -I under 512k unless slab_chunk_max is
         * lowered too; here the default follows -I down instead. */
        mc_settings.slab_chunk_max = mc_chunk_max_page ? 1024 * 1024 : 512 * 1024;
        if ((uint64_t)mc_settings.slab_chunk_max > mc_settings.item_size_max)
            mc_settings.slab_chunk_max = (int)mc_settings.item_size_max;
    } else if ((uint64_t)mc_settings.slab_chunk_max > mc_settings.item_size_max) {
        log_error("slab_chunk_max (bytes: %d) cannot be larger than -I (item_size_max %" PRIu64 ")",
                  mc_settings.slab_chunk_max, mc_settings.item_size_max);
        return -1;
    } else if (mc_settings.item_size_max % (uint64_t)mc_settings.slab_chunk_max != 0) {
        log_error("-I (item_size_max: %" PRIu64 ") must be evenly divisible by slab_chunk_max (bytes: %d)",
                  mc_settings.item_size_max, mc_settings.slab_chunk_max);
        return -1;
    } else {
        /* A chunked item's head holds the key and a pointer per chunk. */
        uint64_t n = mc_settings.item_size_max / ((uint64_t)mc_settings.slab_chunk_max - 64) + 1;
        if (n * 8 + 512 > (uint64_t)mc_settings.slab_chunk_max) {
            log_error("slab_chunk_max (bytes: %d) is too small for -I %" PRIu64 " (an item's head could not hold "
                      "its %" PRIu64 " chunk pointers)",
                      mc_settings.slab_chunk_max, mc_settings.item_size_max, n);
            return -1;
        }
    }
    if (mc_settings.factor <= 1.0) {
        log_error("Factor must be greater than 1");
        return -1;
    }
    if (mc_settings.large_pages) {
        char err[256];
        if (mc_large_pages_check(err, sizeof err) < 0) {
            log_error("%s Cannot enable large pages on this system (There is no support as of this version)", err);
            return -1;
        }
        if (mc_memory_file && *mc_memory_file)
            mc_settings.large_pages = false; /* as memcached: -e's memory file is the preallocated memory */
    }
    if (mc_settings.lock_memory)
        mc_lock_memory();
    if (mc_settings.auth_file) {
        if (!mc_protocol_specified)
            mc_settings.protocol = MC_BIND_ASCII;
        else if (mc_settings.protocol != MC_BIND_ASCII) {
            log_error("ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens.");
            return -1;
        }
        if (mc_settings.udp_port) {
            log_error("Cannot use UDP with ascii authentication enabled (-U 0 to disable)");
            return -1;
        }
        char err[512];
        if (mc_auth_ascii_load(err, sizeof err) < 0) {
            log_error("Authfile: %s", err);
            return -1;
        }
    }
    if (mc_settings.sasl && !sasl_path())
        log_warn("SASL enabled without a password file (--sasl-pwdb or MEMCACHED_SASL_PWDB): nobody can log in");
    else if (mc_settings.sasl && sasl_load() < 0)
        return -1;
    if (mc_settings.ssl_enabled && mc_tls_setup() < 0)
        return -1;
    resp_obj_cap_init();
    mc_clock_update();
    if (mc_slabs_init() < 0) {
        log_error("cannot allocate the item store");
        return -1;
    }
    if (mc_memory_file && *mc_memory_file) {
        /* -e: may set the hash size and clock the saved items need */
        if (mc_restart_open() < 0)
            return -1;
        static const struct loop_layer usr1 = { .name = "memcached-restart", .dump = usr1_graceful_stop };
        loop_add_layer(&usr1);
    }
    mc_watch_init();
    if (mc_assoc_init(mc_settings.hashpower) < 0) {
        log_error("cannot allocate the item store");
        return -1;
    }
    if (mc_memory_file && *mc_memory_file)
        mc_restart_restore();
    listen_set_max_conns((uint64_t)(mc_settings.maxconns > 0 ? mc_settings.maxconns : 0));
    for (int i = 0; i < loop_count(); i++) {
        thread_start(loop_get(i));
        if (!loop_get(i)->data) {
            log_error("out of memory for the thread state");
            return -1;
        }
    }

    if (mc_settings.unix_path && *mc_settings.unix_path) {
        char spec[1100];
        snprintf(spec, sizeof spec, "unix:%s", mc_settings.unix_path);
        if (open_listener(spec, 0, true) < 0)
            return -1;
    } else {
        const char *pf = getenv("MEMCACHED_PORT_FILENAME");
        char pf_tmp[1100] = "";
        if (pf && *pf) {
            snprintf(pf_tmp, sizeof pf_tmp, "%s.lck", pf);
            mc_port_file = fopen(pf_tmp, "a");
            if (!mc_port_file)
                log_warn("Failed to open \"%s\": %s", pf_tmp, strerror(errno));
        }
        int rc = open_network();
        if (mc_port_file) {
            fclose(mc_port_file);
            mc_port_file = NULL;
            if (rc == 0 && rename(pf_tmp, pf) < 0)
                log_warn("rename %s: %s", pf_tmp, strerror(errno));
        }
        if (rc < 0)
            return -1;
    }
    stats_add_source("", general_stats, NULL);
    stats_add_source("slabs", slabs_stats, NULL);
    stats_add_source("items", items_stats, NULL);
    stats_add_source("settings", settings_stats, NULL);
    stats_add_source("conns", conns_stats, NULL);
    if (mc_maintainer_start() < 0) {
        log_error("cannot start the maintainer thread");
        return -1;
    }
    mc_ext_register_stats();
    if (mc_ext_init() < 0) {
        log_error("cannot start extstore");
        return -1;
    }
    return 0;
}

static void mc_fini(void)
{
    mc_ext_stop();
    mc_udp_close_all();
    mc_maintainer_stop();
    mc_restart_close(); /* -e: saves the items for the next start after a graceful stop */
}

int main(int argc, char **argv)
{
    /* socket I/O batched through io_uring unless $STACK_IO_URING says
     * otherwise (0, no, off): on a kernel where each system call is dear a
     * loop iteration's reads and replies in one io_uring_enter take 11-28 %
     * less CPU per request than a read() and a sendmsg() each (README,
     * Benchmark); where io_uring cannot be set up the core says so once
     * and stays on epoll */
    uring_default(true);
    mc_settings.lru_crawler = true;
    mc_settings.hot_pct = 20;
    mc_settings.warm_pct = 40;
    mc_settings.hashpower = 16;
    mc_settings.out_mem_limit = 256ull << 20;
    mc_settings.auth_delay_us = 100000;
    mc_settings.maxconns_fast = true;
    mc_settings.lru_crawler_sleep = 100;
    mc_settings.lru_maintainer = true;
    mc_settings.hot_max_factor = 0.2;
    mc_settings.warm_max_factor = 2.0;
    mc_settings.temporary_ttl = 61;
    mc_settings.lru_segmented = true;
    mc_settings.slab_reassign = true;
    mc_settings.slab_automove = 1;
    mc_settings.slab_automove_ratio = 0.8;
    mc_settings.slab_automove_window = 30;
    mc_settings.slab_automove_freeratio = 0.01;
    mc_settings.slab_chunk_max = 0; /* half a page, or -I when that is smaller */
    mc_settings.hash_expand = true;
    const struct daemon_desc desc = {
        .name = "memcached",
        .version = MC_VERSION,
        .settings = mc_table,
        .threads = &mc_settings.threads,
        .default_admin_port = 11212,
        .init = mc_init,
        .fini = mc_fini,
        .hooks = { .on_thread_start = thread_start, .on_reload = mc_reload },
        .admin_cmds = mc_admin,
    };
    for (const struct cfg_setting *t = mc_table; t->name; t++) {
        if (t->ptr == &mc_settings.maxbytes)
            cfg_set_formatter(t, fmt_maxbytes);
        else if (t->ptr == &mc_settings.port || t->ptr == &mc_settings.udp_port)
            cfg_set_formatter(t, fmt_port);
        else if (t->ptr == &mc_settings.unix_mask)
            cfg_set_formatter(t, fmt_unix_mask);
        else if (t->ptr == &mc_settings.ext_opts)
            cfg_set_formatter(t, fmt_ext);
    }
    return daemon_main(&desc, argc, argv);
}
