/* pb_plugin: the plugin registry, the hook runners, and the plugins bundled
 * with Perlbal 1.80 that make sense compiled in:
 *
 *   vhosts               the selector role's VHOST table (pb_client.c does the matching)
 *   accesscontrol        ACCESS policy|allow|deny|queue_low|reset ip|netmask -> 403 / low priority
 *   maxcontentlength     SET max_content_length = N -> 413 for larger Content-Length
 *   redirect             REDIRECT HOST <match> <target> -> 301 to http://target/uri
 *   stats                `stats` and `recent` console commands
 *   queues               X-Queue-Count/-Age, X-HP-Queue-Count/-Age request headers to backends
 *   autoremoveleadingdir web_server: strip the docroot's last directory from the URI
 *   notmodified          SET svc.notmodified.host_pattern = ERE -> 304 to any If-Modified-Since
 *   throttle             per-IP delays growing on repeat requests, bans, max concurrent, white/blacklists
 *   echoservice          the `echo` service role: lines sent back, after `echo_delay` seconds
 *
 * Per-service plugin state (rules, maps, counters) lives in a struct hung off
 * the service; console changes and request-time reads meet under plug_lock. */
#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/line.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/tls.h"
#include "perlbal/pb_conn.h"
#include "perlbal/pb_plugin.h"

static pthread_mutex_t plug_lock = PTHREAD_MUTEX_INITIALIZER;

#define MAX_RULES 64
#define MAX_REDIRECTS 64
#define RECENT_MAX 100

enum access_action { ACC_ALLOW, ACC_DENY, ACC_QUEUE_LOW };

struct access_rule {
    enum access_action action;
    uint32_t net, mask;             /* network byte order; ip = /32 */
};

struct plug_state {
    /* accesscontrol */
    struct access_rule rules[MAX_RULES];
    int nrules;
    bool deny_default;
    /* redirect */
    struct { char match[128], target[128]; } redirects[MAX_REDIRECTS];
    int nredirects;
    /* stats */
    _Atomic uint64_t files_sent, files_reproxied, web_requests, proxy_requests, proxy_requests_highpri;
    char recent[RECENT_MAX][192];
    int recent_next, recent_count;
    /* notmodified */
    regex_t host_re;
    bool has_host_re;
    /* throttle */
    struct thr_state *throttle;
};

static struct plug_state *state_of(struct pb_service *s)
{
    if (!s->plugin_state) {
        pthread_mutex_lock(&plug_lock);
        if (!s->plugin_state) s->plugin_state = calloc(1, sizeof(struct plug_state));
        pthread_mutex_unlock(&plug_lock);
    }
    return s->plugin_state;
}

static uint32_t client_ipv4(struct pb_client *cl, bool *ok)
{
    *ok = cl->c->peer.ss_family == AF_INET;
    return *ok ? ((struct sockaddr_in *)&cl->c->peer)->sin_addr.s_addr : 0;
}

/* ---- accesscontrol ---- */

static enum pb_hook_result access_start(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    (void)req;
    struct plug_state *st = state_of(svc);
    if (!st) return PB_HOOK_CONTINUE;
    bool v4;
    uint32_t ip = client_ipv4(cl, &v4);
    int action = -1;
    pthread_mutex_lock(&plug_lock);
    for (int i = 0; i < st->nrules && v4; i++)
        if ((ip & st->rules[i].mask) == st->rules[i].net) {
            action = (int)st->rules[i].action;
            break;
        }
    bool deny_default = st->deny_default;
    pthread_mutex_unlock(&plug_lock);
    if (action == ACC_QUEUE_LOW) {
        cl->prio = 2;
        return PB_HOOK_CONTINUE;
    }
    if (action == ACC_ALLOW || (action < 0 && !deny_default)) return PB_HOOK_CONTINUE;
    pb_client_error(cl, 403, "Access denied.");
    return PB_HOOK_HANDLED;
}

static int parse_net(const char *what, const char *val, uint32_t *net, uint32_t *mask)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", val);
    int bits = 32;
    char *slash = strchr(buf, '/');
    if (!strcmp(what, "netmask")) {
        if (!slash) return -1;
        *slash = 0;
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (*end || b < 0 || b > 32) return -1;
        bits = (int)b;
    } else if (slash) {
        return -1;
    }
    struct in_addr a;
    if (inet_pton(AF_INET, buf, &a) != 1) return -1;
    *mask = bits ? htonl(~0u << (32 - bits)) : 0;
    *net = a.s_addr & *mask;
    return 0;
}

