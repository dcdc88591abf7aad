/* libgm: Gearman client and worker; see libgm.h.
 *
 * Owns the server list (connect, fail over, dead-server retry), the client
 * task machinery (submit to every server, then poll them all for results)
 * and the worker loop (GRAB_JOB_UNIQ / PRE_SLEEP / NOOP). Packets are
 * framed and parsed by gearmand/proto.c, the same pure code the server
 * uses. Sockets, buffers and dead marking are common/client's; waits are
 * poll() with the caller's timeouts. */
#include "gearmand/client/libgm.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/client.h"
#include "common/hash.h"
#include "gearmand/proto.h"

#define MAX_SERVERS 64
#define MAX_REPLY (1u << 30)

/* ---- servers -------------------------------------------------------------- */

struct task;

struct srv {
    struct client_server k;               /* common/client: socket, input buffer, dead marking */
    bool registered;                      /* worker: CAN_DOs sent on this connection */
    struct task *await_head, *await_tail; /* client: submits waiting for JOB_CREATED */
};

struct pool {
    struct srv srv[MAX_SERVERS];
    int n;
    int connect_ms, timeout_ms, retry_ms;
    unsigned rr;
    bool client; /* send OPTION_REQ exceptions on connect */
    char err[400];
};

static int64_t now_ms(void) { return (int64_t)client_now_ms(); }

static int pool_init(struct pool *p, const char *servers, const struct gm_client_options *o, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->connect_ms = o && o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 1000;
    p->timeout_ms = o && o->timeout_ms > 0 ? o->timeout_ms : 0;
    p->retry_ms = o && o->retry_interval_ms > 0 ? o->retry_interval_ms : 2000;
    struct client_server *list = NULL;
    int n = client_parse_servers(servers, GM_DEFAULT_PORT, false, &list, err, errlen);
    if (n < 0)
        return -1;
    if (n > MAX_SERVERS) {
        snprintf(err, errlen, "too many job servers (at most %d)", MAX_SERVERS);
        client_servers_free(list, n);
        return -1;
    }
    for (int i = 0; i < n; i++)
        p->srv[i].k = list[i]; /* the kit's servers, moved: nothing allocated yet */
    free(list);
    p->n = n;
    return 0;
}

/* Drop the connection; dead: a failure, so keep away for retry_ms. */
static void srv_close(struct pool *p, struct srv *s, bool dead)
{
    if (dead)
        client_failed(&s->k, 1, p->retry_ms);
    else
        client_close(&s->k);
    s->registered = false;
}

static void pool_free(struct pool *p)
{
    for (int i = 0; i < p->n; i++) {
        client_close(&p->srv[i].k);
        free(p->srv[i].k.in);
    }
}

static int srv_send(struct pool *p, struct srv *s, uint32_t cmd, int argc, const void *const *args, const size_t *lens);

static int srv_connect(struct pool *p, struct srv *s)
{
    if (s->k.fd >= 0)
        return 0;
    int rc = client_connect(&s->k, p->connect_ms);
    if (rc != CLIENT_OK) {
        snprintf(p->err, sizeof p->err, "%s", s->k.error);
        if (rc != CLIENT_DEAD)
            client_failed(&s->k, 1, p->retry_ms);
        return -1;
    }
    client_ok(&s->k);
    if (p->client) {
        const void *a[1] = { "exceptions" };
        size_t l[1] = { 10 };
        if (srv_send(p, s, GM_OPTION_REQ, 1, a, l) < 0)
            return -1;
    }
    return 0;
}

static int srv_send(struct pool *p, struct srv *s, uint32_t cmd, int argc, const void *const *args, const size_t *lens)
{
    char small[4096];
    size_t need = gm_encode(small, sizeof small, GM_REQ, cmd, argc, args, lens);
    char *buf = small;
    if (need > sizeof small) {
        buf = malloc(need);
        if (!buf)
            return -1;
        gm_encode(buf, need, GM_REQ, cmd, argc, args, lens);
    }
    int rc = client_send_all(&s->k, buf, need, client_deadline(p->timeout_ms));
    if (buf != small)
        free(buf);
    if (rc != CLIENT_OK) {
        snprintf(p->err, sizeof p->err, "%s", s->k.error);
        srv_close(p, s, true);
        return -1;
    }
    return 0;
}

