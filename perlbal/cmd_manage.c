/* pb_manage: executes Perlbal's configuration/management language — the
 * config file at start and the management-role console at run time — with
 * Perlbal's replies: "OK" (console only), "ERROR: ...", and listings ended
 * by a "." line.
 *
 * Parsing is proto_manage.c's (pure); this file applies commands to the registry
 * (service.c) and formats the inspection commands. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/admin.h"
#include "common/conn.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"
#include "perlbal/accesslog.h"
#include "perlbal/proto_manage.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"

struct out {
    struct evbuffer *b;
    bool crlf;
};

static void outf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void outf(struct out *o, const char *fmt, ...)
{
    if (!o->b)
        return;
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(o->b, fmt, ap);
    va_end(ap);
    evbuffer_add(o->b, o->crlf ? "\r\n" : "\n", o->crlf ? 2 : 1);
}

static int err(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int err(struct out *o, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    outf(o, "ERROR: %s", buf);
    if (!o->b)
        log_error("perlbal: %s", buf);
    return -1;
}

static int ok(struct pb_manage_ctx *ctx, struct out *o)
{
    if (ctx->verbose)
        outf(o, "OK");
    return 0;
}

static int end(struct out *o)
{
    outf(o, ".");
    return 0;
}

static void plugin_out(void *arg, const char *line) { outf(arg, "%s", line); }

static void show_service(struct out *o, struct pb_service *s)
{
    outf(o, "SERVICE %s", s->name);
    outf(o, "     listening: %s", s->listen ? s->listen : "--");
    outf(o, "          role: %s", pb_role_name(s->role));
    if (s->role == PB_ROLE_REVERSE_PROXY || s->role == PB_ROLE_WEB_SERVER) {
        /* counts are summed over the loops; they are read racily, as stats */
        int waiting = 0, pending = 0, idle = 0;
        for (int i = 0; i < loop_count() && i < PB_MAX_LOOPS; i++) {
            waiting += s->loops[i].pool.nwaiting;
            pending += s->loops[i].pool.pending;
            idle += s->loops[i].pool.nidle;
        }
        outf(o, "  pend clients: %d", waiting);
        outf(o, "  pend backend: %d", pending);
        if (s->role == PB_ROLE_REVERSE_PROXY) {
            outf(o, " connect-ahead: %d/%d", idle, s->connect_ahead);
            if (s->pool) {
                outf(o, "          pool: %s", s->pool->name);
                outf(o, "         nodes:");
                pthread_mutex_lock(&pb_lock);
                for (int i = 0; i < s->pool->nnodes; i++)
                    outf(o, "                %-21s %7llu", s->pool->nodes[i]->name,
                         (unsigned long long)atomic_load(&s->pool->nodes[i]->used));
                pthread_mutex_unlock(&pb_lock);
            }
            if (s->reproxy_cache_maxsize > 0)
                outf(o, " reproxy cache: max %d, hits %llu", s->reproxy_cache_maxsize,
                     (unsigned long long)pb_proxy_cache_hits(s));
        } else {
            outf(o, "        docroot: %s", s->docroot ? s->docroot : "");
        }
    }
}

