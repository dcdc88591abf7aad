/* plugins/queues.c: Perlbal's queues plugin — X-Queue-Count/-Age and X-HP-Queue-Count/-Age request headers to backends.
 */
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

static void queues_assigned(struct pb_service *svc, struct pb_client *cl, struct evbuffer *hdrs)
{
    struct pb_svc_loop *l = &svc->loops[cl->loop_index];
    int64_t now = pb_now_ms();
    evbuffer_add_printf(hdrs,
                        "X-Queue-Count: %d\r\nX-Queue-Age: %lld\r\nX-HP-Queue-Count: %d\r\nX-HP-Queue-Age: %lld\r\n",
                        l->pool.qlen[1], (long long)(pool_queue_age_ms(&l->pool, 1, now) / 1000), l->pool.qlen[0],
                        (long long)(pool_queue_age_ms(&l->pool, 0, now) / 1000));
}

const struct pb_plugin pb_plugin_queues = { .name = "queues", .backend_assigned = queues_assigned };
