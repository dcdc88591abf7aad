/* pb_service: the registry of services and pools, their parameters (one
 * table, Perlbal's names and types), and the services' listening sockets.
 *
 * Listeners are opened and closed at run time (ENABLE / DISABLE from the
 * console) through common/listen: one socket per loop (SO_REUSEPORT among
 * our own loops only; a port another process holds is refused). */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "common/config.h"
#include "common/conn.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/tls.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"

pthread_mutex_t pb_lock = PTHREAD_MUTEX_INITIALIZER;
struct pb_service *pb_services;
struct pb_pool *pb_pools;
double pb_start_time;
_Atomic uint64_t pb_total_requests;

int64_t pb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *pb_role_name(enum pb_role r)
{
    switch (r) {
    case PB_ROLE_REVERSE_PROXY: return "reverse_proxy";
    case PB_ROLE_WEB_SERVER: return "web_server";
    case PB_ROLE_MANAGEMENT: return "management";
    case PB_ROLE_SELECTOR: return "selector";
    case PB_ROLE_ECHO: return "echo";
    case PB_ROLE_UPLOAD_TRACKER: return "upload_tracker";
    default: return "";
    }
}

/* ---- parameter table ---- */

enum ptype { P_BOOL, P_INT, P_SIZE, P_STR, P_SPECIAL, P_IGNORED };
#define R_ALL 0
#define R_PROXY (1u << PB_ROLE_REVERSE_PROXY)
#define R_WEB (1u << PB_ROLE_WEB_SERVER)

struct param {
    const char *name;
    enum ptype type;
    size_t off;
    unsigned roles;
    const char *def;
};