static int cmd_word(struct pb_manage_ctx *ctx, struct pb_cmd *c, struct out *o)
{
    const char *w = c->word;
    int argc = c->argc;
    const char *const *argv = c->argv;
    if (!strcmp(w, "show")) {
        if (argc == 2 && !strcmp(argv[1], "service")) {
            /* by name, as Perlbal lists them */
            const char *last = "";
            for (;;) {
                struct pb_service *next = NULL;
                for (struct pb_service *s = pb_services; s; s = s->next)
                    if (strcmp(s->name, last) > 0 && (!next || strcmp(s->name, next->name) < 0))
                        next = s;
                if (!next)
                    break;
                outf(o, "%s %s %s", next->name, next->listen ? next->listen : "not_listening",
                     next->enabled ? "ENABLED" : "DISABLED");
                last = next->name;
            }
            return end(o);
        }
        if (argc == 3 && !strcmp(argv[1], "service")) {
            struct pb_service *s = pb_service_find(argv[2]);
            if (!s)
                return err(o, "Unknown service");
            show_service(o, s);
            return end(o);
        }
        if (argc == 2 && !strcmp(argv[1], "pool")) {
            for (struct pb_pool *p = pb_pools; p; p = p->next) {
                outf(o, "%s nodes %d", p->name, p->nnodes);
                outf(o, "%s services %d", p->name, p->use_count);
            }
            return end(o);
        }
        if (argc == 3 && !strcmp(argv[1], "pool")) {
            struct pb_pool *p = pb_pool_find(argv[2]);
            if (!p)
                return err(o, "pool '%s' does not exist", argv[2]);
            pthread_mutex_lock(&pb_lock);
            for (int i = 0; i < p->nnodes; i++)
                outf(o, "%s %llu", p->nodes[i]->name, (unsigned long long)atomic_load(&p->nodes[i]->used));
            pthread_mutex_unlock(&pb_lock);
            return end(o);
        }
        return err(o, "Failed to parse command");
    }
    if (!strcmp(w, "uptime") || !strcmp(w, "version")) {
        outf(o, "starttime %lld", (long long)pb_start_time);
        outf(o, "uptime %lld", (long long)(time(NULL) - (time_t)pb_start_time));
        outf(o, "version %s", PB_VERSION);
        return end(o);
    }
    if (!strcmp(w, "proc")) {
        static uint64_t last_reqs;
        static double last_u, last_s;
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        double u = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
        double s = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
        uint64_t reqs = atomic_load(&pb_total_requests);
        outf(o, "time: %lld", (long long)time(NULL));
        outf(o, "pid: %d", (int)getpid());
        outf(o, "utime: %.6f (+%.6f)", u, u - last_u);
        outf(o, "stime: %.6f (+%.6f)", s, s - last_s);
        outf(o, "reqs: %llu (+%llu)", (unsigned long long)reqs, (unsigned long long)(reqs - last_reqs));
        last_reqs = reqs;
        last_u = u;
        last_s = s;
        return end(o);
    }
    if (!strcmp(w, "nodes") || !strcmp(w, "node")) {
        const char *only = argc > 1 ? argv[1] : NULL;
        char want[80] = "";
        if (only) {
            size_t ol = strlen(only);
            bool has_port = only[0] == '[' ? ol > 0 && only[ol - 1] != ']' : strchr(only, ':') != NULL;
            snprintf(want, sizeof want, "%s%s", only, has_port ? "" : ":80");
        }
        pthread_mutex_lock(&pb_lock);
        for (struct pb_pool *p = pb_pools; p; p = p->next)
            for (int i = 0; i < p->nnodes; i++) {
                struct pool_node *n = p->nodes[i];
                if (only && strcmp(n->name, want))
                    continue;
                int64_t dead = atomic_load(&n->dead_until_ms) - pb_now_ms();
                outf(o, "%s connects %llu", n->name, (unsigned long long)atomic_load(&n->connects));
                outf(o, "%s requests %llu", n->name, (unsigned long long)atomic_load(&n->used));
                outf(o, "%s failures %llu", n->name, (unsigned long long)atomic_load(&n->failures));
                outf(o, "%s dead %d", n->name, dead > 0 ? 1 : 0);
            }
        pthread_mutex_unlock(&pb_lock);
        return end(o);
    }
    if (!strcmp(w, "queues")) {
        static const char *qn[3] = { "highpri", "normal", "lowpri" };
        int64_t now = pb_now_ms();
        for (struct pb_service *s = pb_services; s; s = s->next) {
            if (s->role != PB_ROLE_REVERSE_PROXY)
                continue;
            for (int q = 2; q >= 0; q--) { /* Perlbal's order: lowpri, normal, highpri */
                int count = 0;
                int64_t age = 0;
                for (int i = 0; i < loop_count() && i < PB_MAX_LOOPS; i++) {
                    count += s->loops[i].pool.qlen[q];
                    int64_t a = pool_queue_age_ms(&s->loops[i].pool, q, now);
                    if (a > age)
                        age = a;
                }
                outf(o, "%s-%s.age %lld", s->name, qn[q], (long long)(age / 1000));
                outf(o, "%s-%s.count %d", s->name, qn[q], count);
            }
        }
        return end(o);
    }
    if (!strcmp(w, "states") || !strcmp(w, "socks") || !strcmp(w, "fd") || !strcmp(w, "backends") ||
        !strcmp(w, "pending") || !strcmp(w, "obj")) {
        if (!strcmp(w, "fd")) {
            struct rlimit rl;
            getrlimit(RLIMIT_NOFILE, &rl);
            outf(o, "max %llu", (unsigned long long)rl.rlim_cur);
            outf(o, "cur %llu", (unsigned long long)conn_total_current());
            return end(o);
        }
        struct pb_service *only = NULL;
        if (!strcmp(w, "states") && argc > 1 && !(only = pb_service_find(argv[1])))
            return err(o, "Service not found.");
        for (struct pb_service *s = pb_services; s; s = s->next) {
            if (only && s != only)
                continue;
            int waiting = 0, pending = 0, idle = 0, active = 0;
            for (int i = 0; i < loop_count() && i < PB_MAX_LOOPS; i++) {
                waiting += s->loops[i].pool.nwaiting;
                pending += s->loops[i].pool.pending;
                idle += s->loops[i].pool.nidle;
                active += s->loops[i].active_clients;
            }
            if (s->role != PB_ROLE_REVERSE_PROXY)
                continue;
            if (!strcmp(w, "pending")) {
                outf(o, "%s pending %d", s->name, pending);
                continue;
            }
            outf(o, "Perlbal::BackendHTTP %s.bored %d", s->name, idle);
            outf(o, "Perlbal::BackendHTTP %s.connecting %d", s->name, pending);
            outf(o, "Perlbal::ClientProxy %s.wait_backend %d", s->name, waiting);
            outf(o, "Perlbal::ClientProxy %s.active %d", s->name, active);
        }
        if (!strcmp(w, "socks")) {
            outf(o, "%5llu total connections", (unsigned long long)conn_total_current());
        }
        return end(o);
    }
    if (!strcmp(w, "noverify")) {
        int64_t now = pb_now_ms();
        pthread_mutex_lock(&pb_lock);
        for (struct pb_pool *p = pb_pools; p; p = p->next)
            for (int i = 0; i < p->nnodes; i++) {
                int64_t v = atomic_load(&p->nodes[i]->mark_until_ms);
                if (v > now)
                    outf(o, "%s %lld", p->nodes[i]->name, (long long)(time(NULL) + (v - now) / 1000));
            }
        pthread_mutex_unlock(&pb_lock);
        return end(o);
    }
    if (!strcmp(w, "plugins")) {
        for (struct pb_service *s = pb_services; s; s = s->next) {
            char line[512];
            int n = snprintf(line, sizeof line, "%s", s->name);
            for (int i = 0; i < s->nplugins && n < (int)sizeof line; i++)
                n += snprintf(line + n, sizeof line - (size_t)n, " %s", s->plugins[i]);
            outf(o, "%s", line);
        }
        return end(o);
    }
    if (!strcmp(w, "reproxy_state"))
        return end(o);
    if (!strcmp(w, "verbose")) {
        if (argc != 2)
            return err(o, "usage: verbose {on|off}");
        ctx->verbose = !strcmp(argv[1], "on") || !strcmp(argv[1], "1");
        return ok(ctx, o);
    }
    if (!strcmp(w, "shutdown")) {
        if (argc > 1 && !strcmp(argv[1], "graceful")) {
            pb_close_all_listeners();
            loop_request_stop();
            return ok(ctx, o);
        }
        loop_set_grace(0.2);
        loop_request_stop();
        return ok(ctx, o);
    }
    if (!strcmp(w, "dumpconfig")) {
        for (struct pb_pool *p = pb_pools; p; p = p->next) {
            outf(o, "CREATE POOL %s", p->name);
            pthread_mutex_lock(&pb_lock);
            for (int i = 0; i < p->nnodes; i++)
                outf(o, "  POOL %s ADD %s", p->name, p->nodes[i]->name);
            pthread_mutex_unlock(&pb_lock);
            outf(o, "%s", "");
        }
        for (struct pb_service *s = pb_services; s; s = s->next) {
            outf(o, "CREATE SERVICE %s", s->name);
            outf(o, "  SET role = %s", pb_role_name(s->role));
            if (s->listen)
                outf(o, "  SET listen = %s", s->listen);
            if (s->pool)
                outf(o, "  SET pool = %s", s->pool->name);
            if (s->docroot)
                outf(o, "  SET docroot = %s", s->docroot);
            if (s->role == PB_ROLE_ECHO && s->echo_delay)
                outf(o, "  SET echo_delay = %d", s->echo_delay);
            for (struct pb_vhost *v = s->vhosts; v; v = v->next)
                outf(o, "  VHOST %s = %s", v->pattern, v->target);
            outf(o, "%s %s", s->enabled ? "ENABLE" : "DISABLE", s->name);
            outf(o, "%s", "");
        }
        return ok(ctx, o);
    }
    if (!strcmp(w, "help")) {
        static const char *cmds[] = { "create",  "default", "disable", "dumpconfig", "enable",  "fd",
                                      "header",  "help",    "load",    "node",       "nodes",   "noverify",
                                      "pending", "plugins", "pool",    "proc",       "queues",  "reproxy_state",
                                      "server",  "set",     "show",    "shutdown",   "socks",   "states",
                                      "unload",  "uptime",  "use",     "verbose",    "version", "vhost",
                                      NULL };
        outf(o, "Available commands:");
        for (int i = 0; cmds[i]; i++)
            outf(o, "%s", cmds[i]);
        return end(o);
    }
    const struct pb_plugin *pl = pb_plugin_for_command(w);
    if (pl) {
        char e[256] = "";
        const char *svc = ctx->last_created[0] ? ctx->last_created : NULL;
        if (pl->command(svc, argc, argv, plugin_out, o, e, sizeof e) < 0)
            return err(o, "%s", e);
        /* listing commands end with "." themselves */
        if (!strcmp(w, "stats") || !strcmp(w, "recent") || !strcmp(w, "patterns"))
            return 0;
        return ok(ctx, o);
    }
    return err(o, "unknown command: %s", w);
}

