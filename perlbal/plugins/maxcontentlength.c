/* plugins/maxcontentlength.c: Perlbal's maxcontentlength plugin — SET max_content_length = N: 413 for a larger
 * Content-Length. */
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

static enum pb_hook_result maxlen_start(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    (void)req;
    if (!svc->max_content_length || cl->h->body != HTTP_BODY_LENGTH)
        return PB_HOOK_CONTINUE;
    if (cl->h->body_remaining <= svc->max_content_length)
        return PB_HOOK_CONTINUE;
    cl->h->keep_alive = false;
    pb_client_error(cl, 413, "Content too long.");
    return PB_HOOK_HANDLED;
}

const struct pb_plugin pb_plugin_maxcontentlength = { .name = "maxcontentlength", .start_request = maxlen_start };
