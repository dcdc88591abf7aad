/* plugins/stats.c: Perlbal's stats plugin — the `stats` and `recent` console commands and their counters. */
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
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"

static enum pb_hook_result stats_start(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    (void)req;
    (void)cl;
    struct plug_state *st = pb_plugin_state(svc);
    if (st && svc->role == PB_ROLE_WEB_SERVER)
        atomic_fetch_add(&st->web_requests, 1);
    return PB_HOOK_CONTINUE;
}

static void stats_assigned(struct pb_service *svc, struct pb_client *cl, struct evbuffer *hdrs)
{
    (void)hdrs;
    struct plug_state *st = pb_plugin_state(svc);
    if (!st)
        return;
    atomic_fetch_add(cl->prio == 0 ? &st->proxy_requests_highpri : &st->proxy_requests, 1);
    cl->plugin_t0_ms = pb_now_ms();
}

static void stats_response(struct pb_service *svc, struct pb_client *cl, int status)
{
    (void)status;
    struct plug_state *st = pb_plugin_state(svc);
    if (!st || !cl->plugin_t0_ms)
        return;
    double secs = (double)(pb_now_ms() - cl->plugin_t0_ms) / 1000.0;
    cl->plugin_t0_ms = 0;
    pthread_mutex_lock(&pb_plugin_lock);
    snprintf(st->recent[st->recent_next], sizeof st->recent[0], "%-6.4f %.150s", secs, cl->target ? cl->target : "");
    st->recent_next = (st->recent_next + 1) % RECENT_MAX;
    if (st->recent_count < RECENT_MAX)
        st->recent_count++;
    pthread_mutex_unlock(&pb_plugin_lock);
}

static void stats_file(struct pb_service *svc, struct pb_client *cl, bool reproxied)
{
    (void)cl;
    struct plug_state *st = pb_plugin_state(svc);
    if (!st)
        return;
    atomic_fetch_add(&st->files_sent, 1);
    if (reproxied)
        atomic_fetch_add(&st->files_reproxied, 1);
}

static bool service_uses(struct pb_service *s, const char *plugin)
{
    for (int i = 0; i < s->nplugins; i++)
        if (!strcmp(s->plugins[i], plugin))
            return true;
    return false;
}

static int stats_command(const char *svcname, int argc, const char *const *argv, void (*out)(void *, const char *),
                         void *arg, char *err, size_t errlen)
{
    (void)svcname;
    (void)err;
    (void)errlen;
    char line[256];
    if (!strcmp(argv[0], "recent")) {
        for (struct pb_service *s = pb_services; s; s = s->next) {
            if (!service_uses(s, "stats") || !s->plugin_state)
                continue;
            struct plug_state *st = s->plugin_state;
            pthread_mutex_lock(&pb_plugin_lock);
            for (int i = 0; i < st->recent_count; i++) {
                int idx = (st->recent_next - st->recent_count + i + RECENT_MAX) % RECENT_MAX;
                snprintf(line, sizeof line, "%s %s", s->name, st->recent[idx]);
                out(arg, line);
            }
            pthread_mutex_unlock(&pb_plugin_lock);
        }
        out(arg, ".");
        return 0;
    }
    (void)argc;
    static const char *const keys[] = { "files_reproxied", "files_sent", "proxy_requests", "proxy_requests_highpri",
                                        "web_requests" };
    uint64_t total[5] = { 0 };
    for (struct pb_service *s = pb_services; s; s = s->next) {
        if (!service_uses(s, "stats"))
            continue;
        struct plug_state *st = pb_plugin_state(s);
        if (!st)
            continue;
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

static const char *const stats_cmds[] = { "stats", "recent", NULL };
const struct pb_plugin pb_plugin_stats = { .name = "stats",
                                           .start_request = stats_start,
                                           .backend_assigned = stats_assigned,
                                           .response_head = stats_response,
                                           .file_sent = stats_file,
                                           .commands = stats_cmds,
                                           .command = stats_command };
