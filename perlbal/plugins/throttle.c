/* plugins/throttle.c: Perlbal's throttle plugin — per-IP delays growing on repeat requests, bans, max concurrent,
 * white/blacklists. */
#include <arpa/inet.h>
#include <errno.h>
#include <ctype.h>
#include <limits.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/work.h"
#include "memcached/client/libmc.h"
#include "common/line.h"
#include "common/log.h"
#include "common/loop.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"
#include "perlbal/regex.h"

/* throttle:
 * As Perlbal's Throttle plugin with its in-memory store: per client IP
 * (IPv4 or IPv6; the white/blacklists are IPv4 networks), a
 * request within throttle_threshold_seconds of the previous one is held
 * initial_delay * 2^violations seconds (at most max_delay); ban_threshold
 * violations ban the IP for ban_expiration seconds (403 / close); more than
 * max_concurrent requests in flight from one IP get 403; whitelist_file IPs
 * pass, blacklist_file IPs are denied (or throttled); path_regex and
 * method_regex (Perl regexes, PCRE2) limit which requests count. The per-IP table is
 * direct-mapped (THR_SLOTS per service): an IP colliding with another takes
 * its slot, which errs on the lenient side.
 *
 * With memcached_servers set, the per-IP record (last request time and
 * violations) lives in memcached instead, as Perlbal's memcached store:
 * key instance_name . ip, value Perl's pack('FS', start, count) (a native
 * double and a 16-bit count: 10 bytes, so Perl and C throttlers can share
 * it), expiry throttle_threshold_seconds or the delay. The lookup runs on
 * the plugin's work pool (libmc is blocking; memcached_async_clients
 * threads, at most 8, one client each) while the request is held
 * (PB_HOLD_ASYNC); a memcached that fails or times out (initial_delay s)
 * counts as "unseen", as in Perlbal. Bans and concurrency stay local. */
#define THR_SLOTS 4096
#define THR_LIST_MAX 256

/* A client address: IPv4 as v4-mapped IPv6, so one table holds both. */
struct thr_ip {
    unsigned char b[16];
};

static bool thr_ip_eq(const struct thr_ip *a, const struct thr_ip *b) { return !memcmp(a->b, b->b, 16); }

/* The client's address; *v4 (network order) and *is_v4 for the IPv4
 * white/blacklists. False for a client that is neither (unix socket). */
static bool thr_client_ip(struct pb_client *cl, struct thr_ip *out, uint32_t *v4, bool *is_v4)
{
    const struct sockaddr_storage *ss = &cl->c->peer;
    memset(out, 0, sizeof *out);
    *v4 = 0;
    *is_v4 = false;
    if (ss->ss_family == AF_INET) {
        *v4 = ((const struct sockaddr_in *)ss)->sin_addr.s_addr;
        *is_v4 = true;
        out->b[10] = out->b[11] = 0xff;
        memcpy(out->b + 12, v4, 4);
        return true;
    }
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        memcpy(out->b, a, 16);
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            memcpy(v4, out->b + 12, 4);
            *is_v4 = true;
        }
        return true;
    }
    return false;
}

/* Its text form, as Perlbal's key and logs spell it. */
static const char *thr_ip_str(const struct thr_ip *ip, char *buf, size_t len)
{
    static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (!memcmp(ip->b, mapped, 12))
        return inet_ntop(AF_INET, ip->b + 12, buf, (socklen_t)len);
    return inet_ntop(AF_INET6, ip->b, buf, (socklen_t)len);
}

struct thr_slot {
    struct thr_ip ip;   /* the client; all zero = empty */
    int64_t last_ms;    /* last request start */
    int64_t expires_ms; /* the record is forgotten after this */
    int violations;
    int concurrent;
    int64_t banned_until_ms;
};