static int run(struct pb_manage_ctx *ctx, struct pb_cmd *c, struct out *o)
{
    char e[256] = "";
    switch (c->kind) {
    case PB_CMD_EMPTY: return 0;
    case PB_CMD_CREATE:
        if (pb_service_find(c->a2))
            return err(o, "service '%s' already exists", c->a2);
        if (pb_pool_find(c->a2))
            return err(o, "pool '%s' already exists", c->a2);
        if (!strcmp(c->a1, "service") ? !pb_service_create(c->a2) : !pb_pool_create(c->a2))
            return err(o, "out of memory");
        snprintf(ctx->last_created, sizeof ctx->last_created, "%s", c->a2);
        return ok(ctx, o);
    case PB_CMD_POOL: {
        struct pb_pool *p = pb_pool_find(c->a1);
        if (!p)
            return err(o, "Pool '%s' not found", c->a1);
        int r = !strcmp(c->a2, "add") ? pb_pool_add(p, c->a3, e, sizeof e) : pb_pool_remove(p, c->a3, e, sizeof e);
        if (r < 0)
            return err(o, "%s", e);
        return ok(ctx, o);
    }
    case PB_CMD_SET: {
        const char *name = c->a1 ? c->a1 : ctx->last_created[0] ? ctx->last_created : NULL;
        if (!name)
            return err(o, "omitted service/pool name not implied from context");
        struct pb_service *s = pb_service_find(name);
        struct pb_pool *p = s ? NULL : pb_pool_find(name);
        if (!s && !p && c->a1) {
            /* "SET listen = x" parsed "set" "listen" ... never lands here;
             * "SET foo.bar = x" with foo not an object: key with a dot on
             * the implied object */
            const char *impl = ctx->last_created[0] ? ctx->last_created : NULL;
            return err(o, "service/pool '%s' does not exist%s", name, impl ? "" : "");
        }
        int r = s ? pb_service_set(s, c->a2, c->a3, e, sizeof e) : pb_pool_set(p, c->a2, c->a3, e, sizeof e);
        if (r < 0)
            return err(o, "%s", e);
        return ok(ctx, o);
    }
    case PB_CMD_DEFAULT:
        if (pb_service_set_default(c->a2, c->a3, e, sizeof e) < 0)
            return err(o, "%s", e);
        return ok(ctx, o);
    case PB_CMD_USE:
        if (!pb_service_find(c->a1) && !pb_pool_find(c->a1))
            return err(o, "Non-existent pool or service '%s'", c->a1);
        snprintf(ctx->last_created, sizeof ctx->last_created, "%s", c->a1);
        return ok(ctx, o);
    case PB_CMD_ENABLE:
    case PB_CMD_DISABLE: {
        struct pb_service *s = pb_service_find(c->a1);
        if (!s)
            return err(o, "service '%s' does not exist", c->a1);
        int r = c->kind == PB_CMD_ENABLE ? pb_service_enable(s, e, sizeof e) : pb_service_disable(s, e, sizeof e);
        if (r < 0)
            return err(o, "%s", e);
        return ok(ctx, o);
    }
    case PB_CMD_HEADER: {
        struct pb_service *s = pb_service_find(c->a1);
        if (!s)
            return err(o, "service '%s' does not exist", c->a1);
        struct pb_header_op *op = calloc(1, sizeof *op);
        op->name = strdup(c->a3);
        op->value = c->a4 ? strdup(c->a4) : NULL;
        /* append (the list is read by other loops: link the new node last) */
        struct pb_header_op **pp = &s->header_ops;
        while (*pp)
            pp = &(*pp)->next;
        *pp = op;
        return ok(ctx, o);
    }
    case PB_CMD_LOAD:
        if (pb_plugin_load(c->a1) < 0)
            return err(o, "Can't locate plugin '%s' (not built into this perlbal)", c->a1);
        return ok(ctx, o);
    case PB_CMD_UNLOAD: return ok(ctx, o);
    case PB_CMD_SERVER: {
        int arc;
        char aerr[256];
        if (pb_accesslog_server_set(c->a2, c->a3, &arc, aerr, sizeof aerr))
            return arc < 0 ? err(o, "%s", aerr) : ok(ctx, o);
        if (!strcmp(c->a2, "max_connections")) {
            listen_set_max_conns((uint64_t)strtoull(c->a3, NULL, 10));
            return ok(ctx, o);
        }
        if (!strcmp(c->a2, "aio_mode")) {
            /* none: web_server disk work on the loop; anything else
             * (Perlbal's ioaio, linux): on the disk worker pool */
            pb_set_aio(strcasecmp(c->a3, "none") != 0, -1);
            return ok(ctx, o);
        }
        if (!strcmp(c->a2, "aio_threads")) {
            long n = strtol(c->a3, NULL, 10);
            if (n < 1 || n > 256)
                return err(o, "aio_threads must be 1..256");
            pb_set_aio(-1, (int)n);
            return ok(ctx, o);
        }
        if (!strcmp(c->a2, "pidfile") || !strncmp(c->a2, "max_reproxy_connections", 23) ||
            !strcmp(c->a2, "nice_level") || !strcmp(c->a2, "track_obj") || !strcmp(c->a2, "crash_backtrace")) {
            log_warn("perlbal: server parameter '%s' accepted but has no effect here", c->a2);
            return ok(ctx, o);
        }
        return err(o, "unknown server option '%s'", c->a2);
    }
    case PB_CMD_VHOST: {
        const char *name = c->a1 ? c->a1 : ctx->last_created[0] ? ctx->last_created : NULL;
        if (!name)
            return err(o, "omitted service name not implied from context");
        struct pb_service *s = pb_service_find(name);
        if (!s || s->role != PB_ROLE_SELECTOR)
            return err(o, "Service '%s' is not a selector service", name);
        pthread_mutex_lock(&pb_lock);
        struct pb_vhost *v;
        for (v = s->vhosts; v; v = v->next)
            if (!strcmp(v->pattern, c->a2))
                break;
        if (v) {
            pb_retire(v->target); /* a loop may still be reading it */
            v->target = strdup(c->a3);
        } else {
            v = calloc(1, sizeof *v);
            v->pattern = strdup(c->a2);
            v->target = strdup(c->a3);
            for (char *q = v->pattern; *q; q++)
                *q = (char)tolower((unsigned char)*q);
            v->next = s->vhosts;
            s->vhosts = v;
        }
        pthread_mutex_unlock(&pb_lock);
        return ok(ctx, o);
    }
    case PB_CMD_WORD: return cmd_word(ctx, c, o);
    }
    return err(o, "invalid command");
}

