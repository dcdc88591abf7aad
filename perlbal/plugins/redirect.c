/* plugins/redirect.c: Perlbal's redirect plugin — REDIRECT HOST <match> <target>: 301 to http://target/uri. */
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
    struct plug_state *st = pb_plugin_state(svc);
    if (!st)
        return PB_HOOK_CONTINUE;
    char host[160] = "", target[128];
    if (req->host_index >= 0) {
        const struct http_header *h = &req->headers[req->host_index];
        size_t n = h->value_len < sizeof host - 1 ? h->value_len : sizeof host - 1;
        for (size_t i = 0; i < n; i++)
            host[i] = (char)tolower((unsigned char)h->value[i]);
        host[n] = 0;
        char *colon = strrchr(host, ':');
        if (colon && !strchr(host, ']'))
            *colon = 0;
    }
    const char *found = NULL;
    pthread_mutex_lock(&pb_plugin_lock);
    if (host[0]) {
        found = redirect_lookup(st, host, target, sizeof target);
        /* "*.host", then drop one label at a time: "*.b.c", "*.c" */
        char wild[170];
        snprintf(wild, sizeof wild, "*.%s", host);
        char *w = wild;
        while (!found) {
            found = redirect_lookup(st, w, target, sizeof target);
            char *dot = strchr(w + 2, '.');
            if (found || !dot)
                break;
            w = dot - 1;
            *w = '*';
        }
    }
    if (!found)
        found = redirect_lookup(st, "*", target, sizeof target);
    pthread_mutex_unlock(&pb_plugin_lock);
    if (!found)
        return PB_HOOK_CONTINUE;
    char extra[512];
    snprintf(extra, sizeof extra, "Location: http://%s%s\r\n", target, cl->target ? cl->target : "/");
    bool keep = pb_client_can_persist(cl) && (cl->h->body == HTTP_BODY_NONE || cl->h->body_done);
    pb_client_response_head(cl, 301, NULL, 0, keep, extra);
    pb_client_done(cl, keep);
    return PB_HOOK_HANDLED;
}

static int redirect_command(const char *svcname, int argc, const char *const *argv, void (*out)(void *, const char *),
                            void *arg, char *err, size_t errlen)
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
    struct plug_state *st = pb_plugin_state(svc);
    if (!st || strlen(argv[2]) >= sizeof st->redirects[0].match || strlen(argv[3]) >= sizeof st->redirects[0].target) {
        snprintf(err, errlen, "host name too long");
        return -1;
    }
    int rc = 0;
    pthread_mutex_lock(&pb_plugin_lock);
    int i;
    for (i = 0; i < st->nredirects; i++)
        if (!strcmp(st->redirects[i].match, argv[2]))
            break;
    if (i == MAX_REDIRECTS) {
        snprintf(err, errlen, "too many redirects (max %d)", MAX_REDIRECTS);
        rc = -1;
    } else {
        snprintf(st->redirects[i].match, sizeof st->redirects[i].match, "%s", argv[2]);
        snprintf(st->redirects[i].target, sizeof st->redirects[i].target, "%s", argv[3]);
        if (i == st->nredirects)
            st->nredirects++;
    }
    pthread_mutex_unlock(&pb_plugin_lock);
    return rc;
}

static const char *const redirect_cmds[] = { "redirect", NULL };
const struct pb_plugin pb_plugin_redirect = {
    .name = "redirect", .start_request = redirect_start, .commands = redirect_cmds, .command = redirect_command
};