struct thr_state {
    pthread_mutex_t lock;
    struct thr_slot slots[THR_SLOTS];
    struct pb_net white[THR_LIST_MAX], black[THR_LIST_MAX]; /* IPv4 and IPv6 networks */
    int nwhite, nblack;
    char *white_file, *black_file;        /* for `throttle reload whitelist|blacklist` */
    struct pb_regex *path_re, *method_re; /* NULL = every request counts */
    /* memcached store (NULL pool = in memory) */
    struct work_pool *mc_pool;
    char *mc_servers, *instance_name;
    uint64_t mc_gen; /* bumped when the servers change */
    int mc_threads;
    struct mc_client *mc[8]; /* one per pool thread, touched by it only */
    uint64_t mc_client_gen[8];
    /* tunables */
    bool default_throttle, blacklist_deny, log_only;
    int threshold_s, initial_delay_s, max_delay_s, max_concurrent, ban_threshold, ban_expiration_s;
};

static struct thr_state *thr_of(struct pb_service *svc)
{
    struct plug_state *st = pb_plugin_state(svc);
    if (!st)
        return NULL;
    if (!st->throttle) {
        pthread_mutex_lock(&pb_plugin_lock);
        if (!st->throttle) {
            struct thr_state *t = calloc(1, sizeof *t);
            if (t) {
                pthread_mutex_init(&t->lock, NULL);
                t->default_throttle = true;
                t->blacklist_deny = true;
                t->threshold_s = 60;
                t->initial_delay_s = 3;
                t->max_delay_s = 300;
                t->max_concurrent = 2;
                t->ban_expiration_s = 60;
                st->throttle = t;
            }
        }
        pthread_mutex_unlock(&pb_plugin_lock);
    }
    return st->throttle;
}

static bool in_list(const struct pb_net *l, int n, const struct sockaddr_storage *peer)
{
    for (int i = 0; i < n; i++)
        if (pb_net_match(&l[i], peer))
            return true;
    return false;
}

/* A file of CIDRs (IPv4 or IPv6, "#" comments), as Perlbal's Net::CIDR::Lite
 * list. The caller's list is replaced only when the file loads. */
static int load_cidrs(const char *file, struct pb_net *out, int *n, char *err, size_t errlen)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        snprintf(err, errlen, "Unable to open file %s: %s", file, strerror(errno));
        return -1;
    }
    struct pb_net tmp[THR_LIST_MAX];
    char line[256];
    int k = 0;
    while (fgets(line, sizeof line, f) && k < THR_LIST_MAX) {
        char *h = strchr(line, '#');
        if (h)
            *h = 0;
        char *s = line;
        while (isspace((unsigned char)*s))
            s++;
        char *e = s;
        while (*e && !isspace((unsigned char)*e))
            e++;
        *e = 0;
        if (!*s)
            continue;
        if (pb_net_parse(s, &tmp[k]) == 0)
            k++;
    }
    fclose(f);
    if (!k) {
        snprintf(err, errlen, "%s contains no recognizable CIDRs", file);
        return -1;
    }
    memcpy(out, tmp, (size_t)k * sizeof tmp[0]);
    *n = k;
    return 0;
}

static const char *const thr_tunables[] = {
    "whitelist_file",
    "blacklist_file",
    "default_action",
    "blacklist_action",
    "path_regex",
    "method_regex",
    "log_events",
    "log_only",
    "throttle_threshold_seconds",
    "initial_delay",
    "max_delay",
    "max_concurrent",
    "ban_threshold",
    "ban_expiration",
    "memcached_servers",
    "memcached_async_clients",
    "instance_name",
    NULL,
};