static int access_command(const char *svcname, int argc, const char *const *argv,
                          void (*out)(void *, const char *), void *arg, char *err, size_t errlen)
{
    (void)out;
    (void)arg;
    if (argc < 2 || argc > 4) {
        snprintf(err, errlen, "usage: ACCESS <cmd> <arg1> [<arg2>]");
        return -1;
    }
    struct pb_service *svc = svcname ? pb_service_find(svcname) : NULL;
    if (!svcname) {
        snprintf(err, errlen, "No service name in context from CREATE SERVICE <name> or USE <service_name>");
        return -1;
    }
    if (!svc) {
        snprintf(err, errlen, "Non-existent service '%s'", svcname);
        return -1;
    }
    struct plug_state *st = state_of(svc);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const char *cmd = argv[1];
    int rc = 0;
    pthread_mutex_lock(&plug_lock);
    if (!strcmp(cmd, "reset")) {
        st->nrules = 0;
        st->deny_default = false;
    } else if (!strcmp(cmd, "policy")) {
        if (argc < 3 || (strcmp(argv[2], "allow") && strcmp(argv[2], "deny"))) {
            snprintf(err, errlen, "policy must be 'allow' or 'deny'");
            rc = -1;
        } else {
            st->deny_default = !strcmp(argv[2], "deny");
        }
    } else if (!strcmp(cmd, "allow") || !strcmp(cmd, "deny") || !strcmp(cmd, "queue_low")) {
        uint32_t net, mask;
        if (argc < 3 || (strcmp(argv[2], "ip") && strcmp(argv[2], "netmask"))) {
            snprintf(err, errlen, "Unknown item to %s: '%s'", cmd, argc >= 3 ? argv[2] : "");
            rc = -1;
        } else if (argc < 4 || parse_net(argv[2], argv[3], &net, &mask) < 0) {
            snprintf(err, errlen, "Error parsing %s", argv[2]);
            rc = -1;
        } else if (st->nrules >= MAX_RULES) {
            snprintf(err, errlen, "too many access rules (max %d)", MAX_RULES);
            rc = -1;
        } else {
            struct access_rule *r = &st->rules[st->nrules++];
            r->action = !strcmp(cmd, "allow") ? ACC_ALLOW : !strcmp(cmd, "deny") ? ACC_DENY : ACC_QUEUE_LOW;
            r->net = net;
            r->mask = mask;
        }
    } else {
        snprintf(err, errlen, "usage: ACCESS <cmd> <arg1> [<arg2>]");
        rc = -1;
    }
    pthread_mutex_unlock(&plug_lock);
    return rc;
}

/* ---- maxcontentlength ---- */

static enum pb_hook_result maxlen_start(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    (void)req;
    if (!svc->max_content_length || cl->h->body != HTTP_BODY_LENGTH) return PB_HOOK_CONTINUE;
    if (cl->h->body_remaining <= svc->max_content_length) return PB_HOOK_CONTINUE;
    cl->h->keep_alive = false;
    pb_client_error(cl, 413, "Content too long.");
    return PB_HOOK_HANDLED;
}

/* ---- redirect ---- */

static const char *redirect_lookup(struct plug_state *st, const char *key, char *out, size_t outlen)
{
    for (int i = 0; i < st->nredirects; i++)
        if (!strcmp(st->redirects[i].match, key)) {
            snprintf(out, outlen, "%s", st->redirects[i].target);
            return out;
        }
    return NULL;
}

static enum pb_hook_result redirect_start(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    struct plug_state *st = state_of(svc);
    if (!st) return PB_HOOK_CONTINUE;
    char host[160] = "", target[128];
    if (req->host_index >= 0) {
        const struct http_header *h = &req->headers[req->host_index];
        size_t n = h->value_len < sizeof host - 1 ? h->value_len : sizeof host - 1;
        for (size_t i = 0; i < n; i++) host[i] = (char)tolower((unsigned char)h->value[i]);
        host[n] = 0;
        char *colon = strrchr(host, ':');
        if (colon && !strchr(host, ']')) *colon = 0;
    }
    const char *found = NULL;
    pthread_mutex_lock(&plug_lock);
    if (host[0]) {
        found = redirect_lookup(st, host, target, sizeof target);
        /* "*.host", then drop one label at a time: "*.b.c", "*.c" */
        char wild[170];
        snprintf(wild, sizeof wild, "*.%s", host);
        char *w = wild;
        while (!found) {
            found = redirect_lookup(st, w, target, sizeof target);
            char *dot = strchr(w + 2, '.');
            if (found || !dot) break;
            w = dot - 1;
            *w = '*';
        }
    }
    if (!found) found = redirect_lookup(st, "*", target, sizeof target);
    pthread_mutex_unlock(&plug_lock);
    if (!found) return PB_HOOK_CONTINUE;
    char extra[512];
    snprintf(extra, sizeof extra, "Location: http://%s%s\r\n", target, cl->target ? cl->target : "/");
    bool keep = pb_client_can_persist(cl) && (cl->h->body == HTTP_BODY_NONE || cl->h->body_done);
    pb_client_response_head(cl, 301, NULL, 0, keep, extra);
    pb_client_done(cl, keep);
    return PB_HOOK_HANDLED;
}