/* Read what the socket has (it was polled readable). 1 ok, 0 EOF, -1 error. */
static int srv_fill(struct pool *p, struct srv *s)
{
    int rc = client_fill(&s->k);
    if (rc == CLIENT_OK)
        return 1;
    snprintf(p->err, sizeof p->err, "%s", s->k.error);
    return rc == CLIENT_CLOSED ? 0 : -1;
}

/* The next whole packet in the buffer: 1 got one, 0 need more, -1 garbage.
 * The packet points into the buffer: valid until the next read on s. */
static int srv_next(struct pool *p, struct srv *s, struct gm_packet *pk)
{
    size_t avail = 0, used = 0;
    const char *in = client_buffered(&s->k, &avail);
    if (avail == 0)
        return 0;
    enum gm_parse_status st = gm_parse_packet(in, avail, MAX_REPLY, pk, &used);
    if (st == GM_PARSE_NEED_MORE)
        return 0;
    if (st != GM_PARSE_OK || pk->magic != GM_RES) {
        snprintf(p->err, sizeof p->err, "%s: bad reply from server", s->k.name);
        return -1;
    }
    client_consume(&s->k, used);
    return 1;
}

/* Wait for one packet from s. 1 got one, 0 timeout, -1 connection gone. */
static int srv_read(struct pool *p, struct srv *s, struct gm_packet *pk, int timeout_ms)
{
    uint64_t deadline = client_deadline(timeout_ms);
    for (;;) {
        int r = srv_next(p, s, pk);
        if (r != 0) {
            if (r < 0)
                srv_close(p, s, true);
            return r;
        }
        int rc = client_read_more(&s->k, deadline);
        if (rc == CLIENT_TIMEOUT)
            return 0;
        if (rc != CLIENT_OK) {
            snprintf(p->err, sizeof p->err, "%s", s->k.error);
            srv_close(p, s, true);
            return -1;
        }
    }
}

static void copy_arg(char *dst, size_t cap, const struct gm_packet *pk, int i)
{
    size_t n = i < pk->argc ? pk->arg_len[i] : 0;
    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(dst, pk->arg[i], n);
    dst[n] = '\0';
}

static uint32_t arg_u32(const struct gm_packet *pk, int i)
{
    uint64_t v = 0;
    if (i >= pk->argc || gm_parse_u64(pk->arg[i], pk->arg_len[i], UINT32_MAX, &v) < 0)
        return 0;
    return (uint32_t)v;
}

/* ---- client ------------------------------------------------------------------ */

enum task_state { T_NEW, T_SENT, T_CREATED, T_DONE };

struct task {
    struct task *next, *anext;
    enum task_state state;
    int srv;
    char *function, *unique;
    char *data;
    size_t len;
    enum gm_client_prio prio;
    bool bg;
    struct gm_client_task_fns fns;
    void *arg;
    char handle[GM_CLIENT_HANDLE_MAX];
};

struct gm_client {
    struct pool p;
    struct task *head, *tail;
    int first_rc;
};

struct gm_client *gm_client_new(const char *servers, const struct gm_client_options *opts, char *err, size_t errlen)
{
    struct gm_client *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (pool_init(&c->p, servers, opts, err, errlen) < 0) {
        free(c);
        return NULL;
    }
    c->p.client = true;
    return c;
}

static void task_free(struct task *t)
{
    free(t->function);
    free(t->unique);
    free(t->data);
    free(t);
}

void gm_client_free(struct gm_client *c)
{
    if (!c)
        return;
    for (struct task *t = c->head, *n; t; t = n) {
        n = t->next;
        task_free(t);
    }
    pool_free(&c->p);
    free(c);
}

const char *gm_client_error(const struct gm_client *c) { return c->p.err; }

const char *gm_client_rc_name(int rc)
{
    static const char *const names[] = { "OK",        "WORK_FAIL", "WORK_EXCEPTION", "SERVER_ERROR", "TIMEOUT",
                                         "NO_SERVER", "LOST",      "BAD_ARGUMENT",   "NO_MEMORY",    "PROTOCOL" };
    return rc >= 0 && rc < (int)(sizeof names / sizeof names[0]) ? names[rc] : "UNKNOWN";
}

