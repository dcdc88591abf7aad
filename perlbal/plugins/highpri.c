/* plugins/highpri.c: Perlbal's Highpri plugin — requests whose URI (or
 * Host) matches a Perl regex go to the high-priority queue of a
 * reverse_proxy, ahead of everyone waiting for a backend.
 *
 *   SET svc.highpri.uri_pattern = regex | undef     (default
 *       ^(?:/interface/(?:xmlrpc|flat)|/login\.bml)$, as Perlbal's)
 *   SET svc.highpri.host_pattern = regex | undef    (default undef)
 *   patterns                                        (console: the patterns in use)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/http.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"
#include "perlbal/regex.h"

#define HP_DEFAULT_URI "^(?:/interface/(?:xmlrpc|flat)|/login\\.bml)$"

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static struct pb_regex *default_uri;

static void compile_default(void)
{
    char err[160];
    default_uri = pb_regex_compile(HP_DEFAULT_URI, err, sizeof err);
}

static bool is_undef(const char *v) { return !strcmp(v, "undef") || !strcmp(v, "none") || !strcmp(v, "null"); }

static enum pb_hook_result hp_start(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    struct plug_state *st = pb_plugin_state(svc);
    if (!st || cl->prio == 0)
        return PB_HOOK_CONTINUE;
    pthread_once(&default_once, compile_default);
    bool high = false;
    pthread_mutex_lock(&pb_plugin_lock);
    const struct pb_regex *uri = st->hp_uri_set ? st->hp_uri : default_uri;
    if (uri && pb_regex_match(uri, req->target, req->target_len))
        high = true;
    size_t hl;
    const char *host = !high && st->hp_host ? http_header_value(req, "host", &hl) : NULL;
    if (host && pb_regex_match(st->hp_host, host, hl))
        high = true;
    pthread_mutex_unlock(&pb_plugin_lock);
    if (high)
        cl->prio = 0;
    return PB_HOOK_CONTINUE;
}

static int hp_set(struct pb_service *svc, const char *key, const char *val, char *err, size_t errlen)
{
    bool uri = !strcasecmp(key, "uri_pattern"), host = !strcasecmp(key, "host_pattern");
    if (!uri && !host) {
        snprintf(err, errlen, "Plugin understands: uri_pattern, host_pattern");
        return -1;
    }
    struct plug_state *st = pb_plugin_state(svc);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct pb_regex *re = NULL;
    if (!is_undef(val) && !(re = pb_regex_compile(val, err, errlen))) {
        snprintf(err, errlen, "Invalid regular expression");
        return -1;
    }
    pthread_mutex_lock(&pb_plugin_lock);
    struct pb_regex **slot = uri ? &st->hp_uri : &st->hp_host;
    struct pb_regex *old = *slot;
    *slot = re;
    if (uri)
        st->hp_uri_set = true;
    pthread_mutex_unlock(&pb_plugin_lock);
    pb_regex_free(old); /* matched only under pb_plugin_lock */
    return 0;
}

static bool uses_highpri(struct pb_service *s)
{
    for (int i = 0; i < s->nplugins; i++)
        if (!strcmp(s->plugins[i], "highpri"))
            return true;
    return false;
}

static int hp_command(const char *svcname, int argc, const char *const *argv, void (*out)(void *, const char *),
                      void *arg, char *err, size_t errlen)
{
    (void)svcname;
    (void)argc;
    (void)argv;
    (void)err;
    (void)errlen;
    char line[1200];
    out(arg, "High priority pattern buffer:");
    for (struct pb_service *s = pb_services; s; s = s->next) {
        if (!uses_highpri(s))
            continue;
        struct plug_state *st = pb_plugin_state(s);
        if (!st)
            continue;
        pthread_mutex_lock(&pb_plugin_lock);
        snprintf(line, sizeof line, "SET %s.highpri.uri_pattern = %s", s->name,
                 st->hp_uri_set ? (st->hp_uri ? pb_regex_source(st->hp_uri) : "undef") : HP_DEFAULT_URI);
        out(arg, line);
        snprintf(line, sizeof line, "SET %s.highpri.host_pattern = %s", s->name,
                 st->hp_host ? pb_regex_source(st->hp_host) : "undef");
        pthread_mutex_unlock(&pb_plugin_lock);
        out(arg, line);
    }
    out(arg, ".");
    return 0;
}

static const char *const hp_cmds[] = { "patterns", NULL };
const struct pb_plugin pb_plugin_highpri = {
    .name = "highpri", .start_request = hp_start, .set_param = hp_set, .commands = hp_cmds, .command = hp_command
};