static int thr_set(struct pb_service *svc, const char *key, const char *val, char *err, size_t errlen)
{
    struct thr_state *t = thr_of(svc);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    err[0] = 0;
    char *end;
    long n = strtol(val, &end, 10);
    bool is_int = end != val && !*end && n >= 0;
    pthread_mutex_lock(&t->lock);
    if (!strcmp(key, "whitelist_file") || !strcmp(key, "blacklist_file")) {
        bool white = key[0] == 'w';
        char **file = white ? &t->white_file : &t->black_file;
        if (!*val || !strcmp(val, "none")) {
            *(white ? &t->nwhite : &t->nblack) = 0;
            free(*file);
            *file = NULL;
        } else {
            rc = load_cidrs(val, white ? t->white : t->black, white ? &t->nwhite : &t->nblack, err, errlen);
            if (rc == 0) {
                free(*file);
                *file = strdup(val);
            }
        }
    } else if (!strcmp(key, "default_action")) {
        if (strcmp(val, "allow") && strcmp(val, "throttle"))
            rc = -1;
        else
            t->default_throttle = !strcmp(val, "throttle");
    } else if (!strcmp(key, "blacklist_action")) {
        if (strcmp(val, "deny") && strcmp(val, "throttle"))
            rc = -1;
        else
            t->blacklist_deny = !strcmp(val, "deny");
    } else if (!strcmp(key, "path_regex") || !strcmp(key, "method_regex")) {
        bool path = key[0] == 'p';
        struct pb_regex **re = path ? &t->path_re : &t->method_re;
        struct pb_regex *nre = NULL;
        if (*val && !(nre = pb_regex_compile(val, err, errlen))) {
            rc = -1;
        } else {
            pb_regex_free(*re); /* matched only under t->lock, held here */
            *re = nre;
        }
    } else if (!strcmp(key, "log_only")) {
        t->log_only =
            !strcmp(val, "1") || !strcasecmp(val, "on") || !strcasecmp(val, "true") || !strcasecmp(val, "yes");
    } else if (!strcmp(key, "instance_name")) {
        free(t->instance_name);
        t->instance_name = strdup(val);
    } else if (!strcmp(key, "memcached_servers")) {
        char e[200];
        struct mc_client *probe = *val ? mc_client_new(val, NULL, e, sizeof e) : NULL;
        if (*val && !probe) {
            snprintf(err, errlen, "memcached_servers: %s", e);
            rc = -2;
        } else {
            mc_client_free(probe);
            free(t->mc_servers);
            t->mc_servers = *val ? strdup(val) : NULL;
            t->mc_gen++;
            if (t->mc_servers && !t->mc_pool) {
                if (t->mc_threads <= 0)
                    t->mc_threads = 2;
                t->mc_pool = work_pool_new("throttle-mc", t->mc_threads, 4096);
                if (!t->mc_pool) {
                    snprintf(err, errlen, "cannot start the memcached threads");
                    rc = -2;
                }
            }
        }
    } else if (!strcmp(key, "memcached_async_clients")) {
        if (!is_int || n < 1) {
            snprintf(err, errlen, "Expected integer value for '%s'", key);
            rc = -2;
        } else if (t->mc_pool) {
            log_warn("perlbal: Throttle memcached_async_clients is read when memcached_servers is first set");
        } else {
            t->mc_threads = n > 8 ? 8 : (int)n;
        }
    } else if (!strcmp(key, "log_events")) {
    } else if (!is_int) {
        snprintf(err, errlen, "Expected integer value for '%s'", key);
        rc = -2;
    } else if (!strcmp(key, "throttle_threshold_seconds"))
        t->threshold_s = (int)n;
    else if (!strcmp(key, "initial_delay"))
        t->initial_delay_s = (int)n;
    else if (!strcmp(key, "max_delay"))
        t->max_delay_s = (int)n;
    else if (!strcmp(key, "max_concurrent"))
        t->max_concurrent = (int)n;
    else if (!strcmp(key, "ban_threshold"))
        t->ban_threshold = (int)n;
    else if (!strcmp(key, "ban_expiration"))
        t->ban_expiration_s = (int)n;
    pthread_mutex_unlock(&t->lock);
    if (rc == -1 && !err[0])
        snprintf(err, errlen, "Invalid value for '%s'", key);
    return rc < 0 ? -1 : 0;
}

static struct thr_slot *thr_slot(struct thr_state *t, const struct thr_ip *ip)
{
    uint32_t h = 2166136261u; /* FNV-1a over the 16 bytes */
    for (int i = 0; i < 16; i++)
        h = (h ^ ip->b[i]) * 16777619u;
    h *= 2654435761u;
    return &t->slots[(h >> 20) % THR_SLOTS];
}

static void thr_end(struct pb_service *svc, struct pb_client *cl);

static const char *method_name(enum http_method m)
{
    switch (m) {
    case HTTP_M_GET: return "GET";
    case HTTP_M_HEAD: return "HEAD";
    case HTTP_M_POST: return "POST";
    case HTTP_M_PUT: return "PUT";
    case HTTP_M_DELETE: return "DELETE";
    case HTTP_M_OPTIONS: return "OPTIONS";
    case HTTP_M_TRACE: return "TRACE";
    case HTTP_M_CONNECT: return "CONNECT";
    default: return "OTHER";
    }
}