#define F(x) offsetof(struct pb_service, x)
static const struct param params[] = {
    { "role", P_SPECIAL, 0, R_ALL, NULL },
    { "listen", P_SPECIAL, 0, R_ALL, NULL },
    { "pool", P_SPECIAL, 0, R_PROXY, NULL },
    { "plugins", P_SPECIAL, 0, R_ALL, NULL },
    { "persist_client_timeout", P_SPECIAL, 0, R_ALL, NULL },
    { "trusted_upstream_proxies", P_SPECIAL, 0, R_ALL, NULL },
    { "always_trusted", P_BOOL, F(always_trusted), R_ALL, "0" },
    { "client_sndbuf_size", P_SIZE, F(client_sndbuf_size), R_ALL, "0" },
    { "enable_ssl", P_BOOL, F(enable_ssl), R_ALL, "0" },
    { "idle_timeout", P_INT, F(idle_timeout), R_ALL, "30" },
    { "max_chunked_request_size", P_SIZE, F(max_chunked_request_size), R_ALL, "209715200" },
    { "persist_client", P_BOOL, F(persist_client), R_ALL, "0" },
    { "persist_client_idle_timeout", P_INT, F(persist_client_idle_timeout), R_ALL, "30" },
    { "server_tokens", P_BOOL, F(server_tokens), R_ALL, "1" },
    { "ssl_ca_path", P_STR, F(ssl_ca_path), R_ALL, NULL },
    { "ssl_cert_file", P_STR, F(ssl_cert_file), R_ALL, "certs/server-cert.pem" },
    { "ssl_cipher_list", P_STR, F(ssl_cipher_list), R_ALL, "ALL:!LOW:!EXP" },
    { "ssl_key_file", P_STR, F(ssl_key_file), R_ALL, "certs/server-key.pem" },
    { "ssl_verify_mode", P_INT, F(ssl_verify_mode), R_ALL, "0" },
    { "backend_persist_cache", P_INT, F(backend_persist_cache), R_PROXY, "2" },
    { "blind_proxy", P_BOOL, F(blind_proxy), R_PROXY, "0" },
    { "buffer_backend_connect", P_SIZE, F(buffer_backend_connect), R_PROXY, "100k" },
    { "buffer_size", P_SIZE, F(buffer_size), R_ALL, "256k" },
    { "buffer_size_reproxy_url", P_SIZE, F(buffer_size_reproxy_url), R_PROXY, "50k" },
    { "buffer_upload_threshold_rate", P_INT, F(buffer_upload_threshold_rate), R_PROXY, "0" },
    { "buffer_upload_threshold_size", P_SIZE, F(buffer_upload_threshold_size), R_PROXY, "250k" },
    { "buffer_upload_threshold_time", P_INT, F(buffer_upload_threshold_time), R_PROXY, "5" },
    { "buffer_uploads", P_BOOL, F(buffer_uploads), R_PROXY, "0" },
    { "buffer_uploads_path", P_STR, F(buffer_uploads_path), R_PROXY, NULL },
    { "connect_ahead", P_INT, F(connect_ahead), R_PROXY, "0" },
    { "enable_error_retries", P_BOOL, F(enable_error_retries), R_PROXY, "0" },
    { "enable_reproxy", P_BOOL, F(enable_reproxy), R_PROXY, "0" },
    { "error_retry_schedule", P_STR, F(error_retry_schedule), R_PROXY, "0,.25,.50,1,1,1,1,1" },
    { "high_priority_cookie", P_STR, F(high_priority_cookie), R_PROXY, NULL },
    { "high_priority_cookie_contents", P_STR, F(high_priority_cookie_contents), R_PROXY, NULL },
    { "max_backend_uses", P_INT, F(max_backend_uses), R_PROXY, "0" },
    { "persist_backend", P_BOOL, F(persist_backend), R_PROXY, "0" },
    { "queue_relief_chance", P_IGNORED, 0, R_PROXY, NULL },
    { "queue_relief_size", P_IGNORED, 0, R_PROXY, NULL },
    { "reproxy_cache_maxsize", P_INT, F(reproxy_cache_maxsize), R_PROXY, "0" },
    { "server_process", P_STR, F(server_process), R_PROXY, NULL },
    { "default_service", P_STR, F(default_service), R_ALL, NULL },
    { "upload_status_listeners", P_SPECIAL, 0, R_PROXY, NULL },
    { "verify_backend", P_BOOL, F(verify_backend), R_PROXY, "0" },
    { "verify_backend_path", P_STR, F(verify_backend_path), R_PROXY, "*" },
    { "dirindexing", P_BOOL, F(dirindexing), R_WEB, "0" },
    { "docroot", P_STR, F(docroot), R_WEB, NULL },
    { "enable_atomic_put", P_BOOL, F(enable_atomic_put), R_WEB, "0" },
    { "enable_concatenate_get", P_BOOL, F(enable_concatenate_get), R_WEB, "0" },
    { "enable_delete", P_BOOL, F(enable_delete), R_WEB, "0" },
    { "enable_md5", P_BOOL, F(enable_md5), R_WEB, "1" },
    { "enable_put", P_BOOL, F(enable_put), R_WEB, "0" },
    { "index_files", P_STR, F(index_files), R_WEB, "index.html" },
    { "max_content_length", P_SIZE, F(max_content_length), R_ALL, "0" },
    { "max_put_size", P_SIZE, F(max_put_size), R_WEB, "0" },
    { "min_put_directory", P_INT, F(min_put_directory), R_WEB, "0" },
};
#undef F
#define NPARAMS (sizeof params / sizeof params[0])

/* DEFAULT param = value, applied to services created afterwards */
static struct {
    char *key, *val;
} defaults[64];
static int ndefaults;

static const struct param *param_find(const char *key)
{
    for (size_t i = 0; i < NPARAMS; i++)
        if (!strcasecmp(params[i].name, key))
            return &params[i];
    return NULL;
}

static int parse_size(const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (end == v || errno)
        return -1;
    switch (tolower((unsigned char)*end)) {
    case 0: break;
    case 'b': end++; break;
    case 'k':
        n *= 1024;
        end++;
        break;
    case 'm':
        n *= 1024 * 1024;
        end++;
        break;
    case 'g':
        n *= 1024ULL * 1024 * 1024;
        end++;
        break;
    default: return -1;
    }
    if (*end)
        return -1;
    *out = n;
    return 0;
}