/* $VAR expansion from the environment, as Perlbal does in config files. */
static void expand_env(const char *in, size_t len, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < outlen;) {
        if (in[i] == '$' && i + 1 < len && (isalpha((unsigned char)in[i + 1]) || in[i + 1] == '_')) {
            size_t j = i + 1;
            char name[128];
            size_t nl = 0;
            while (j < len && (isalnum((unsigned char)in[j]) || in[j] == '_') && nl < sizeof name - 1)
                name[nl++] = in[j++];
            name[nl] = 0;
            const char *v = getenv(name);
            for (; v && *v && o + 1 < outlen; v++)
                out[o++] = *v;
            i = j;
            continue;
        }
        out[o++] = in[i++];
    }
    out[o] = 0;
}

int pb_manage_run(struct pb_manage_ctx *ctx, const char *line, size_t len, struct evbuffer *outb, bool crlf)
{
    static __thread struct pb_cmd cmd;
    char buf[PB_CMD_MAX_LINE + 1];
    if (len > PB_CMD_MAX_LINE)
        len = PB_CMD_MAX_LINE;
    /* config files only (as Perlbal): a console user must not read the
     * process environment */
    if (ctx->in_config) {
        expand_env(line, len, buf, sizeof buf);
    } else {
        memcpy(buf, line, len);
        buf[len] = 0;
    }
    struct out o = { outb, crlf };
    if (pb_cmd_parse(buf, strlen(buf), &cmd) < 0)
        return err(&o, "%s", cmd.err);
    return run(ctx, &cmd, &o);
}