/* ---- the memcached store ---- */

struct thr_job {
    struct pb_client *cl; /* NULL once the client went away */
    struct pb_service *svc;
    struct thr_state *t;
    char key[160];
    double now; /* wall clock, seconds (Perl's time) */
    int threshold_s, initial_delay_s, max_delay_s, ban_threshold;
    int64_t delay_ms; /* result: hold this long */
    bool ban;         /* result: ban the IP */
    struct thr_ip ip;
};

static void thr_pack(unsigned char out[10], double start, unsigned count)
{
    memcpy(out, &start, 8); /* pack('F'): a native double */
    uint16_t c = (uint16_t)(count > 65535 ? 65535 : count);
    memcpy(out + 8, &c, 2); /* pack('S'): a native u16 */
}

static void thr_mc_set(struct mc_client *mc, const char *key, double start, unsigned count, int exptime)
{
    unsigned char v[10];
    thr_pack(v, start, count);
    mc_client_set(mc, key, strlen(key), v, sizeof v, 0, exptime > 0 ? exptime : 1);
}

/* On a pool thread: the record's get, the early set, the decision, the
 * violation's set, as Perlbal's Throttle does them. */
static void thr_mc_run(void *arg)
{
    struct thr_job *j = arg;
    struct thr_state *t = j->t;
    int ti = work_thread_index();
    if (ti < 0 || ti >= 8)
        return;
    pthread_mutex_lock(&t->lock);
    uint64_t gen = t->mc_gen;
    char *servers = t->mc_servers ? strdup(t->mc_servers) : NULL;
    pthread_mutex_unlock(&t->lock);
    if (t->mc[ti] && t->mc_client_gen[ti] != gen) {
        mc_client_free(t->mc[ti]);
        t->mc[ti] = NULL;
    }
    if (!t->mc[ti] && servers) {
        char e[200];
        int ms = j->initial_delay_s > 0 ? j->initial_delay_s * 1000 : 1000;
        struct mc_client_options o = { .connect_timeout_ms = ms, .io_timeout_ms = ms };
        t->mc[ti] = mc_client_new(servers, &o, e, sizeof e);
        t->mc_client_gen[ti] = gen;
    }
    free(servers);
    struct mc_client *mc = t->mc[ti];
    if (!mc)
        return; /* no servers any more: unseen */
    struct mc_client_value v = { 0 };
    bool seen = false;
    double last = 0;
    unsigned violations = 0;
    if (mc_client_get(mc, j->key, strlen(j->key), &v) == MC_CLIENT_OK) {
        if (v.len == 10) {
            uint16_t c;
            memcpy(&last, v.data, 8);
            memcpy(&c, v.data + 8, 2);
            violations = c;
            seen = true;
        }
        mc_client_value_free(&v);
    }
    thr_mc_set(mc, j->key, j->now, violations, j->threshold_s);
    if (!seen || j->now - last >= j->threshold_s)
        return; /* unseen or reformed: allowed */
    double d = j->initial_delay_s;
    for (unsigned i = 0; i < violations && d < j->max_delay_s; i++)
        d *= 2;
    if (d > j->max_delay_s)
        d = j->max_delay_s;
    violations++;
    if (j->ban_threshold && violations >= (unsigned)j->ban_threshold) {
        j->ban = true;
        return;
    }
    thr_mc_set(mc, j->key, j->now, violations, (int)d);
    j->delay_ms = (int64_t)(d * 1000);
}

static void thr_mc_cancel(void *arg)
{
    struct thr_job *j = arg;
    j->cl = NULL;
}