static int parse_bool(const char *v, bool *out)
{
    if (!strcasecmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"))
        *out = true;
    else if (!strcasecmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off"))
        *out = false;
    else
        return -1;
    return 0;
}

static int err_out(char *err, size_t errlen, const char *fmt, const char *a)
{
    snprintf(err, errlen, fmt, a);
    return -1;
}

int pb_net_parse(const char *str, struct pb_net *out)
{
    char buf[64];
    if (snprintf(buf, sizeof buf, "%s", str) >= (int)sizeof buf)
        return -1;
    char *slash = strchr(buf, '/');
    int bits = -1;
    if (slash) {
        *slash = 0;
        char *end;
        long v = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end)
            return -1;
        bits = (int)v;
    }
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        if (bits < 0)
            bits = 32;
        if (bits > 32)
            return -1;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        if (bits < 0)
            bits = 128;
        if (bits > 128)
            return -1;
    } else {
        return -1;
    }
    out->bits = bits;
    for (int i = 0; i < 16; i++) { /* mask the host part */
        int keep = bits - i * 8;
        out->addr[i] &= keep >= 8 ? 0xff : keep <= 0 ? 0 : (uint8_t)(0xff << (8 - keep));
    }
    return 0;
}

bool pb_net_match(const struct pb_net *n, const struct sockaddr_storage *peer)
{
    const uint8_t *a;
    int fam = peer->ss_family;
    if (fam == AF_INET) {
        a = (const uint8_t *)&((const struct sockaddr_in *)peer)->sin_addr;
    } else if (fam == AF_INET6) {
        a = ((const struct sockaddr_in6 *)peer)->sin6_addr.s6_addr;
        if (n->family == AF_INET && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a)) {
            a += 12;
            fam = AF_INET;
        }
    } else {
        return false;
    }
    if (fam != n->family)
        return false;
    for (int i = 0; i < 16 && i * 8 < n->bits; i++) {
        int keep = n->bits - i * 8;
        uint8_t m = keep >= 8 ? 0xff : (uint8_t)(0xff << (8 - keep));
        if ((a[i] & m) != n->addr[i])
            return false;
    }
    return true;
}

static int parse_trusted(struct pb_service *s, const char *v, char *err, size_t errlen)
{
    int n = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", v);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (n >= 16)
            return err_out(err, errlen, "too many networks in '%s'", v);
        if (pb_net_parse(tok, &s->trusted[n]) < 0)
            return err_out(err, errlen, "bad network in '%s'", v);
        n++;
    }
    s->ntrusted = n;
    return 0;
}

bool pb_service_trusted(const struct pb_service *s, const struct sockaddr_storage *peer)
{
    if (s->always_trusted)
        return true;
    for (int i = 0; i < s->ntrusted; i++)
        if (pb_net_match(&s->trusted[i], peer))
            return true;
    return false;
}

/* Retired allocations: an old parameter string or a removed node may still
 * be read by a request on another loop, so it is never freed while the
 * daemon runs; it is kept here (reachable, counted) instead. Live changes
 * are rare, so this stays small. */
struct retired {
    void *p;
    struct retired *next;
};
static struct retired *graveyard;
static pthread_mutex_t graveyard_lock = PTHREAD_MUTEX_INITIALIZER;

void pb_retire(void *p)
{
    if (!p)
        return;
    struct retired *r = malloc(sizeof *r);
    if (!r)
        return; /* not reachable any more: a leak, not a crash */
    r->p = p;
    pthread_mutex_lock(&graveyard_lock);
    r->next = graveyard;
    graveyard = r;
    pthread_mutex_unlock(&graveyard_lock);
}

static void set_str(char **slot, const char *v)
{
    pb_retire(*slot);
    *slot = v ? strdup(v) : NULL;
}