int pb_manage_run_file(const char *path, char *errbuf, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(errbuf, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct pb_manage_ctx ctx = { .verbose = false, .in_config = true };
    char line[PB_CMD_MAX_LINE + 2];
    int lineno = 0;
    struct evbuffer *out = evbuffer_new();
    int rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r'))
            line[--l] = 0;
        if (pb_manage_run(&ctx, line, l, out, false) < 0) {
            size_t n = evbuffer_get_length(out);
            char msg[512];
            if (n >= sizeof msg)
                n = sizeof msg - 1;
            evbuffer_remove(out, msg, n);
            msg[n] = 0;
            if (n && msg[n - 1] == '\n')
                msg[n - 1] = 0;
            snprintf(errbuf, errlen, "%s line %d: %s", path, lineno, msg);
            rc = -1;
            break;
        }
        evbuffer_drain(out, evbuffer_get_length(out));
    }
    evbuffer_free(out);
    fclose(f);
    return rc;
}

/* The core console (--admin) speaks the same language for lines none of its
 * own commands take. */
static enum admin_result admin_fallback(struct admin_ctx *actx, char *line, size_t len)
{
    static __thread struct pb_manage_ctx ctx = { .verbose = true };
    pb_manage_run(&ctx, line, len, actx->out, true);
    return ADMIN_OK;
}

void pb_manage_admin_fallback_init(void) { admin_set_fallback(admin_fallback); }