static int redirect_command(const char *svcname, int argc, const char *const *argv,
                            void (*out)(void *, const char *), void *arg, char *err, size_t errlen)
{
    (void)out;
    (void)arg;
    if (argc != 4 || strcmp(argv[1], "host")) {
        snprintf(err, errlen, "usage: REDIRECT HOST <match_host> <target_host>");
        return -1;
    }
    if (!svcname) {
        snprintf(err, errlen, "No service name in context from CREATE SERVICE <name> or USE <service_name>");
        return -1;
    }
    struct pb_service *svc = pb_service_find(svcname);
    if (!svc) {
        snprintf(err, errlen, "Non-existent service '%s'", svcname);
        return -1;
    }
    struct plug_state *st = state_of(svc);
    if (!st || strlen(argv[2]) >= sizeof st->redirects[0].match || strlen(argv[3]) >= sizeof st->redirects[0].target) {
        snprintf(err, errlen, "host name too long");
        return -1;
    }
    int rc = 0;
    pthread_mutex_lock(&plug_lock);
    int i;
    for (i = 0; i < st->nredirects; i++)
        if (!strcmp(st->redirects[i].match, argv[2])) break;
    if (i == MAX_REDIRECTS) {
        snprintf(err, errlen, "too many redirects (max %d)", MAX_REDIRECTS);
        rc = -1;
    } else {
        snprintf(st->redirects[i].match, sizeof st->redirects[i].match, "%s", argv[2]);
        snprintf(st->redirects[i].target, sizeof st->redirects[i].target, "%s", argv[3]);
        if (i == st->nredirects) st->nredirects++;
    }
    pthread_mutex_unlock(&plug_lock);
    return rc;
}

/* ---- stats ---- */

static enum pb_hook_result stats_start(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    (void)req;
    (void)cl;
    struct plug_state *st = state_of(svc);
    if (st && svc->role == PB_ROLE_WEB_SERVER) atomic_fetch_add(&st->web_requests, 1);
    return PB_HOOK_CONTINUE;
}

static void stats_assigned(struct pb_service *svc, struct pb_client *cl, struct evbuffer *hdrs)
{
    (void)hdrs;
    struct plug_state *st = state_of(svc);
    if (!st) return;
    atomic_fetch_add(cl->prio == 0 ? &st->proxy_requests_highpri : &st->proxy_requests, 1);
    cl->plugin_t0_ms = pb_now_ms();
}

static void stats_response(struct pb_service *svc, struct pb_client *cl, int status)
{
    (void)status;
    struct plug_state *st = state_of(svc);
    if (!st || !cl->plugin_t0_ms) return;
    double secs = (double)(pb_now_ms() - cl->plugin_t0_ms) / 1000.0;
    cl->plugin_t0_ms = 0;
    pthread_mutex_lock(&plug_lock);
    snprintf(st->recent[st->recent_next], sizeof st->recent[0], "%-6.4f %.150s", secs, cl->target ? cl->target : "");
    st->recent_next = (st->recent_next + 1) % RECENT_MAX;
    if (st->recent_count < RECENT_MAX) st->recent_count++;
    pthread_mutex_unlock(&plug_lock);
}

static void stats_file(struct pb_service *svc, struct pb_client *cl, bool reproxied)
{
    (void)cl;
    struct plug_state *st = state_of(svc);
    if (!st) return;
    atomic_fetch_add(&st->files_sent, 1);
    if (reproxied) atomic_fetch_add(&st->files_reproxied, 1);
}

static bool service_uses(struct pb_service *s, const char *plugin)
{
    for (int i = 0; i < s->nplugins; i++)
        if (!strcmp(s->plugins[i], plugin)) return true;
    return false;
}

static int stats_command(const char *svcname, int argc, const char *const *argv,
                         void (*out)(void *, const char *), void *arg, char *err, size_t errlen)
{
    (void)svcname;
    (void)err;
    (void)errlen;
    char line[256];
    if (!strcmp(argv[0], "recent")) {
        for (struct pb_service *s = pb_services; s; s = s->next) {
            if (!service_uses(s, "stats") || !s->plugin_state) continue;
            struct plug_state *st = s->plugin_state;
            pthread_mutex_lock(&plug_lock);
            for (int i = 0; i < st->recent_count; i++) {
                int idx = (st->recent_next - st->recent_count + i + RECENT_MAX) % RECENT_MAX;
                snprintf(line, sizeof line, "%s %s", s->name, st->recent[idx]);
                out(arg, line);
            }
            pthread_mutex_unlock(&plug_lock);
        }
        out(arg, ".");
        return 0;
    }
    (void)argc;
    static const char *const keys[] = { "files_reproxied", "files_sent", "proxy_requests", "proxy_requests_highpri",
                                        "web_requests" };
    uint64_t total[5] = { 0 };
    for (struct pb_service *s = pb_services; s; s = s->next) {
        if (!service_uses(s, "stats")) continue;
        struct plug_state *st = state_of(s);
        if (!st) continue;
        uint64_t v[5] = { atomic_load(&st->files_reproxied), atomic_load(&st->files_sent),
                          atomic_load(&st->proxy_requests), atomic_load(&st->proxy_requests_highpri),
                          atomic_load(&st->web_requests) };
        for (int k = 0; k < 5; k++) {
            snprintf(line, sizeof line, "%-15s %-25s %12llu", s->name, keys[k], (unsigned long long)v[k]);
            out(arg, line);
            total[k] += v[k];
        }
    }
    for (int k = 0; k < 5; k++) {
        snprintf(line, sizeof line, "%-15s %-25s %12llu", "total", keys[k], (unsigned long long)total[k]);
        out(arg, line);
    }
    out(arg, ".");
    return 0;
}