static int service_set_inner(struct pb_service *s, const char *key, const char *val, char *err, size_t errlen)
{
    if (strchr(key, '.')) {
        /* plugin parameters (SET demo.notmodified.host_pattern = ...) */
        int rc;
        if (pb_plugin_set_param(s, key, val, &rc, err, errlen))
            return rc;
        log_warn("perlbal: plugin parameter '%s' accepted but not used", key);
        return 0;
    }
    const struct param *p = param_find(key);
    if (!p) {
        int rc; /* a tunable a loaded plugin added (Throttle's) */
        if (pb_plugin_set_tunable(s, key, val, &rc, err, errlen))
            return rc;
        return err_out(err, errlen, "Unknown parameter '%s'", key);
    }
    if (p->roles && s->role != PB_ROLE_NONE && !(p->roles & (1u << s->role))) {
        snprintf(err, errlen, "Parameter '%s' not valid for role '%s'", key, pb_role_name(s->role));
        return -1;
    }
    char *base = (char *)s;
    switch (p->type) {
    case P_BOOL: {
        bool b;
        if (parse_bool(val, &b) < 0)
            return err_out(err, errlen, "Expected boolean value for '%s'", key);
        *(bool *)(base + p->off) = b;
        return 0;
    }
    case P_INT: {
        char *end;
        long n = strtol(val, &end, 10);
        if (end == val || *end)
            return err_out(err, errlen, "Expected integer value for '%s'", key);
        *(int *)(base + p->off) = (int)n;
        return 0;
    }
    case P_SIZE: {
        uint64_t n;
        if (parse_size(val, &n) < 0)
            return err_out(err, errlen, "Expected size value for '%s'", key);
        *(uint64_t *)(base + p->off) = n;
        return 0;
    }
    case P_STR:
        if (!strcmp(key, "docroot")) {
            /* strip trailing slashes: paths are joined with a leading '/' */
            char d[4096];
            snprintf(d, sizeof d, "%s", val);
            size_t l = strlen(d);
            while (l > 1 && d[l - 1] == '/')
                d[--l] = 0;
            /* as Perlbal's check_type directory_or_none: a missing docroot is
             * an error, not a service that answers 404 to everything */
            struct stat sb;
            if (strcmp(d, "none") && (stat(d, &sb) < 0 || !S_ISDIR(sb.st_mode)))
                return err_out(err, errlen, "Directory not found for service %s", s->name);
            set_str((char **)(base + p->off), d);
            return 0;
        }
        set_str((char **)(base + p->off), val);
        return 0;
    case P_IGNORED: {
        /* warned about once per parameter (see perlbal/README.md) */
        static _Atomic uint64_t warned;
        uint64_t bit = 1ull << ((size_t)(p - params) % 64);
        if (!(atomic_fetch_or(&warned, bit) & bit))
            log_warn("perlbal: service parameter '%s' accepted but has no effect in this implementation", key);
        return 0;
    }
    case P_SPECIAL: break;
    }
    if (!strcasecmp(key, "role")) {
        enum pb_role r = !strcmp(val, "reverse_proxy")                             ? PB_ROLE_REVERSE_PROXY
                         : !strcmp(val, "web_server")                              ? PB_ROLE_WEB_SERVER
                         : !strcmp(val, "management")                              ? PB_ROLE_MANAGEMENT
                         : !strcmp(val, "selector")                                ? PB_ROLE_SELECTOR
                         : !strcmp(val, "upload_tracker")                          ? PB_ROLE_UPLOAD_TRACKER
                         : !strcmp(val, "echo") && pb_plugin_loaded("echoservice") ? PB_ROLE_ECHO
                                                                                   : PB_ROLE_NONE;
        if (r == PB_ROLE_NONE)
            return err_out(err, errlen, "Unknown service role '%s'", val);
        if (s->enabled)
            return err_out(err, errlen, "%s", "Can't change role of an enabled service");
        s->role = r;
        return 0;
    }
    if (!strcasecmp(key, "listen")) {
        struct sockaddr_storage ss;
        socklen_t sl;
        char e[128];
        if (listen_parse_addr(val, 80, &ss, &sl, e, sizeof e) < 0)
            return err_out(err, errlen, "%s", e);
        if (s->enabled)
            return err_out(err, errlen, "%s", "Can't change listen of an enabled service; disable it first");
        set_str(&s->listen, val);
        return 0;
    }
    if (!strcasecmp(key, "pool")) {
        pthread_mutex_lock(&pb_lock);
        struct pb_pool *pl = pb_pool_find(val);
        if (pl) {
            if (s->pool)
                s->pool->use_count--;
            pl->use_count++;
            s->pool = pl;
        }
        pthread_mutex_unlock(&pb_lock);
        if (!pl)
            return err_out(err, errlen, "Pool '%s' not found", val);
        return 0;
    }
    if (!strcasecmp(key, "plugins")) {
        /* As Perlbal: a plugin must have been LOADed; one that was not is
         * reported and skipped, the others are registered. The list is
         * rebuilt and published by count last (other loops read it). */
        char buf[512];
        snprintf(buf, sizeof buf, "%s", val);
        int n = 0;
        s->nplugins = 0;
        for (char *save = NULL, *t = strtok_r(buf, ", \t", &save); t && n < 8; t = strtok_r(NULL, ", \t", &save)) {
            if (!strcasecmp(t, "none"))
                continue;
            const struct pb_plugin *p = pb_plugin_find(t);
            if (!p || !pb_plugin_loaded(t)) {
                log_warn("perlbal: Plugin %s not loaded; not registered for %s.", t, s->name);
                continue;
            }
            bool dup = false;
            for (int i = 0; i < n; i++)
                dup |= s->plugin_ptr[i] == p;
            if (dup)
                continue;
            if (p->attach && p->attach(s, err, errlen) < 0) {
                s->nplugins = n; /* the ones before it stay */
                return -1;
            }
            snprintf(s->plugins[n], sizeof s->plugins[0], "%s", p->name);
            s->plugin_ptr[n] = p;
            n++;
        }
        s->nplugins = n;
        return 0;
    }
    if (!strcasecmp(key, "upload_status_listeners"))
        return pb_upload_status_set_listeners(s, val, err, errlen);
    if (!strcasecmp(key, "persist_client_timeout")) {
        int n = atoi(val);
        s->idle_timeout = s->persist_client_idle_timeout = n;
        return 0;
    }
    if (!strcasecmp(key, "trusted_upstream_proxies")) {
        if (parse_trusted(s, val, err, errlen) < 0)
            return -1;
        set_str(&s->trusted_upstream_proxies, val);
        return 0;
    }
    return err_out(err, errlen, "Unknown parameter '%s'", key);
}

