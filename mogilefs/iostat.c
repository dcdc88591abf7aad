/* iostat: the tracker follows each storage node's side-channel "watch"
 * stream (one line "devN<TAB>utilization" per device each second, then
 * "."), on the node-HTTP loop (loop 1) with common/conn, as MogileFS's
 * monitor follows mogstored's iostat stream. The set of connections
 * follows the host cache once a second: alive and readonly hosts get one,
 * others lose theirs; a connection that fails or ends is tried again 5
 * seconds later. Everything here runs on that loop's thread. */
#include "mogilefs/mogilefs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/log.h"
#include "common/loop.h"

#define IOSTAT_MAX_HOSTS 1024
#define IOSTAT_MAX_LINE 1024

struct iostat_host {
    int64_t hostid;
    char ip[64];
    struct core_conn *c; /* NULL: not connected */
    time_t retry_at;
    bool seen; /* still in the cache this round */
};

static struct {
    struct core_loop *loop;
    struct event *tick;
    struct iostat_host *h;
    size_t n;
} I;

static void io_line(struct iostat_host *ih, const char *line)
{
    if (strncmp(line, "dev", 3))
        return; /* "." ends a round */
    const char *tab = strchr(line, '\t');
    if (!tab)
        return;
    int64_t devid = strtoll(line + 3, NULL, 10);
    double util = strtod(tab + 1, NULL);
    struct mog_device d;
    if (devid <= 0 || mog_device_by_id(devid, &d) < 0 || d.hostid != ih->hostid)
        return; /* a folder the tracker does not know on that host */
    mog_device_set_utilization(devid, util);
    stats_counter_add(&mog.n.iostat_updates, 1);
}

static int io_read(struct core_conn *c)
{
    struct iostat_host *ih = c->data;
    struct evbuffer *in = conn_in(c);
    char *line;
    size_t len;
    while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) != NULL) {
        io_line(ih, line);
        free(line);
    }
    /* A line that long is not mogstored's: drop the stream. */
    return evbuffer_get_length(in) > IOSTAT_MAX_LINE ? -1 : 0;
}

static void io_connected(struct core_conn *c, bool ok)
{
    if (ok)
        evbuffer_add(conn_out(c), "watch\r\n", 7);
}

static void io_closed(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    struct iostat_host *ih = c->data;
    if (ih) {
        ih->c = NULL;
        ih->retry_at = time(NULL) + 5;
    }
}

static const struct conn_ops io_ops = {
    .name = "mogilefsd-iostat",
    .on_read = io_read,
    .on_connect = io_connected,
    .on_close = io_closed,
};

static struct iostat_host *find(int64_t hostid)
{
    for (size_t i = 0; i < I.n; i++)
        if (I.h[i].hostid == hostid)
            return &I.h[i];
    return NULL;
}

/* Once a second: match the connections to the alive hosts. */
static void io_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (loop_stopping())
        return;
    struct mog_host *hs;
    size_t nh = mog_hosts_copy(&hs);
    time_t now = time(NULL);
    for (size_t i = 0; i < I.n; i++)
        I.h[i].seen = false;
    for (size_t i = 0; i < nh; i++) {
        if (hs[i].status != MOG_HOST_ALIVE && hs[i].status != MOG_HOST_READONLY)
            continue;
        struct iostat_host *ih = find(hs[i].hostid);
        if (ih && strcmp(ih->ip, hs[i].ip) && ih->c) {
            conn_close(ih->c); /* the host moved */
            ih->retry_at = 0;
        }
        if (!ih && I.n < IOSTAT_MAX_HOSTS) {
            ih = &I.h[I.n++];
            memset(ih, 0, sizeof *ih);
            ih->hostid = hs[i].hostid;
        }
        if (!ih)
            continue;
        snprintf(ih->ip, sizeof ih->ip, "%s", hs[i].ip);
        ih->seen = true;
        if (!ih->c && now >= ih->retry_at) {
            int port = atoi(mog.cfg.mogstored_stream_port ? mog.cfg.mogstored_stream_port : "7501");
            ih->c = conn_connect_host(I.loop, ih->ip, port, &io_ops, ih);
            if (ih->c)
                conn_set_timeouts(ih->c, 0, (uint32_t)(mog.cfg.node_timeout * 1000));
            else
                ih->retry_at = now + 5;
        }
    }
    free(hs);
    /* Hosts gone or no longer alive: their streams end. */
    for (size_t i = 0; i < I.n; i++)
        if (!I.h[i].seen && I.h[i].c) {
            struct core_conn *c = I.h[i].c;
            c->data = NULL;
            I.h[i].c = NULL;
            conn_close(c);
        }
}

static void io_start(void *arg)
{
    (void)arg;
    I.tick = event_new(I.loop->base, -1, EV_PERSIST, io_tick, NULL);
    struct timeval tv = { 1, 0 };
    if (I.tick)
        event_add(I.tick, &tv);
    io_tick(-1, 0, NULL);
}

int mog_iostat_start(struct core_loop *loop)
{
    I.loop = loop;
    I.h = calloc(IOSTAT_MAX_HOSTS, sizeof *I.h);
    if (!I.h)
        return -1;
    return loop_call(loop, io_start, NULL);
}

/* After the loops stopped (their conns are closed by then). */
void mog_iostat_stop(void)
{
    if (I.tick)
        event_free(I.tick);
    I.tick = NULL;
    free(I.h);
    I.h = NULL;
    I.n = 0;
}