/* ---- queues ---- */

static void queues_assigned(struct pb_service *svc, struct pb_client *cl, struct evbuffer *hdrs)
{
    struct pb_svc_loop *l = &svc->loops[cl->loop_index];
    int64_t now = pb_now_ms();
    evbuffer_add_printf(hdrs, "X-Queue-Count: %d\r\nX-Queue-Age: %lld\r\nX-HP-Queue-Count: %d\r\nX-HP-Queue-Age: %lld\r\n",
                        l->pool.qlen[1], (long long)(pool_queue_age_ms(&l->pool, 1, now) / 1000), l->pool.qlen[0],
                        (long long)(pool_queue_age_ms(&l->pool, 0, now) / 1000));
}

/* ---- autoremoveleadingdir ---- */

static void autoremove_path(struct pb_service *svc, char *path, size_t cap)
{
    (void)cap;
    const char *d = svc->docroot;
    if (!d) return;
    size_t dl = strlen(d);
    while (dl > 0 && d[dl - 1] == '/') dl--;
    size_t b = dl;
    while (b > 0 && d[b - 1] != '/') b--;
    size_t tl = dl - b;
    if (tl == 0) return;
    for (size_t i = b; i < dl; i++)
        if (!isalnum((unsigned char)d[i]) && d[i] != '_' && d[i] != '-') return;
    /* "/tail" or "/tail/..." loses "/tail" (a whole path segment only) */
    if (path[0] == '/' && !strncmp(path + 1, d + b, tl) && (path[1 + tl] == '/' || path[1 + tl] == 0)) {
        if (path[1 + tl] == 0) {
            path[0] = '/';
            path[1] = 0;
        } else {
            memmove(path, path + 1 + tl, strlen(path + 1 + tl) + 1);
        }
    }
}

/* ---- notmodified ---- */

static enum pb_hook_result notmod_start(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    struct plug_state *st = state_of(svc);
    if (!st || !st->has_host_re || req->host_index < 0 || http_find_header(req, "if-modified-since") < 0)
        return PB_HOOK_CONTINUE;
    const struct http_header *h = &req->headers[req->host_index];
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(h->value_len < 255 ? h->value_len : 255), h->value);
    pthread_mutex_lock(&plug_lock);
    bool match = st->has_host_re && regexec(&st->host_re, host, 0, NULL, 0) == 0;
    pthread_mutex_unlock(&plug_lock);
    if (!match) return PB_HOOK_CONTINUE;
    bool keep = pb_client_can_persist(cl) && (cl->h->body == HTTP_BODY_NONE || cl->h->body_done);
    pb_client_response_head(cl, 304, NULL, -1, keep, NULL);
    pb_client_done(cl, keep);
    return PB_HOOK_HANDLED;
}

static int notmod_set(struct pb_service *svc, const char *key, const char *val, char *err, size_t errlen)
{
    if (strcmp(key, "host_pattern")) {
        snprintf(err, errlen, "Unknown NotModified parameter '%s'", key);
        return -1;
    }
    struct plug_state *st = state_of(svc);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    regex_t re;
    int r = *val ? regcomp(&re, val, REG_EXTENDED | REG_NOSUB) : 0;
    if (r) {
        regerror(r, &re, err, errlen);
        return -1;
    }
    pthread_mutex_lock(&plug_lock);
    if (st->has_host_re) regfree(&st->host_re);
    st->has_host_re = *val != 0;
    if (*val) st->host_re = re;
    pthread_mutex_unlock(&plug_lock);
    return 0;
}

/* ---- throttle ----
 * As Perlbal's Throttle plugin with its in-memory store: per client IP, a
 * request within throttle_threshold_seconds of the previous one is held
 * initial_delay * 2^violations seconds (at most max_delay); ban_threshold
 * violations ban the IP for ban_expiration seconds (403 / close); more than
 * max_concurrent requests in flight from one IP get 403; whitelist_file IPs
 * pass, blacklist_file IPs are denied (or throttled); path_regex and
 * method_regex (POSIX ERE) limit which requests count. The per-IP table is
 * direct-mapped (THR_SLOTS per service): an IP colliding with another takes
 * its slot, which errs on the lenient side. memcached sharing is not built. */
#define THR_SLOTS 4096
#define THR_LIST_MAX 256

struct thr_slot {
    uint32_t ip;                   /* network order; 0 = empty */
    int64_t last_ms;               /* last request start */
    int64_t expires_ms;            /* the record is forgotten after this */
    int violations;
    int concurrent;
    int64_t banned_until_ms;
};