int gm_client_add_task(struct gm_client *c, const char *function, const char *unique, const void *data, size_t len,
                       enum gm_client_prio prio, bool background, const struct gm_client_task_fns *fns, void *arg)
{
    if (!function || !*function || strlen(function) > GM_MAX_FUNCTION || (unique && strlen(unique) > GM_MAX_UNIQUE)) {
        snprintf(c->p.err, sizeof c->p.err, "function name empty/too long or unique key too long");
        return GM_CLIENT_BAD_ARGUMENT;
    }
    struct task *t = calloc(1, sizeof *t);
    if (!t)
        return GM_CLIENT_NO_MEMORY;
    t->function = strdup(function);
    t->unique = strdup(unique ? unique : "");
    t->data = malloc(len ? len : 1);
    if (!t->function || !t->unique || !t->data) {
        task_free(t);
        return GM_CLIENT_NO_MEMORY;
    }
    if (len)
        memcpy(t->data, data, len);
    t->len = len;
    t->prio = prio;
    t->bg = background;
    if (fns)
        t->fns = *fns;
    t->arg = arg;
    t->srv = -1;
    if (c->tail)
        c->tail->next = t;
    else
        c->head = t;
    c->tail = t;
    return GM_CLIENT_OK;
}

static void task_done(struct gm_client *c, struct task *t, int rc, const void *data, size_t len)
{
    if (t->state == T_DONE)
        return;
    t->state = T_DONE;
    if (rc != GM_CLIENT_OK && rc != GM_CLIENT_WORK_FAIL && rc != GM_CLIENT_WORK_EXCEPTION && !c->first_rc)
        c->first_rc = rc;
    if (t->fns.done)
        t->fns.done(rc, data, len, t->arg);
}

/* Server for a task: CRC-32 of the unique key (or round robin), then the
 * next live ones in order. -1 if none can be reached. */
static int pick_server(struct gm_client *c, struct task *t)
{
    struct pool *p = &c->p;
    unsigned start = t->unique[0] ? hash_crc32(t->unique, strlen(t->unique)) : p->rr++;
    for (int k = 0; k < p->n; k++) {
        int i = (int)((start + (unsigned)k) % (unsigned)p->n);
        if (srv_connect(p, &p->srv[i]) == 0)
            return i;
    }
    return -1;
}

static uint32_t submit_cmd(const struct task *t)
{
    static const uint32_t fg[3] = { GM_SUBMIT_JOB, GM_SUBMIT_JOB_HIGH, GM_SUBMIT_JOB_LOW };
    static const uint32_t bg[3] = { GM_SUBMIT_JOB_BG, GM_SUBMIT_JOB_HIGH_BG, GM_SUBMIT_JOB_LOW_BG };
    int i = t->prio >= 0 && t->prio <= 2 ? (int)t->prio : 0;
    return t->bg ? bg[i] : fg[i];
}

static void await_push(struct srv *s, struct task *t)
{
    t->anext = NULL;
    if (s->await_tail)
        s->await_tail->anext = t;
    else
        s->await_head = t;
    s->await_tail = t;
}

static struct task *await_pop(struct srv *s)
{
    struct task *t = s->await_head;
    if (t) {
        s->await_head = t->anext;
        if (!s->await_head)
            s->await_tail = NULL;
    }
    return t;
}

/* Connection to server i is gone: submits not yet acknowledged go to another
 * server; running foreground jobs are lost. */
static void server_lost(struct gm_client *c, int i)
{
    struct srv *s = &c->p.srv[i];
    srv_close(&c->p, s, true);
    s->await_head = s->await_tail = NULL;
    for (struct task *t = c->head; t; t = t->next) {
        if (t->srv != i)
            continue;
        if (t->state == T_SENT) {
            t->state = T_NEW;
            t->srv = -1;
        } else if (t->state == T_CREATED)
            task_done(c, t, GM_CLIENT_LOST, NULL, 0);
    }
}

