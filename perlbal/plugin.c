/* plugin: the plugin registry and the hook runners. The plugins bundled
 * with Perlbal 1.80 that make sense compiled in live in plugins/<name>.c:
 *
 *   vhosts               the selector role's VHOST table (session.c does the matching)
 *   accesscontrol        ACCESS policy|allow|deny|queue_low|reset ip|netmask -> 403 / low priority
 *   maxcontentlength     SET max_content_length = N -> 413 for larger Content-Length
 *   redirect             REDIRECT HOST <match> <target> -> 301 to http://target/uri
 *   stats                `stats` and `recent` console commands
 *   queues               X-Queue-Count/-Age, X-HP-Queue-Count/-Age request headers to backends
 *   autoremoveleadingdir web_server: strip the docroot's last directory from the URI
 *   notmodified          SET svc.notmodified.host_pattern = ERE -> 304 to any If-Modified-Since
 *   throttle             per-IP delays growing on repeat requests, bans, max concurrent, white/blacklists
 *   include              INCLUDE = glob ...: run the matching config files
 *   xffextras            X-Forwarded-Port / X-Forwarded-Proto to backends
 *   echoservice          the `echo` service role: lines sent back, after `echo_delay` seconds
 *
 * Per-service plugin state (rules, maps, counters) lives in a struct hung off
 * the service (plugin.h); console changes and request-time reads meet under
 * pb_plugin_lock. */
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
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"

pthread_mutex_t pb_plugin_lock = PTHREAD_MUTEX_INITIALIZER;

struct plug_state *pb_plugin_state(struct pb_service *s)
{
    if (!s->plugin_state) {
        pthread_mutex_lock(&pb_plugin_lock);
        if (!s->plugin_state)
            s->plugin_state = calloc(1, sizeof(struct plug_state));
        pthread_mutex_unlock(&pb_plugin_lock);
    }
    return s->plugin_state;
}

uint32_t pb_plugin_client_ipv4(struct pb_client *cl, bool *ok)
{
    *ok = cl->c->peer.ss_family == AF_INET;
    return *ok ? ((struct sockaddr_in *)&cl->c->peer)->sin_addr.s_addr : 0;
}

/* ---- registry ---- */

static const struct pb_plugin pb_plugin_vhosts = { .name = "vhosts" }; /* the selector role (session.c) */

static const struct pb_plugin *const plugins[] = {
    &pb_plugin_vhosts,
    &pb_plugin_accesscontrol,
    &pb_plugin_maxcontentlength,
    &pb_plugin_redirect,
    &pb_plugin_stats,
    &pb_plugin_queues,
    &pb_plugin_autoremoveleadingdir,
    &pb_plugin_notmodified,
    &pb_plugin_throttle,
    &pb_plugin_echoservice,
    &pb_plugin_include,
    &pb_plugin_xffextras,
    &pb_plugin_highpri,
    &pb_plugin_vpaths,
    &pb_plugin_flvstreaming,
    &pb_plugin_lazycdn,
    &pb_plugin_palimg,
};
#define NPLUGINS (sizeof plugins / sizeof plugins[0])
static _Atomic bool loaded[NPLUGINS];

/* The service's plugin list is set by SET plugins (resolved to pointers there). */
#define FOR_PLUGINS(svc, p)                                                                                            \
    for (int i_ = 0; i_ < (svc)->nplugins; i_++)                                                                       \
        for (const struct pb_plugin *p = (svc)->plugin_ptr[i_]; p; p = NULL)

static int plugin_index(const struct pb_plugin *p)
{
    for (size_t i = 0; i < NPLUGINS; i++)
        if (plugins[i] == p)
            return (int)i;
    return -1;
}

const struct pb_plugin *pb_plugin_find(const char *name)
{
    for (size_t i = 0; i < NPLUGINS; i++)
        if (!strcasecmp(plugins[i]->name, name))
            return plugins[i];
    return NULL;
}

int pb_plugin_load(const char *name)
{
    const struct pb_plugin *p = pb_plugin_find(name);
    if (!p)
        return -1;
    loaded[plugin_index(p)] = true;
    return 0;
}

bool pb_plugin_loaded(const char *name)
{
    const struct pb_plugin *p = pb_plugin_find(name);
    return p && loaded[plugin_index(p)];
}

const struct pb_plugin *pb_plugin_for_command(const char *word)
{
    for (size_t i = 0; i < NPLUGINS; i++) {
        if (!loaded[i] || !plugins[i]->commands)
            continue;
        for (const char *const *c = plugins[i]->commands; *c; c++)
            if (!strcmp(*c, word))
                return plugins[i];
    }
    return NULL;
}