/* Back on the client's loop. */
static void thr_mc_done(void *arg)
{
    struct thr_job *j = arg;
    struct pb_client *cl = j->cl;
    if (!cl) {
        free(j);
        return;
    }
    struct thr_state *t = j->t;
    bool log_only;
    pthread_mutex_lock(&t->lock);
    log_only = t->log_only;
    if (j->ban) {
        struct thr_slot *s = thr_slot(t, &j->ip);
        if (!thr_ip_eq(&s->ip, &j->ip)) {
            memset(s, 0, sizeof *s);
            s->ip = j->ip;
        }
        s->banned_until_ms = pb_now_ms() + (int64_t)t->ban_expiration_s * 1000;
    }
    pthread_mutex_unlock(&t->lock);
    char ipbuf[INET6_ADDRSTRLEN];
    if (j->ban)
        log_info("perlbal: Throttle: banning %s", thr_ip_str(&j->ip, ipbuf, sizeof ipbuf));
    struct pb_service *svc = j->svc;
    bool ban = j->ban;
    int64_t delay = log_only ? 0 : j->delay_ms;
    free(j);
    if (ban && !log_only) {
        pb_proxy_async_done(cl, -1);
        thr_end(svc, cl);
        cl->h->keep_alive = false;
        pb_client_error(cl, 403, "Forbidden.");
        return;
    }
    pb_proxy_async_done(cl, delay);
}

static int64_t thr_mc_start(struct pb_service *svc, struct pb_client *cl, struct thr_state *t, const struct thr_ip *ip)
{
    struct thr_job *j = calloc(1, sizeof *j);
    if (!j)
        return 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char ipbuf[INET6_ADDRSTRLEN];
    thr_ip_str(ip, ipbuf, sizeof ipbuf);
    j->cl = cl;
    j->svc = svc;
    j->t = t;
    j->ip = *ip;
    j->now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    pthread_mutex_lock(&t->lock);
    snprintf(j->key, sizeof j->key, "%s%s", t->instance_name ? t->instance_name : "", ipbuf);
    j->threshold_s = t->threshold_s;
    j->initial_delay_s = t->initial_delay_s;
    j->max_delay_s = t->max_delay_s;
    j->ban_threshold = t->ban_threshold;
    struct work_pool *pool = t->mc_pool;
    pthread_mutex_unlock(&t->lock);
    if (work_submit(pool, loop_get(cl->loop_index), thr_mc_run, thr_mc_done, j) < 0) {
        free(j); /* overloaded: let it through, as a memcached timeout would */
        return 0;
    }
    cl->async_job = j;
    cl->async_cancel = thr_mc_cancel;
    return PB_HOLD_ASYNC;
}

static int64_t thr_start(struct pb_service *svc, struct pb_client *cl)
{
    struct thr_state *t = thr_of(svc);
    struct thr_ip ip;
    uint32_t ip4;
    bool is_v4;
    if (!t || !thr_client_ip(cl, &ip, &ip4, &is_v4))
        return 0;
    int64_t now = pb_now_ms(), delay = 0;
    enum { ALLOW, THROTTLE, DENY, BAN } result;
    pthread_mutex_lock(&t->lock);
    struct thr_slot *s = thr_slot(t, &ip);
    if (!thr_ip_eq(&s->ip, &ip) || (s->expires_ms <= now && s->concurrent == 0 && s->banned_until_ms <= now)) {
        memset(s, 0, sizeof *s);
        s->ip = ip;
    }
    s->concurrent++;
    cl->throttle_counted = true;
    if (in_list(t->white, t->nwhite, &cl->c->peer))
        result = ALLOW;
    else if (s->banned_until_ms > now)
        result = DENY;
    else if (in_list(t->black, t->nblack, &cl->c->peer))
        result = t->blacklist_deny ? DENY : THROTTLE;
    else if (s->concurrent > t->max_concurrent)
        result = DENY;
    else if (t->path_re && (!cl->target || !pb_regex_match(t->path_re, cl->target, strlen(cl->target))))
        result = ALLOW;
    else if (t->method_re &&
             !pb_regex_match(t->method_re, method_name(cl->h->method), strlen(method_name(cl->h->method))))
        result = ALLOW;
    else
        result = t->default_throttle ? THROTTLE : ALLOW;
    if (result == THROTTLE && t->mc_pool && t->mc_servers) {
        pthread_mutex_unlock(&t->lock);
        return thr_mc_start(svc, cl, t, &ip);
    }
    if (result == THROTTLE) {
        bool seen = s->last_ms && s->expires_ms > now;
        if (!seen || now - s->last_ms >= (int64_t)t->threshold_s * 1000) {
            s->violations = 0;
            s->expires_ms = now + (int64_t)t->threshold_s * 1000;
        } else {
            int64_t d = (int64_t)t->initial_delay_s * 1000;
            for (int i = 0; i < s->violations && d < (int64_t)t->max_delay_s * 1000; i++)
                d *= 2;
            if (d > (int64_t)t->max_delay_s * 1000)
                d = (int64_t)t->max_delay_s * 1000;
            s->violations++;
            if (t->ban_threshold && s->violations >= t->ban_threshold) {
                s->banned_until_ms = now + (int64_t)t->ban_expiration_s * 1000;
                result = BAN;
            } else {
                delay = d;
                s->expires_ms = now + d;
            }
        }
        s->last_ms = now;
    }
    bool log_only = t->log_only;
    pthread_mutex_unlock(&t->lock);
    char ipbuf[INET6_ADDRSTRLEN];
    if (result == BAN)
        log_info("perlbal: Throttle: banning %s", thr_ip_str(&ip, ipbuf, sizeof ipbuf));
    if (log_only)
        return 0;
    if (result == DENY || result == BAN) {
        thr_end(svc, cl);
        cl->h->keep_alive = false;
        pb_client_error(cl, 403, "Forbidden.");
        return -1;
    }
    return delay;
}