static struct task *find_created(struct gm_client *c, int i, const struct gm_packet *pk)
{
    for (struct task *t = c->head; t; t = t->next)
        if (t->srv == i && t->state == T_CREATED && strlen(t->handle) == pk->arg_len[0] &&
            !memcmp(t->handle, pk->arg[0], pk->arg_len[0]))
            return t;
    return NULL;
}

static void client_packet(struct gm_client *c, int i, const struct gm_packet *pk)
{
    struct srv *s = &c->p.srv[i];
    struct task *t;
    switch (pk->cmd) {
    case GM_JOB_CREATED:
        t = await_pop(s);
        if (!t)
            break;
        copy_arg(t->handle, sizeof t->handle, pk, 0);
        if (t->state == T_DONE)
            break;
        t->state = T_CREATED;
        if (t->fns.created)
            t->fns.created(t->handle, t->arg);
        if (t->bg)
            task_done(c, t, GM_CLIENT_OK, NULL, 0);
        break;
    case GM_ERROR:
        snprintf(c->p.err, sizeof c->p.err, "%.*s: %.*s", (int)pk->arg_len[0], pk->arg[0],
                 (int)(pk->argc > 1 ? pk->arg_len[1] : 0), pk->argc > 1 ? pk->arg[1] : "");
        t = await_pop(s);
        if (t)
            task_done(c, t, GM_CLIENT_SERVER_ERROR, NULL, 0);
        break;
    case GM_WORK_DATA:
    case GM_WORK_WARNING:
    case GM_WORK_STATUS:
    case GM_WORK_COMPLETE:
    case GM_WORK_FAIL:
    case GM_WORK_EXCEPTION:
        t = find_created(c, i, pk);
        if (!t)
            break;
        if (pk->cmd == GM_WORK_DATA && t->fns.data)
            t->fns.data(pk->arg[1], pk->arg_len[1], t->arg);
        else if (pk->cmd == GM_WORK_WARNING && t->fns.warning)
            t->fns.warning(pk->arg[1], pk->arg_len[1], t->arg);
        else if (pk->cmd == GM_WORK_STATUS && t->fns.status)
            t->fns.status(arg_u32(pk, 1), arg_u32(pk, 2), t->arg);
        else if (pk->cmd == GM_WORK_COMPLETE)
            task_done(c, t, GM_CLIENT_OK, pk->arg[1], pk->arg_len[1]);
        else if (pk->cmd == GM_WORK_FAIL)
            task_done(c, t, GM_CLIENT_WORK_FAIL, NULL, 0);
        else if (pk->cmd == GM_WORK_EXCEPTION)
            task_done(c, t, GM_CLIENT_WORK_EXCEPTION, pk->arg[1], pk->arg_len[1]);
        break;
    default: break; /* OPTION_RES, NOOP, ... */
    }
}

static void reap_done(struct gm_client *c)
{
    struct task **pp = &c->head;
    c->tail = NULL;
    while (*pp) {
        struct task *t = *pp;
        if (t->state == T_DONE) {
            *pp = t->next;
            task_free(t);
        } else {
            c->tail = t;
            pp = &t->next;
        }
    }
}

static bool any_active(struct gm_client *c)
{
    for (struct task *t = c->head; t; t = t->next)
        if (t->state != T_DONE)
            return true;
    return false;
}