struct thr_net {
    uint32_t net, mask;
};

struct thr_state {
    pthread_mutex_t lock;
    struct thr_slot slots[THR_SLOTS];
    struct thr_net white[THR_LIST_MAX], black[THR_LIST_MAX];
    int nwhite, nblack;
    regex_t path_re, method_re;
    bool has_path_re, has_method_re;
    /* tunables */
    bool default_throttle, blacklist_deny, log_only;
    int threshold_s, initial_delay_s, max_delay_s, max_concurrent, ban_threshold, ban_expiration_s;
};

static struct thr_state *thr_of(struct pb_service *svc)
{
    struct plug_state *st = state_of(svc);
    if (!st) return NULL;
    if (!st->throttle) {
        pthread_mutex_lock(&plug_lock);
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
        pthread_mutex_unlock(&plug_lock);
    }
    return st->throttle;
}

static bool in_list(const struct thr_net *l, int n, uint32_t ip)
{
    for (int i = 0; i < n; i++)
        if ((ip & l[i].mask) == l[i].net) return true;
    return false;
}

static int load_cidrs(const char *file, struct thr_net *out, int *n, char *err, size_t errlen)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open %s", file);
        return -1;
    }
    char line[256];
    int k = 0;
    while (fgets(line, sizeof line, f) && k < THR_LIST_MAX) {
        char *h = strchr(line, '#');
        if (h) *h = 0;
        char *s = line;
        while (isspace((unsigned char)*s)) s++;
        char *e = s;
        while (*e && !isspace((unsigned char)*e)) e++;
        *e = 0;
        if (!*s) continue;
        if (parse_net(strchr(s, '/') ? "netmask" : "ip", s, &out[k].net, &out[k].mask) == 0) k++;
    }
    fclose(f);
    if (!k) {
        snprintf(err, errlen, "%s contains no recognizable CIDRs", file);
        return -1;
    }
    *n = k;
    return 0;
}

static const char *const thr_tunables[] = {
    "whitelist_file", "blacklist_file", "default_action", "blacklist_action", "path_regex", "method_regex",
    "log_events", "log_only", "throttle_threshold_seconds", "initial_delay", "max_delay", "max_concurrent",
    "ban_threshold", "ban_expiration", "memcached_servers", "memcached_async_clients", "instance_name", NULL,
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
        if (!*val || !strcmp(val, "none")) {
            *(white ? &t->nwhite : &t->nblack) = 0;
        } else {
            rc = load_cidrs(val, white ? t->white : t->black, white ? &t->nwhite : &t->nblack, err, errlen);
        }
    } else if (!strcmp(key, "default_action")) {
        if (strcmp(val, "allow") && strcmp(val, "throttle")) rc = -1;
        else t->default_throttle = !strcmp(val, "throttle");
    } else if (!strcmp(key, "blacklist_action")) {
        if (strcmp(val, "deny") && strcmp(val, "throttle")) rc = -1;
        else t->blacklist_deny = !strcmp(val, "deny");
    } else if (!strcmp(key, "path_regex") || !strcmp(key, "method_regex")) {
        bool path = key[0] == 'p';
        regex_t *re = path ? &t->path_re : &t->method_re;
        bool *has = path ? &t->has_path_re : &t->has_method_re;
        regex_t nre;
        int r = *val ? regcomp(&nre, val, REG_EXTENDED | REG_NOSUB) : 0;
        if (r) {
            regerror(r, &nre, err, errlen);
            rc = -1;
        } else {
            if (*has) regfree(re);
            *has = *val != 0;
            if (*val) *re = nre;
        }
    } else if (!strcmp(key, "log_only")) {
        t->log_only = !strcmp(val, "1") || !strcasecmp(val, "on") || !strcasecmp(val, "true") ||
                      !strcasecmp(val, "yes");
    } else if (!strcmp(key, "log_events") || !strcmp(key, "instance_name") || !strcmp(key, "memcached_servers") ||
               !strcmp(key, "memcached_async_clients")) {
        if (!strcmp(key, "memcached_servers") && *val)
            log_warn("perlbal: Throttle memcached_servers is not built: the state stays in this process");
    } else if (!is_int) {
        snprintf(err, errlen, "Expected integer value for '%s'", key);
        rc = -2;
    } else if (!strcmp(key, "throttle_threshold_seconds")) t->threshold_s = (int)n;
    else if (!strcmp(key, "initial_delay")) t->initial_delay_s = (int)n;
    else if (!strcmp(key, "max_delay")) t->max_delay_s = (int)n;
    else if (!strcmp(key, "max_concurrent")) t->max_concurrent = (int)n;
    else if (!strcmp(key, "ban_threshold")) t->ban_threshold = (int)n;
    else if (!strcmp(key, "ban_expiration")) t->ban_expiration_s = (int)n;
    pthread_mutex_unlock(&t->lock);
    if (rc == -1 && !err[0]) snprintf(err, errlen, "Invalid value for '%s'", key);
    return rc < 0 ? -1 : 0;
}