int pb_plugin_set_tunable(struct pb_service *svc, const char *key, const char *val, int *rc, char *err, size_t errlen)
{
    for (size_t i = 0; i < NPLUGINS; i++) {
        if (!loaded[i] || !plugins[i]->tunables)
            continue;
        for (const char *const *t = plugins[i]->tunables; *t; t++)
            if (!strcasecmp(*t, key)) {
                *rc = plugins[i]->set_param(svc, *t, val, err, errlen);
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
        if (d < 0 || d == PB_HOLD_ASYNC)
            return d;
        if (d > delay)
            delay = d;
    }
    return delay;
}

void pb_plugins_proxy_end(struct pb_service *svc, struct pb_client *cl)
{
    FOR_PLUGINS(svc, p)
    if (p->proxy_end)
        p->proxy_end(svc, cl);
}

int pb_plugin_set_param(struct pb_service *svc, const char *dotted_key, const char *val, int *rc, char *err,
                        size_t errlen)
{
    const char *dot = strchr(dotted_key, '.');
    if (!dot)
        return 0;
    char name[32];
    snprintf(name, sizeof name, "%.*s", (int)(dot - dotted_key < 31 ? dot - dotted_key : 31), dotted_key);
    const struct pb_plugin *p = pb_plugin_find(name);
    if (!p || !p->set_param)
        return 0;
    *rc = p->set_param(svc, dot + 1, val, err, errlen);
    return 1;
}

const char *const *pb_plugin_names(void)
{
    static const char *names[NPLUGINS + 1];
    for (size_t i = 0; i < NPLUGINS; i++)
        names[i] = plugins[i]->name;
    return names;
}

struct pb_service *pb_plugins_select(struct pb_service *sel, struct pb_client *cl, struct http_msg *req, bool *has_hook,
                                     int *status, char *msg, size_t msglen)
{
    *has_hook = false;
    *status = 0;
    /* the last plugin that selects wins, as Perlbal's selector setter */
    const struct pb_plugin *last = NULL;
    FOR_PLUGINS(sel, p)
    if (p->select)
        last = p;
    if (!last)
        return NULL;
    *has_hook = true;
    return last->select(sel, cl, req, status, msg, msglen);
}

void pb_plugins_modify_response(struct pb_service *svc, struct pb_client *cl, struct http_msg *resp,
                                struct pb_resp_edit *e)
{
    FOR_PLUGINS(svc, p)
    if (p->modify_response)
        p->modify_response(svc, cl, resp, e);
}

bool pb_plugins_replace_header(struct pb_service *svc, struct pb_client *cl, const char *name, size_t len)
{
    FOR_PLUGINS(svc, p)
    if (p->replaces_request_header) {
        const char *h = p->replaces_request_header(svc, cl);
        if (h && strlen(h) == len && !strncasecmp(h, name, len))
            return true;
    }
    return false;
}

enum pb_hook_result pb_plugins_start_request(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    FOR_PLUGINS(svc, p)
    if (p->start_request && p->start_request(svc, cl, req) == PB_HOOK_HANDLED)
        return PB_HOOK_HANDLED;
    return PB_HOOK_CONTINUE;
}

void pb_plugins_serve_path(struct pb_service *svc, char *path, size_t cap)
{
    FOR_PLUGINS(svc, p)
    if (p->serve_path)
        p->serve_path(svc, path, cap);
}

void pb_plugins_backend_assigned(struct pb_service *svc, struct pb_client *cl, struct evbuffer *hdrs)
{
    FOR_PLUGINS(svc, p)
    if (p->backend_assigned)
        p->backend_assigned(svc, cl, hdrs);
}

void pb_plugins_response_head(struct pb_service *svc, struct pb_client *cl, int status)
{
    FOR_PLUGINS(svc, p)
    if (p->response_head)
        p->response_head(svc, cl, status);
}

void pb_plugins_file_sent(struct pb_service *svc, struct pb_client *cl, bool reproxied)
{
    FOR_PLUGINS(svc, p)
    if (p->file_sent)
        p->file_sent(svc, cl, reproxied);
}

bool pb_plugins_poststat(struct pb_service *svc, struct pb_client *cl, int what, int64_t mtime)
{
    FOR_PLUGINS(svc, p)
    if (p->poststat && p->poststat(svc, cl, what, mtime))
        return true;
    return false;
}