int gm_client_run_tasks(struct gm_client *c)
{
    struct pool *p = &c->p;
    c->first_rc = 0;
    int64_t deadline = p->timeout_ms ? now_ms() + p->timeout_ms : 0;
    for (;;) {
        /* send what is new; a send that fails re-opens the tasks already
         * sent to that server, so go round until none is new */
        bool again = true;
        while (again) {
            again = false;
            for (struct task *t = c->head; t; t = t->next) {
                while (t->state == T_NEW) {
                    int i = pick_server(c, t);
                    if (i < 0) {
                        task_done(c, t, GM_CLIENT_NO_SERVER, NULL, 0);
                        break;
                    }
                    const void *a[3] = { t->function, t->unique, t->data };
                    size_t l[3] = { strlen(t->function), strlen(t->unique), t->len };
                    if (srv_send(p, &p->srv[i], submit_cmd(t), 3, a, l) < 0) {
                        server_lost(c, i);
                        again = true;
                        continue;
                    }
                    t->state = T_SENT;
                    t->srv = i;
                    t->handle[0] = '\0';
                    await_push(&p->srv[i], t);
                }
            }
        }
        reap_done(c);
        if (!any_active(c))
            break;
        struct pollfd pf[MAX_SERVERS];
        int idx[MAX_SERVERS], n = 0;
        for (int i = 0; i < p->n; i++)
            if (p->srv[i].k.fd >= 0) {
                pf[n] = (struct pollfd){ .fd = p->srv[i].k.fd, .events = POLLIN };
                idx[n++] = i;
            }
        int wait = -1;
        if (deadline) {
            int64_t left = deadline - now_ms();
            wait = left > 0 ? (int)left : 0;
        }
        int pr = n ? poll(pf, (nfds_t)n, wait) : 0;
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            snprintf(p->err, sizeof p->err, n ? "timed out" : "no connection left");
            for (struct task *t = c->head; t; t = t->next)
                task_done(c, t, n ? GM_CLIENT_TIMEOUT : GM_CLIENT_LOST, NULL, 0);
            /* the servers still owe replies for these: start afresh */
            for (int i = 0; i < p->n; i++)
                if (p->srv[i].await_head)
                    server_lost(c, i);
            reap_done(c);
            break;
        }
        for (int k = 0; k < n; k++) {
            if (!pf[k].revents)
                continue;
            int i = idx[k];
            struct srv *s = &p->srv[i];
            if (srv_fill(p, s) <= 0) {
                server_lost(c, i);
                continue;
            }
            struct gm_packet pk;
            int r;
            while ((r = srv_next(p, s, &pk)) == 1)
                client_packet(c, i, &pk);
            if (r < 0)
                server_lost(c, i);
        }
    }
    return c->first_rc;
}

/* gm_client_do: gather WORK_DATA chunks and the final payload. */
struct do_state {
    char *buf;
    size_t len, cap;
    int rc;
    bool oom;
    char handle[GM_CLIENT_HANDLE_MAX];
};

static void do_append(struct do_state *d, const void *data, size_t len)
{
    if (d->len + len + 1 > d->cap) {
        size_t cap = (d->len + len + 1) * 2;
        char *n = realloc(d->buf, cap);
        if (!n) {
            d->oom = true;
            return;
        }
        d->buf = n;
        d->cap = cap;
    }
    if (len)
        memcpy(d->buf + d->len, data, len);
    d->len += len;
    d->buf[d->len] = '\0';
}

static void do_data(const void *data, size_t len, void *arg) { do_append(arg, data, len); }

static void do_done(int rc, const void *data, size_t len, void *arg)
{
    struct do_state *d = arg;
    d->rc = rc;
    if (rc == GM_CLIENT_OK || rc == GM_CLIENT_WORK_EXCEPTION)
        do_append(d, data, len);
}

static void do_created(const char *handle, void *arg)
{
    struct do_state *d = arg;
    snprintf(d->handle, sizeof d->handle, "%s", handle);
}

int gm_client_do(struct gm_client *c, const char *function, const char *unique, const void *data, size_t len,
                 enum gm_client_prio prio, void **result, size_t *result_len)
{
    struct do_state d = { .rc = GM_CLIENT_PROTOCOL };
    static const struct gm_client_task_fns fns = { .data = do_data, .done = do_done };
    int rc = gm_client_add_task(c, function, unique, data, len, prio, false, &fns, &d);
    if (rc != GM_CLIENT_OK)
        return rc;
    gm_client_run_tasks(c);
    if (d.oom)
        d.rc = GM_CLIENT_NO_MEMORY;
    if (result && (d.rc == GM_CLIENT_OK || d.rc == GM_CLIENT_WORK_EXCEPTION)) {
        if (!d.buf)
            do_append(&d, "", 0);
        *result = d.buf;
        if (result_len)
            *result_len = d.len;
    } else
        free(d.buf);
    return d.rc;
}