int pb_service_set_default(const char *key, const char *val, char *err, size_t errlen)
{
    const struct param *p = param_find(key);
    if (!p || p->type == P_SPECIAL)
        return err_out(err, errlen, "Unknown parameter '%s'", key);
    for (int i = 0; i < ndefaults; i++)
        if (!strcasecmp(defaults[i].key, key)) {
            free(defaults[i].val);
            defaults[i].val = strdup(val);
            return 0;
        }
    if (ndefaults >= 64)
        return err_out(err, errlen, "%s", "too many defaults");
    defaults[ndefaults].key = strdup(key);
    defaults[ndefaults].val = strdup(val);
    ndefaults++;
    return 0;
}

struct pb_service *pb_service_find(const char *name)
{
    for (struct pb_service *s = pb_services; s; s = s->next)
        if (!strcmp(s->name, name))
            return s;
    return NULL;
}

int pb_service_set(struct pb_service *s, const char *key, const char *val, char *err, size_t errlen)
{
    int r = service_set_inner(s, key, val, err, errlen);
    if (r == 0)
        pb_web_sync(s);
    return r;
}

struct pb_service *pb_service_create(const char *name)
{
    struct pb_service *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    snprintf(s->name, sizeof s->name, "%s", name);
    char err[128];
    for (size_t i = 0; i < NPARAMS; i++)
        if (params[i].def && params[i].type != P_SPECIAL) {
            enum pb_role r = s->role;
            s->role = PB_ROLE_NONE;
            pb_service_set(s, params[i].name, params[i].def, err, sizeof err);
            s->role = r;
        }
    for (int i = 0; i < ndefaults; i++)
        pb_service_set(s, defaults[i].key, defaults[i].val, err, sizeof err);
    for (int i = 0; i < PB_MAX_LOOPS; i++)
        pb_proxy_init_loop(s, i);
    pb_web_sync(s);
    pthread_mutex_lock(&pb_lock);
    struct pb_service **pp = &pb_services;
    while (*pp)
        pp = &(*pp)->next;
    *pp = s;
    pthread_mutex_unlock(&pb_lock);
    return s;
}

/* ---- pools ---- */

struct pb_pool *pb_pool_find(const char *name)
{
    for (struct pb_pool *p = pb_pools; p; p = p->next)
        if (!strcmp(p->name, name))
            return p;
    return NULL;
}

struct pb_pool *pb_pool_create(const char *name)
{
    struct pb_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    snprintf(p->name, sizeof p->name, "%s", name);
    pthread_mutex_lock(&pb_lock);
    struct pb_pool **pp = &pb_pools;
    while (*pp)
        pp = &(*pp)->next;
    *pp = p;
    pthread_mutex_unlock(&pb_lock);
    return p;
}