static struct thr_slot *thr_slot(struct thr_state *t, uint32_t ip)
{
    uint32_t h = ip * 2654435761u;
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

static int64_t thr_start(struct pb_service *svc, struct pb_client *cl)
{
    struct thr_state *t = thr_of(svc);
    bool v4;
    uint32_t ip = client_ipv4(cl, &v4);
    if (!t || !v4) return 0;
    int64_t now = pb_now_ms(), delay = 0;
    enum { ALLOW, THROTTLE, DENY, BAN } result;
    pthread_mutex_lock(&t->lock);
    struct thr_slot *s = thr_slot(t, ip);
    if (s->ip != ip || (s->expires_ms <= now && s->concurrent == 0 && s->banned_until_ms <= now)) {
        memset(s, 0, sizeof *s);
        s->ip = ip;
    }
    s->concurrent++;
    cl->throttle_counted = true;
    if (in_list(t->white, t->nwhite, ip)) result = ALLOW;
    else if (s->banned_until_ms > now) result = DENY;
    else if (in_list(t->black, t->nblack, ip)) result = t->blacklist_deny ? DENY : THROTTLE;
    else if (s->concurrent > t->max_concurrent) result = DENY;
    else if (t->has_path_re && (!cl->target || regexec(&t->path_re, cl->target, 0, NULL, 0))) result = ALLOW;
    else if (t->has_method_re && regexec(&t->method_re, method_name(cl->h->method), 0, NULL, 0)) result = ALLOW;
    else result = t->default_throttle ? THROTTLE : ALLOW;
    if (result == THROTTLE) {
        bool seen = s->last_ms && s->expires_ms > now;
        if (!seen || now - s->last_ms >= (int64_t)t->threshold_s * 1000) {
            s->violations = 0;
            s->expires_ms = now + (int64_t)t->threshold_s * 1000;
        } else {
            int64_t d = (int64_t)t->initial_delay_s * 1000;
            for (int i = 0; i < s->violations && d < (int64_t)t->max_delay_s * 1000; i++) d *= 2;
            if (d > (int64_t)t->max_delay_s * 1000) d = (int64_t)t->max_delay_s * 1000;
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
    char ipbuf[INET_ADDRSTRLEN];
    if (result == BAN) log_info("perlbal: Throttle: banning %s", inet_ntop(AF_INET, &ip, ipbuf, sizeof ipbuf));
    if (log_only) return 0;
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
    if (!cl->throttle_counted) return;
    cl->throttle_counted = false;
    struct thr_state *t = thr_of(svc);
    bool v4;
    uint32_t ip = client_ipv4(cl, &v4);
    if (!t || !v4) return;
    pthread_mutex_lock(&t->lock);
    struct thr_slot *s = thr_slot(t, ip);
    if (s->ip == ip && s->concurrent > 0) s->concurrent--;
    pthread_mutex_unlock(&t->lock);
}

/* ---- echoservice ----
 *
 * Each line (LF, optional CR before it) comes back followed by CRLF, at once
 * or echo_delay seconds later on a timer, while later lines keep being read.
 * A line over ECHO_MAX_LINE closes the connection. Delayed echoes held in
 * memory are bounded: over ECHO_MAX_PENDING bytes reading pauses until
 * timers have fired. Pending echoes mark the conn busy, so a graceful stop
 * sends them before closing, and after the client half-closes the core keeps
 * the conn until they are out.
 * As in Perl Perlbal there is no idle timeout (SERVER max_connections bounds
 * the connections; over it a new one is closed at once). */

#define ECHO_MAX_LINE (16 * 1024)
#define ECHO_MAX_PENDING (256 * 1024)

struct echo_line {                  /* one delayed echo */
    struct echo_line *next;
    int64_t due_ms;                 /* pb_now_ms() when it goes out */
    size_t len;
    char data[];                    /* the line and its CRLF */
};

/* Delayed lines wait in arrival order on one timer armed for the oldest:
 * libevent does not keep equal deadlines in order, and echoes must be. */
struct echo_conn {
    struct core_conn *c;
    struct pb_service *svc;
    struct event *timer;            /* created on the first delayed line */
    struct echo_line *head, *tail;
    size_t pending_bytes;
    bool paused;                    /* reading stopped: too much pending */
};

static const char *const echo_tunables[] = { "echo_delay", NULL };

static int echo_set(struct pb_service *svc, const char *key, const char *val, char *err, size_t errlen)
{
    if (strcmp(key, "echo_delay")) {
        snprintf(err, errlen, "Unknown parameter '%s'", key);
        return -1;
    }
    if (svc->role != PB_ROLE_ECHO) {
        snprintf(err, errlen, "The 'echo_delay' option can only be set on a 'echo' service");
        return -1;
    }
    char *end;
    long n = strtol(val, &end, 10);
    if (!isdigit((unsigned char)*val) || *end || n > INT_MAX) {
        snprintf(err, errlen, "Expecting integer value for parameter 'echo_delay'");
        return -1;
    }
    svc->echo_delay = (int)n;
    return 0;
}

static void echo_arm(struct echo_conn *ec, int64_t now)
{
    int64_t ms = ec->head->due_ms - now;
    if (ms < 1) ms = 1;
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
    evtimer_add(ec->timer, &tv);
}

static void echo_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct echo_conn *ec = arg;
    struct core_conn *c = ec->c;
    int64_t now = pb_now_ms();
    while (ec->head && ec->head->due_ms <= now) {
        struct echo_line *l = ec->head;
        evbuffer_add(conn_out(c), l->data, l->len);
        ec->head = l->next;
        ec->pending_bytes -= l->len;
        free(l);
    }
    if (!ec->head) ec->tail = NULL;
    else echo_arm(ec, now);
    bool more = ec->head != NULL;
    if (ec->paused && ec->pending_bytes <= ECHO_MAX_PENDING / 2) {
        ec->paused = false;
        conn_resume_read(c);
        if (evbuffer_get_length(conn_in(c))) {
            /* input is buffered, so clearing busy cannot free c here */
            conn_set_busy(c, more);
            conn_kick(c); /* may free c */
            return;
        }
    }
    if (!more) conn_set_busy(c, false); /* may free c (graceful stop) */
}

static int echo_on_read(struct core_conn *c)
{
    struct echo_conn *ec = c->data;
    struct evbuffer *in = conn_in(c);
    int delay = ec->svc->echo_delay;
    for (;;) {
        if (ec->pending_bytes > ECHO_MAX_PENDING) {
            ec->paused = true;
            conn_pause_read(c);
            return 0;
        }
        size_t ll, consumed;
        enum line_status st;
        char *line = line_peek(in, ECHO_MAX_LINE, &ll, &consumed, &st);
        if (st == LINE_NEED_MORE) return 0;
        if (st == LINE_TOO_LONG) return -1;
        if (delay <= 0) {
            evbuffer_add(conn_out(c), line, ll);
            evbuffer_add(conn_out(c), "\r\n", 2);
            evbuffer_drain(in, consumed);
            continue;
        }
        if (!ec->timer && !(ec->timer = evtimer_new(c->loop->base, echo_fire, ec))) return -1;
        struct echo_line *l = malloc(sizeof *l + ll + 2);
        if (!l) return -1;
        memcpy(l->data, line, ll);
        memcpy(l->data + ll, "\r\n", 2);
        l->len = ll + 2;
        l->next = NULL;
        int64_t now = pb_now_ms();
        l->due_ms = now + (int64_t)delay * 1000;
        evbuffer_drain(in, consumed);
        ec->pending_bytes += l->len;
        if (ec->tail) {
            ec->tail->next = l;
        } else {
            ec->head = l;
            echo_arm(ec, now);
        }
        ec->tail = l;
        conn_set_busy(c, true);
    }
}

static void echo_on_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    struct echo_conn *ec = c->data;
    while (ec->head) {
        struct echo_line *l = ec->head;
        ec->head = l->next;
        free(l);
    }
    if (ec->timer) event_free(ec->timer);
    free(ec);
}

static const struct conn_ops echo_ops = {
    .name = "pb_echo",
    .on_read = echo_on_read,
    .on_close = echo_on_close,
};

void pb_echo_accept(struct pb_service *svc, struct core_loop *loop, int fd, const struct sockaddr *sa,
                    socklen_t salen)
{
    struct echo_conn *ec = calloc(1, sizeof *ec);
    if (!ec) {
        close(fd);
        return;
    }
    ec->svc = svc;
    if (svc->enable_ssl && svc->tls_ctx) {
        struct bufferevent *bev = tls_accept_bev(svc->tls_ctx, loop->base, fd);
        ec->c = bev ? conn_new_bev(loop, bev, sa, salen, &echo_ops, ec) : NULL;
        if (!bev) close(fd);
    } else {
        ec->c = conn_new(loop, fd, sa, salen, &echo_ops, ec);
    }
    if (!ec->c) {
        free(ec);
        return;
    }
    conn_set_output_limit(ec->c, svc->buffer_size ? svc->buffer_size : 256 * 1024);
}

/* ---- registry ---- */

static const char *const access_cmds[] = { "access", NULL };
static const char *const redirect_cmds[] = { "redirect", NULL };
static const char *const stats_cmds[] = { "stats", "recent", NULL };

static const struct pb_plugin plugins[] = {
    { .name = "vhosts" },
    { .name = "accesscontrol", .start_request = access_start, .commands = access_cmds, .command = access_command },
    { .name = "maxcontentlength", .start_request = maxlen_start },
    { .name = "redirect", .start_request = redirect_start, .commands = redirect_cmds, .command = redirect_command },
    { .name = "stats", .start_request = stats_start, .backend_assigned = stats_assigned,
      .response_head = stats_response, .file_sent = stats_file, .commands = stats_cmds, .command = stats_command },
    { .name = "queues", .backend_assigned = queues_assigned },
    { .name = "autoremoveleadingdir", .serve_path = autoremove_path },
    { .name = "notmodified", .start_request = notmod_start, .set_param = notmod_set },
    { .name = "throttle", .set_param = thr_set, .tunables = thr_tunables, .proxy_start = thr_start,
      .proxy_end = thr_end },
    { .name = "echoservice", .set_param = echo_set, .tunables = echo_tunables },
};
#define NPLUGINS (sizeof plugins / sizeof plugins[0])
static _Atomic bool loaded[NPLUGINS];

/* The service's plugin list is set by SET plugins (resolved to pointers there). */
#define FOR_PLUGINS(svc, p)                                                                                      \
    for (int i_ = 0; i_ < (svc)->nplugins; i_++)                                                                 \
        for (const struct pb_plugin *p = (svc)->plugin_ptr[i_]; p; p = NULL)


const struct pb_plugin *pb_plugin_find(const char *name)
{
    for (size_t i = 0; i < NPLUGINS; i++)
        if (!strcasecmp(plugins[i].name, name)) return &plugins[i];
    return NULL;
}

int pb_plugin_load(const char *name)
{
    const struct pb_plugin *p = pb_plugin_find(name);
    if (!p) return -1;
    loaded[p - plugins] = true;
    return 0;
}

bool pb_plugin_loaded(const char *name)
{
    const struct pb_plugin *p = pb_plugin_find(name);
    return p && loaded[p - plugins];
}

const struct pb_plugin *pb_plugin_for_command(const char *word)
{
    for (size_t i = 0; i < NPLUGINS; i++) {
        if (!loaded[i] || !plugins[i].commands) continue;
        for (const char *const *c = plugins[i].commands; *c; c++)
            if (!strcmp(*c, word)) return &plugins[i];
    }
    return NULL;
}

int pb_plugin_set_tunable(struct pb_service *svc, const char *key, const char *val, int *rc, char *err,
                          size_t errlen)
{
    for (size_t i = 0; i < NPLUGINS; i++) {
        if (!loaded[i] || !plugins[i].tunables) continue;
        for (const char *const *t = plugins[i].tunables; *t; t++)
            if (!strcasecmp(*t, key)) {
                *rc = plugins[i].set_param(svc, *t, val, err, errlen);
                return 1;
            }
    }
    return 0;
}

int64_t pb_plugins_proxy_start(struct pb_service *svc, struct pb_client *cl)
{
    int64_t delay = 0;
    FOR_PLUGINS(svc, p)
        if (p->proxy_start) {
            int64_t d = p->proxy_start(svc, cl);
            if (d < 0) return -1;
            if (d > delay) delay = d;
        }
    return delay;
}

void pb_plugins_proxy_end(struct pb_service *svc, struct pb_client *cl)
{
    FOR_PLUGINS(svc, p)
        if (p->proxy_end) p->proxy_end(svc, cl);
}

int pb_plugin_set_param(struct pb_service *svc, const char *dotted_key, const char *val, int *rc, char *err,
                        size_t errlen)
{
    const char *dot = strchr(dotted_key, '.');
    if (!dot) return 0;
    char name[32];
    snprintf(name, sizeof name, "%.*s", (int)(dot - dotted_key < 31 ? dot - dotted_key : 31), dotted_key);
    const struct pb_plugin *p = pb_plugin_find(name);
    if (!p || !p->set_param) return 0;
    *rc = p->set_param(svc, dot + 1, val, err, errlen);
    return 1;
}

const char *const *pb_plugin_names(void)
{
    static const char *names[NPLUGINS + 1];
    for (size_t i = 0; i < NPLUGINS; i++) names[i] = plugins[i].name;
    return names;
}

enum pb_hook_result pb_plugins_start_request(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    FOR_PLUGINS(svc, p)
        if (p->start_request && p->start_request(svc, cl, req) == PB_HOOK_HANDLED) return PB_HOOK_HANDLED;
    return PB_HOOK_CONTINUE;
}

void pb_plugins_serve_path(struct pb_service *svc, char *path, size_t cap)
{
    FOR_PLUGINS(svc, p)
        if (p->serve_path) p->serve_path(svc, path, cap);
}

void pb_plugins_backend_assigned(struct pb_service *svc, struct pb_client *cl, struct evbuffer *hdrs)
{
    FOR_PLUGINS(svc, p)
        if (p->backend_assigned) p->backend_assigned(svc, cl, hdrs);
}

void pb_plugins_response_head(struct pb_service *svc, struct pb_client *cl, int status)
{
    FOR_PLUGINS(svc, p)
        if (p->response_head) p->response_head(svc, cl, status);
}

void pb_plugins_file_sent(struct pb_service *svc, struct pb_client *cl, bool reproxied)
{
    FOR_PLUGINS(svc, p)
        if (p->file_sent) p->file_sent(svc, cl, reproxied);
}