int gm_client_do_background(struct gm_client *c, const char *function, const char *unique, const void *data, size_t len,
                            enum gm_client_prio prio, char *handle)
{
    struct do_state d = { .rc = GM_CLIENT_PROTOCOL };
    static const struct gm_client_task_fns fns = { .created = do_created, .done = do_done };
    int rc = gm_client_add_task(c, function, unique, data, len, prio, true, &fns, &d);
    if (rc != GM_CLIENT_OK)
        return rc;
    gm_client_run_tasks(c);
    free(d.buf);
    if (handle)
        snprintf(handle, GM_CLIENT_HANDLE_MAX, "%s", d.handle);
    return d.rc;
}

/* One request/reply on every live server, for status and echo (no tasks may
 * be in flight: this reads the connection directly). */
int gm_client_status(struct gm_client *c, const char *handle, struct gm_client_status *st)
{
    struct pool *p = &c->p;
    memset(st, 0, sizeof *st);
    bool answered = false;
    for (int i = 0; i < p->n; i++) {
        struct srv *s = &p->srv[i];
        if (srv_connect(p, s) < 0)
            continue;
        const void *a[1] = { handle };
        size_t l[1] = { strlen(handle) };
        if (srv_send(p, s, GM_GET_STATUS, 1, a, l) < 0)
            continue;
        struct gm_packet pk;
        int r;
        while ((r = srv_read(p, s, &pk, p->timeout_ms ? p->timeout_ms : 5000)) == 1 && pk.cmd != GM_STATUS_RES)
            ;
        if (r != 1) {
            if (r == 0)
                srv_close(p, s, true);
            continue;
        }
        answered = true;
        if (pk.argc >= 5 && pk.arg_len[1] == 1 && pk.arg[1][0] == '1') {
            st->known = true;
            st->running = pk.arg_len[2] == 1 && pk.arg[2][0] == '1';
            st->numerator = arg_u32(&pk, 3);
            st->denominator = arg_u32(&pk, 4);
            return GM_CLIENT_OK;
        }
    }
    return answered ? GM_CLIENT_OK : GM_CLIENT_NO_SERVER;
}

int gm_client_echo(struct gm_client *c, const void *data, size_t len)
{
    struct pool *p = &c->p;
    bool answered = false;
    for (int i = 0; i < p->n; i++) {
        struct srv *s = &p->srv[i];
        if (srv_connect(p, s) < 0)
            continue;
        const void *a[1] = { data };
        size_t l[1] = { len };
        if (srv_send(p, s, GM_ECHO_REQ, 1, a, l) < 0)
            continue;
        struct gm_packet pk;
        int r;
        while ((r = srv_read(p, s, &pk, p->timeout_ms ? p->timeout_ms : 5000)) == 1 && pk.cmd != GM_ECHO_RES)
            ;
        if (r == 1 && pk.arg_len[0] == len && (len == 0 || !memcmp(pk.arg[0], data, len)))
            answered = true;
        else if (r == 0)
            srv_close(p, s, true);
    }
    return answered ? GM_CLIENT_OK : GM_CLIENT_NO_SERVER;
}

/* ---- worker ------------------------------------------------------------------ */

struct wfunc {
    char *name;
    uint32_t timeout_s;
    gm_worker_fn fn;
    void *arg;
};

struct gm_worker {
    struct pool p;
    struct wfunc *f;
    int nf;
    char id[GM_MAX_CLIENT_ID + 1];
};

struct gm_worker_job {
    struct gm_worker *w;
    struct srv *s;
    char handle[GM_MAX_HANDLE + 1];
    char function[GM_MAX_FUNCTION + 1];
    char unique[GM_MAX_UNIQUE + 1];
    const char *data;
    size_t len;
};

struct gm_worker *gm_worker_new(const char *servers, const struct gm_client_options *opts, char *err, size_t errlen)
{
    struct gm_worker *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (pool_init(&w->p, servers, opts, err, errlen) < 0) {
        free(w);
        return NULL;
    }
    return w;
}

void gm_worker_free(struct gm_worker *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->nf; i++)
        free(w->f[i].name);
    free(w->f);
    pool_free(&w->p);
    free(w);
}

const char *gm_worker_error(const struct gm_worker *w) { return w->p.err; }

