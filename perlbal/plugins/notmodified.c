/* plugins/notmodified.c: Perlbal's notmodified plugin — SET svc.notmodified.host_pattern = regex (Perl's, PCRE2): 304
 * to any If-Modified-Since. */
#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
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
#include "perlbal/regex.h"

static enum pb_hook_result notmod_start(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    struct plug_state *st = pb_plugin_state(svc);
    if (!st || !st->host_re || req->host_index < 0 || http_find_header(req, "if-modified-since") < 0)
        return PB_HOOK_CONTINUE;
    const struct http_header *h = &req->headers[req->host_index];
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(h->value_len < 255 ? h->value_len : 255), h->value);
    pthread_mutex_lock(&pb_plugin_lock);
    bool match = st->host_re && pb_regex_match(st->host_re, host, strlen(host));
    pthread_mutex_unlock(&pb_plugin_lock);
    if (!match)
        return PB_HOOK_CONTINUE;
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
    struct plug_state *st = pb_plugin_state(svc);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct pb_regex *re = NULL;
    if (*val && !(re = pb_regex_compile(val, err, errlen)))
        return -1;
    pthread_mutex_lock(&pb_plugin_lock);
    struct pb_regex *old = st->host_re;
    st->host_re = re;
    pthread_mutex_unlock(&pb_plugin_lock);
    pb_regex_free(old); /* matched only under pb_plugin_lock */
    return 0;
}

const struct pb_plugin pb_plugin_notmodified = { .name = "notmodified",
                                                 .start_request = notmod_start,
                                                 .set_param = notmod_set };