/* "ip[:port]", "[ipv6][:port]" or "host.name[:port]" (port 80 when
 * absent; "localhost" is 127.0.0.1): common/pool's parse. A name is
 * resolved at each connect, without blocking (backend.c). */
static int pool_add_locked(struct pb_pool *p, const char *ipport, char *err, size_t errlen)
{
    struct pool_node parsed;
    if (pool_node_init_host(&parsed, ipport, 80) < 0)
        return err_out(err, errlen, "Invalid node address '%s'", ipport);
    for (int i = 0; i < p->nnodes; i++)
        if (!strcmp(p->nodes[i]->name, parsed.name))
            return 0;
    if (p->nnodes == p->cap) {
        int nc = p->cap ? p->cap * 2 : 8;
        struct pool_node **n = realloc(p->nodes, (size_t)nc * sizeof *n);
        if (!n)
            return err_out(err, errlen, "%s", "out of memory");
        p->nodes = n;
        p->cap = nc;
    }
    struct pool_node *node = calloc(1, sizeof *node);
    if (!node)
        return err_out(err, errlen, "%s", "out of memory");
    snprintf(node->name, sizeof node->name, "%s", parsed.name);
    node->sa = parsed.sa;
    node->salen = parsed.salen;
    snprintf(node->host, sizeof node->host, "%s", parsed.host);
    node->port = parsed.port;
    p->nodes[p->nnodes++] = node;
    return 0;
}

int pb_pool_add(struct pb_pool *p, const char *ipport, char *err, size_t errlen)
{
    pthread_mutex_lock(&pb_lock);
    int r = pool_add_locked(p, ipport, err, errlen);
    pthread_mutex_unlock(&pb_lock);
    return r;
}

int pb_pool_remove(struct pb_pool *p, const char *ipport, char *err, size_t errlen)
{
    struct pool_node parsed;
    if (pool_node_init_host(&parsed, ipport, 80) < 0)
        return err_out(err, errlen, "Invalid node address '%s'", ipport);
    pthread_mutex_lock(&pb_lock);
    for (int i = 0; i < p->nnodes; i++) {
        if (!strcmp(p->nodes[i]->name, parsed.name)) {
            /* the node struct stays allocated: backends may point at it */
            atomic_store(&p->nodes[i]->removed, true);
            pb_retire(p->nodes[i]);
            memmove(&p->nodes[i], &p->nodes[i + 1], (size_t)(p->nnodes - i - 1) * sizeof p->nodes[0]);
            p->nnodes--;
            break;
        }
    }
    pthread_mutex_unlock(&pb_lock);
    return 0;
}

struct pool_node *pb_pool_pick(struct pb_pool *p)
{
    pthread_mutex_lock(&pb_lock);
    struct pool_node *found = pool_pick(p->nodes, p->nnodes);
    pthread_mutex_unlock(&pb_lock);
    return found;
}

/* nodefile: one ip[:port] per line, '#' comments; re-read when it changes. */
void pb_pool_check_nodefile(struct pb_pool *p)
{
    if (!p->nodefile)
        return;
    struct stat st;
    if (stat(p->nodefile, &st) < 0 || st.st_mtime == p->nodefile_mtime)
        return;
    FILE *f = fopen(p->nodefile, "r");
    if (!f)
        return;
    p->nodefile_mtime = st.st_mtime;
    pthread_mutex_lock(&pb_lock);
    /* rebuild: nodes still listed keep their counters; the others leave */
    struct pool_node **old = p->nodes;
    int nold = p->nnodes;
    p->nodes = NULL;
    p->nnodes = p->cap = 0;
    char line[512], err[128];
    while (fgets(line, sizeof line, f)) {
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
        if (*s)
            pool_add_locked(p, s, err, sizeof err);
    }
    for (int i = 0; i < nold; i++) {
        int j;
        for (j = 0; j < p->nnodes; j++)
            if (!strcmp(p->nodes[j]->name, old[i]->name))
                break;
        if (j < p->nnodes) { /* keep the old node (and its counters) */
            pb_retire(p->nodes[j]);
            p->nodes[j] = old[i];
        } else {
            atomic_store(&old[i]->removed, true);
            pb_retire(old[i]);
        }
    }
    pb_retire(old);
    pthread_mutex_unlock(&pb_lock);
    fclose(f);
}