int gm_worker_register(struct gm_worker *w, const char *function, uint32_t timeout_s, gm_worker_fn fn, void *arg)
{
    if (!function || !*function || strlen(function) > GM_MAX_FUNCTION || !fn)
        return GM_CLIENT_BAD_ARGUMENT;
    struct wfunc *nf = realloc(w->f, (size_t)(w->nf + 1) * sizeof *nf);
    if (!nf)
        return GM_CLIENT_NO_MEMORY;
    w->f = nf;
    w->f[w->nf] = (struct wfunc){ .name = strdup(function), .timeout_s = timeout_s, .fn = fn, .arg = arg };
    if (!w->f[w->nf].name)
        return GM_CLIENT_NO_MEMORY;
    w->nf++;
    for (int i = 0; i < w->p.n; i++)
        w->p.srv[i].registered = false; /* re-announce on the next work() */
    for (int i = 0; i < w->p.n; i++)
        if (w->p.srv[i].k.fd >= 0)
            srv_close(&w->p, &w->p.srv[i], false);
    return GM_CLIENT_OK;
}

int gm_worker_set_id(struct gm_worker *w, const char *id)
{
    snprintf(w->id, sizeof w->id, "%s", id ? id : "");
    for (int i = 0; i < w->p.n; i++)
        w->p.srv[i].registered = false;
    return GM_CLIENT_OK;
}

static int worker_ready(struct gm_worker *w, struct srv *s)
{
    if (srv_connect(&w->p, s) < 0)
        return -1;
    if (s->registered)
        return 0;
    if (w->id[0]) {
        const void *a[1] = { w->id };
        size_t l[1] = { strlen(w->id) };
        if (srv_send(&w->p, s, GM_SET_CLIENT_ID, 1, a, l) < 0)
            return -1;
    }
    for (int i = 0; i < w->nf; i++) {
        char t[16];
        int tl = snprintf(t, sizeof t, "%u", w->f[i].timeout_s);
        const void *a[2] = { w->f[i].name, t };
        size_t l[2] = { strlen(w->f[i].name), (size_t)tl };
        int rc =
            w->f[i].timeout_s ? srv_send(&w->p, s, GM_CAN_DO_TIMEOUT, 2, a, l) : srv_send(&w->p, s, GM_CAN_DO, 1, a, l);
        if (rc < 0)
            return -1;
    }
    s->registered = true;
    return 0;
}

static int run_job(struct gm_worker *w, struct srv *s, const struct gm_packet *pk)
{
    struct gm_worker_job j = { .w = w, .s = s };
    copy_arg(j.handle, sizeof j.handle, pk, 0);
    copy_arg(j.function, sizeof j.function, pk, 1);
    copy_arg(j.unique, sizeof j.unique, pk, 2);
    j.data = pk->arg[3];
    j.len = pk->arg_len[3];
    struct wfunc *f = NULL;
    for (int i = 0; i < w->nf; i++)
        if (!strcmp(w->f[i].name, j.function))
            f = &w->f[i];
    void *result = NULL;
    size_t rlen = 0;
    int rc = f ? f->fn(&j, f->arg, &result, &rlen) : GM_CLIENT_WORK_FAIL;
    const void *a[2] = { j.handle, result ? result : "" };
    size_t l[2] = { strlen(j.handle), result ? rlen : 0 };
    int sent;
    if (s->k.fd < 0)
        sent = -1;
    else if (rc == GM_CLIENT_OK)
        sent = srv_send(&w->p, s, GM_WORK_COMPLETE, 2, a, l);
    else if (rc == GM_CLIENT_WORK_EXCEPTION)
        sent = srv_send(&w->p, s, GM_WORK_EXCEPTION, 2, a, l);
    else
        sent = srv_send(&w->p, s, GM_WORK_FAIL, 1, a, l);
    free(result);
    return sent < 0 ? GM_CLIENT_LOST : GM_CLIENT_OK;
}