static void thr_end(struct pb_service *svc, struct pb_client *cl)
{
    if (!cl->throttle_counted)
        return;
    cl->throttle_counted = false;
    struct thr_state *t = thr_of(svc);
    struct thr_ip ip;
    uint32_t ip4;
    bool is_v4;
    if (!t || !thr_client_ip(cl, &ip, &ip4, &is_v4))
        return;
    pthread_mutex_lock(&t->lock);
    struct thr_slot *s = thr_slot(t, &ip);
    if (thr_ip_eq(&s->ip, &ip) && s->concurrent > 0)
        s->concurrent--;
    pthread_mutex_unlock(&t->lock);
}

/* throttle reload <config|whitelist|blacklist>, for the service in context
 * (after CREATE SERVICE / USE), as Perlbal. The lists are read again from
 * their files (a file that does not load keeps the old list); settings
 * take effect when SET, so "config" has nothing left to do. */
static int thr_command(const char *ctx_service, int argc, const char *const *argv, void (*out)(void *, const char *),
                       void *arg, char *err, size_t errlen)
{
    (void)out;
    (void)arg;
    if (argc != 3 || strcmp(argv[1], "reload") ||
        (strcmp(argv[2], "config") && strcmp(argv[2], "whitelist") && strcmp(argv[2], "blacklist"))) {
        snprintf(err, errlen, "usage: throttle reload <config|whitelist|blacklist>");
        return -1;
    }
    if (!ctx_service) {
        snprintf(err, errlen,
                 "No service name set. This command must be used after CREATE SERVICE <name> or USE <service_name>");
        return -1;
    }
    pthread_mutex_lock(&pb_lock);
    struct pb_service *svc = pb_service_find(ctx_service);
    pthread_mutex_unlock(&pb_lock);
    if (!svc) {
        snprintf(err, errlen, "Non-existent service '%s'", ctx_service);
        return -1;
    }
    if (!strcmp(argv[2], "config"))
        return 0;
    struct thr_state *t = thr_of(svc);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    bool white = argv[2][0] == 'w';
    int rc = 0;
    pthread_mutex_lock(&t->lock);
    const char *file = white ? t->white_file : t->black_file;
    if (!file) {
        snprintf(err, errlen, "no %s file configured", white ? "whitelist" : "blacklist");
        rc = -1;
    } else {
        char e[300];
        if (load_cidrs(file, white ? t->white : t->black, white ? &t->nwhite : &t->nblack, e, sizeof e) < 0) {
            snprintf(err, errlen, "Couldn't load %s: %s", file, e);
            rc = -1;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

static const char *const thr_cmds[] = { "throttle", NULL };
const struct pb_plugin pb_plugin_throttle = { .name = "throttle",
                                              .set_param = thr_set,
                                              .tunables = thr_tunables,
                                              .proxy_start = thr_start,
                                              .proxy_end = thr_end,
                                              .commands = thr_cmds,
                                              .command = thr_command };