int pb_pool_set(struct pb_pool *p, const char *key, const char *val, char *err, size_t errlen)
{
    if (!strcasecmp(key, "nodefile")) {
        pb_retire(p->nodefile);
        if (!strcmp(val, "none") || !strcmp(val, "undef") || !strcmp(val, "null") || !strcmp(val, "''") ||
            !strcmp(val, "\"\"")) {
            p->nodefile = NULL;
            return 0;
        }
        p->nodefile = strdup(val);
        p->nodefile_mtime = 0;
        pb_pool_check_nodefile(p);
        return 0;
    }
    if (!strcasecmp(key, "balance_method")) {
        if (strcmp(val, "random"))
            return err_out(err, errlen, "Unknown balance method '%s'", val);
        return 0;
    }
    return err_out(err, errlen, "Unknown parameter '%s'", key);
}

/* ---- TLS ---- */

/* The service's server context: certificate, key and ciphers (common/tls),
 * then client certificates as Perlbal's IO::Socket::SSL options:
 * ssl_verify_mode is OpenSSL's bit set (1 ask for and verify a client
 * certificate, 2 and refuse a client without one, 4 only on the first
 * handshake), checked against ssl_ca_path (a directory of hashed CA
 * certificates, as Perlbal; a PEM file is taken too). */
void *pb_tls_ctx_new(struct pb_service *s, char *err, size_t errlen)
{
    void *ctx = tls_server_ctx_new(s->ssl_cert_file, s->ssl_key_file, s->ssl_cipher_list, err, errlen);
    if (!ctx)
        return NULL;
    int mode = s->ssl_verify_mode;
    if (mode & ~(SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT | SSL_VERIFY_CLIENT_ONCE)) {
        snprintf(err, errlen, "ssl_verify_mode %d: expected a sum of 1 (verify), 2 (require) and 4 (once)", mode);
        tls_ctx_free(ctx);
        return NULL;
    }
    if (s->ssl_ca_path && *s->ssl_ca_path) {
        struct stat st;
        bool dir = stat(s->ssl_ca_path, &st) == 0 && S_ISDIR(st.st_mode);
        if (SSL_CTX_load_verify_locations(ctx, dir ? NULL : s->ssl_ca_path, dir ? s->ssl_ca_path : NULL) != 1) {
            snprintf(err, errlen, "ssl_ca_path %s: cannot load CA certificates", s->ssl_ca_path);
            tls_ctx_free(ctx);
            return NULL;
        }
        if (!dir)
            SSL_CTX_set_client_CA_list(ctx, SSL_load_client_CA_file(s->ssl_ca_path));
    }
    if (mode) {
        if (mode & SSL_VERIFY_FAIL_IF_NO_PEER_CERT)
            mode |= SSL_VERIFY_PEER;
        SSL_CTX_set_verify(ctx, mode, NULL);
        static const unsigned char sid[] = "perlbal";
        SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
    }
    return ctx;
}

/* A replaced context is freed once every loop has passed a turn after the
 * swap (a loop may be between reading the pointer and SSL_new, which takes
 * its own reference): the free travels loop 1 → N-1, then happens. */
struct ctx_retire {
    void *ctx;
    int next;
};

static void ctx_retire_step(void *arg)
{
    struct ctx_retire *r = arg;
    if (r->next < loop_count()) {
        struct core_loop *l = loop_get(r->next++);
        if (loop_call(l, ctx_retire_step, r) == 0)
            return;
    }
    tls_ctx_free(r->ctx);
    free(r);
}

void pb_tls_reload(void)
{
    for (struct pb_service *s = pb_services; s; s = s->next) {
        if (!s->enable_ssl || !s->tls_ctx)
            continue;
        char e[256];
        void *ctx = pb_tls_ctx_new(s, e, sizeof e);
        if (!ctx) {
            log_error("perlbal: service %s: certificate reload failed, the old one stays: %s", s->name, e);
            continue;
        }
        void *old = __atomic_exchange_n(&s->tls_ctx, ctx, __ATOMIC_ACQ_REL);
        log_info("perlbal: service %s: certificate reloaded from %s", s->name, s->ssl_cert_file);
        struct ctx_retire *r = malloc(sizeof *r);
        if (!r)
            continue; /* keep the old one rather than free it under a loop */
        r->ctx = old;
        r->next = 1;
        ctx_retire_step(r);
    }
}