int gm_worker_work(struct gm_worker *w)
{
    struct pool *p = &w->p;
    int64_t deadline = p->timeout_ms ? now_ms() + p->timeout_ms : 0;
    for (;;) {
        int live = 0;
        for (int k = 0; k < p->n; k++) {
            int i = (int)((p->rr + (unsigned)k) % (unsigned)p->n);
            struct srv *s = &p->srv[i];
            if (worker_ready(w, s) < 0 || srv_send(p, s, GM_GRAB_JOB_UNIQ, 0, NULL, NULL) < 0)
                continue;
            struct gm_packet pk;
            int r;
            while ((r = srv_read(p, s, &pk, 30000)) == 1 && pk.cmd != GM_NO_JOB && pk.cmd != GM_JOB_ASSIGN_UNIQ)
                ;
            if (r != 1) {
                if (r == 0)
                    srv_close(p, s, true);
                continue;
            }
            live++;
            if (pk.cmd == GM_JOB_ASSIGN_UNIQ && pk.argc == 4) {
                p->rr = (unsigned)i + 1;
                return run_job(w, s, &pk);
            }
        }
        int64_t left = deadline ? deadline - now_ms() : p->retry_ms;
        if (deadline && left <= 0) {
            snprintf(p->err, sizeof p->err, "timed out waiting for a job");
            return GM_CLIENT_TIMEOUT;
        }
        if (live == 0) {
            /* nobody reachable: wait for a dead server's retry time */
            if (!deadline)
                return GM_CLIENT_NO_SERVER;
            usleep((useconds_t)(left < 100 ? left : 100) * 1000);
            continue;
        }
        /* every server said NO_JOB: sleep until one wakes us */
        struct pollfd pf[MAX_SERVERS];
        int idx[MAX_SERVERS], n = 0;
        for (int i = 0; i < p->n; i++) {
            struct srv *s = &p->srv[i];
            if (s->k.fd < 0 || srv_send(p, s, GM_PRE_SLEEP, 0, NULL, NULL) < 0)
                continue;
            pf[n] = (struct pollfd){ .fd = s->k.fd, .events = POLLIN };
            idx[n++] = i;
        }
        /* wake at least every retry interval to reconnect dead servers */
        int wait = (int)(left < p->retry_ms ? left : p->retry_ms);
        bool dead_ones = false;
        for (int i = 0; i < p->n; i++)
            dead_ones |= p->srv[i].k.fd < 0;
        int pr = poll(pf, (nfds_t)n, dead_ones || deadline ? wait : -1);
        if (pr < 0 && errno != EINTR)
            return GM_CLIENT_PROTOCOL;
        for (int k = 0; k < n && pr > 0; k++) {
            if (!pf[k].revents)
                continue;
            struct srv *s = &p->srv[idx[k]];
            if (srv_fill(p, s) <= 0) {
                srv_close(p, s, true);
                continue;
            }
            struct gm_packet pk;
            while (srv_next(p, s, &pk) == 1)
                ; /* NOOP: go grab */
        }
    }
}

const char *gm_worker_job_handle(const struct gm_worker_job *j) { return j->handle; }
const char *gm_worker_job_function(const struct gm_worker_job *j) { return j->function; }
const char *gm_worker_job_unique(const struct gm_worker_job *j) { return j->unique; }
const void *gm_worker_job_data(const struct gm_worker_job *j, size_t *len)
{
    if (len)
        *len = j->len;
    return j->data;
}

int gm_worker_job_send_status(struct gm_worker_job *j, uint32_t numerator, uint32_t denominator)
{
    char a1[16], a2[16];
    int l1 = snprintf(a1, sizeof a1, "%u", numerator), l2 = snprintf(a2, sizeof a2, "%u", denominator);
    const void *a[3] = { j->handle, a1, a2 };
    size_t l[3] = { strlen(j->handle), (size_t)l1, (size_t)l2 };
    if (j->s->k.fd < 0 || srv_send(&j->w->p, j->s, GM_WORK_STATUS, 3, a, l) < 0)
        return GM_CLIENT_LOST;
    return GM_CLIENT_OK;
}

int gm_worker_job_send_data(struct gm_worker_job *j, const void *data, size_t len)
{
    const void *a[2] = { j->handle, data };
    size_t l[2] = { strlen(j->handle), len };
    if (j->s->k.fd < 0 || srv_send(&j->w->p, j->s, GM_WORK_DATA, 2, a, l) < 0)
        return GM_CLIENT_LOST;
    return GM_CLIENT_OK;
}