/* ---- listeners ---- */

/* common/listen hands us each accepted socket on the loop that owns it
 * (TCP_NODELAY already set). Every listener is opened "admin" to the core's
 * gate, because perlbal keeps its own: over SERVER max_connections a client
 * gets Perlbal's 503 (pb_client_accept with reject), and management
 * connections are always let in. */
static void accept_cb(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t sl, void *arg)
{
    struct pb_service *svc = arg;
    uint64_t max = listen_max_conns();
    bool reject = max && svc->role != PB_ROLE_MANAGEMENT && conn_total_current() >= max;
    if (svc->role == PB_ROLE_MANAGEMENT)
        pb_manage_accept(svc, loop, fd, sa, sl);
    else if (svc->role == PB_ROLE_ECHO && reject)
        close(fd); /* no protocol to say why in */
    else if (svc->role == PB_ROLE_ECHO)
        pb_echo_accept(svc, loop, fd, sa, sl);
    else
        pb_client_accept(svc, loop, fd, sa, sl, reject);
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return true; /* unix socket */
}

int pb_service_enable(struct pb_service *s, char *err, size_t errlen)
{
    if (s->enabled)
        return 0;
    if (s->role == PB_ROLE_NONE)
        return err_out(err, errlen, "Service '%s' has no role", s->name);
    if (s->role == PB_ROLE_REVERSE_PROXY && !s->pool && !(s->server_process && *s->server_process))
        log_warn("perlbal: service '%s' has no pool", s->name);
    if (s->enable_ssl && !s->tls_ctx && s->listen) {
        char e[256];
        void *ctx = pb_tls_ctx_new(s, e, sizeof e);
        if (!ctx)
            return err_out(err, errlen, "SSL: %s", e);
        __atomic_store_n(&s->tls_ctx, ctx, __ATOMIC_RELEASE);
    }
    if (s->role == PB_ROLE_UPLOAD_TRACKER) {
        if (pb_upload_tracker_open(s, err, errlen) < 0)
            return -1;
        s->enabled = true;
        return 0;
    }
    if (s->listen) {
        struct sockaddr_storage ss;
        socklen_t sl;
        char e[160];
        if (listen_parse_addr(s->listen, 80, &ss, &sl, e, sizeof e) < 0)
            return err_out(err, errlen, "%s", e);
        if (s->role == PB_ROLE_MANAGEMENT && !is_loopback(&ss))
            log_warn("perlbal: WARNING: management service '%s' listens on %s, beyond loopback: the console has "
                     "no authentication and anyone who can reach it can reconfigure or stop this server",
                     s->name, s->listen);
        /* the management console lives on loop 0; the others get one
         * socket per loop (a port another process holds is refused) */
        struct listen_opts lo = { .single_loop = s->role == PB_ROLE_MANAGEMENT, .is_admin = true };
        char e2[256];
        s->listener = listen_open(s->listen, 80, &lo, accept_cb, NULL, s, e2, sizeof e2);
        if (!s->listener)
            return err_out(err, errlen, "Error creating listening socket on %s", e2);
    }
    s->enabled = true;
    return 0;
}

int pb_service_disable(struct pb_service *s, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    if (!s->enabled)
        return 0;
    if (s->listener)
        listen_close(s->listener);
    s->listener = NULL;
    pb_upload_tracker_close(s);
    s->enabled = false;
    return 0;
}

static void close_on_loop(void *arg)
{
    struct core_loop *loop = arg;
    for (struct pb_service *s = pb_services; s; s = s->next) {
        /* bored backends hold no request: let them go so the loop can end */
        s->loops[loop->index].pool.stopping = true;
        pb_proxy_close_idle(s, loop->index);
    }
}

void pb_close_all_listeners(void)
{
    for (struct pb_service *s = pb_services; s; s = s->next) {
        if (s->listener) {
            listen_close(s->listener);
            s->listener = NULL;
        }
        pb_upload_tracker_close(s);
    }
    for (int i = 0; i < loop_count(); i++) {
        struct core_loop *loop = loop_get(i);
        struct core_loop *cur = loop_current();
        if (cur && cur->index == i)
            close_on_loop(loop);
        else
            loop_call(loop, close_on_loop, loop);
    }
}
