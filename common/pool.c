/* pool: idle members, waiters by priority, connects in flight and dead
 * nodes for one user on one loop. See pool.h for the life of a member. */
#include "common/pool.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t pool_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool host_name_ok(const char *h)
{
    bool letter = false;
    if (!*h || *h == '-' || *h == '.')
        return false;
    for (const char *p = h; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
            letter = true;
        else if (!(*p >= '0' && *p <= '9') && *p != '-' && *p != '.')
            return false;
        if (*p == '.' && p[1] == '.')
            return false;
    }
    return letter;
}

static int node_init(struct pool_node *n, const char *spec, int default_port, bool names);

int pool_node_init(struct pool_node *n, const char *spec, int default_port)
{
    return node_init(n, spec, default_port, false);
}

int pool_node_init_host(struct pool_node *n, const char *spec, int default_port)
{
    return node_init(n, spec, default_port, true);
}

static int node_init(struct pool_node *n, const char *spec, int default_port, bool names)
{
    char host[64];
    const char *hs = spec, *he, *portp = NULL;
    memset(n, 0, sizeof *n);
    if (*spec == '[') {
        hs = spec + 1;
        he = strchr(hs, ']');
        if (!he || (he[1] && he[1] != ':'))
            return -1;
        if (he[1] == ':')
            portp = he + 2;
    } else {
        he = strchr(spec, ':');
        if (he)
            portp = he + 1;
        else
            he = spec + strlen(spec);
    }
    size_t hl = (size_t)(he - hs);
    if (hl == 0 || hl >= sizeof host)
        return -1;
    memcpy(host, hs, hl);
    host[hl] = 0;
    int port = default_port;
    if (portp) {
        char *end;
        long v = strtol(portp, &end, 10);
        if (end == portp || *end || v <= 0 || v > 65535)
            return -1;
        port = (int)v;
    }
    if (port <= 0 || port > 65535)
        return -1;
    if (!strcmp(host, "localhost"))
        strcpy(host, "127.0.0.1");
    struct sockaddr_in *s4 = (struct sockaddr_in *)&n->sa;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&n->sa;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        n->salen = sizeof *s4;
        snprintf(n->name, sizeof n->name, "%s:%d", host, port);
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        n->salen = sizeof *s6;
        char norm[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &s6->sin6_addr, norm, sizeof norm);
        snprintf(n->name, sizeof n->name, "[%s]:%d", norm, port);
    } else if (names && *spec != '[' && host_name_ok(host)) {
        snprintf(n->host, sizeof n->host, "%s", host);
        snprintf(n->name, sizeof n->name, "%s:%d", host, port);
    } else {
        return -1;
    }
    n->port = port;
    return 0;
}

void pool_node_dead(struct pool_node *n, int64_t ms) { atomic_store(&n->dead_until_ms, pool_now_ms() + ms); }

bool pool_node_alive(const struct pool_node *n, int64_t now_ms)
{
    return atomic_load(&n->dead_until_ms) <= now_ms && !atomic_load(&n->removed);
}

struct pool_node *pool_pick(struct pool_node *const *nodes, int n)
{
    static __thread unsigned seed;
    if (n <= 0)
        return NULL;
    int64_t now = pool_now_ms();
    if (!seed)
        seed = (unsigned)now ^ (unsigned)(uintptr_t)&seed;
    int start = (int)(rand_r(&seed) % (unsigned)n);
    for (int i = 0; i < n; i++) {
        struct pool_node *node = nodes[(start + i) % n];
        if (pool_node_alive(node, now))
            return node;
    }
    return NULL;
}

void pool_init(struct pool *p, const struct pool_ops *ops, void *data)
{
    memset(p, 0, sizeof *p);
    p->ops = ops;
    p->data = data;
}

/* ---- waiters ---- */

static void enqueue(struct pool *p, struct pool_waiter *w, bool front)
{
    int q = w->prio;
    w->next = w->prev = NULL;
    if (front) {
        w->next = p->head[q];
        if (p->head[q])
            p->head[q]->prev = w;
        else
            p->tail[q] = w;
        p->head[q] = w;
    } else {
        w->prev = p->tail[q];
        if (p->tail[q])
            p->tail[q]->next = w;
        else
            p->head[q] = w;
        p->tail[q] = w;
    }
    p->qlen[q]++;
    p->nwaiting++;
    w->queued = true;
    w->since_ms = pool_now_ms();
}

void pool_cancel(struct pool *p, struct pool_waiter *w)
{
    if (!w->queued)
        return;
    int q = w->prio;
    if (w->prev)
        w->prev->next = w->next;
    else
        p->head[q] = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        p->tail[q] = w->prev;
    p->qlen[q]--;
    p->nwaiting--;
    w->queued = false;
    w->next = w->prev = NULL;
}

bool pool_queued(const struct pool_waiter *w) { return w->queued; }

int64_t pool_queue_age_ms(const struct pool *p, int prio, int64_t now_ms)
{
    if (prio < 0 || prio >= POOL_PRIOS || !p->head[prio])
        return 0;
    return now_ms - p->head[prio]->since_ms;
}

struct pool_waiter *pool_first_waiter(struct pool *p)
{
    for (int q = 0; q < POOL_PRIOS; q++)
        if (p->head[q])
            return p->head[q];
    return NULL;
}

/* ---- idle members ---- */

static void idle_push(struct pool *p, struct pool_member *m)
{
    m->prev = NULL;
    m->next = p->idle;
    if (p->idle)
        p->idle->prev = m;
    p->idle = m;
    p->nidle++;
    m->idle = true;
}

static void idle_remove(struct pool *p, struct pool_member *m)
{
    if (!m->idle)
        return;
    m->idle = false;
    if (m->prev)
        m->prev->next = m->next;
    else
        p->idle = m->next;
    if (m->next)
        m->next->prev = m->prev;
    p->nidle--;
    m->next = m->prev = NULL;
}

struct pool_member *pool_take_idle(struct pool *p)
{
    for (;;) {
        struct pool_member *m = p->idle;
        while (m && p->ops->usable && !p->ops->usable(p, m))
            m = m->next;
        if (!m)
            return NULL;
        idle_remove(p, m);
        if (!atomic_load(&m->node->removed))
            return m;
        p->ops->close(p, m); /* its node left the list */
    }
}

/* ---- connects ---- */

static void fail_all(struct pool *p)
{
    struct pool_waiter *w;
    while ((w = pool_first_waiter(p))) {
        pool_cancel(p, w);
        p->ops->fail(p, w);
    }
}

void pool_kick(struct pool *p)
{
    int max = p->max_pending > 0 ? p->max_pending : POOL_MAX_PENDING;
    int want = p->nwaiting + p->connect_ahead - p->nidle - p->pending;
    while (!p->stopping && want-- > 0 && p->pending < max && (p->max_members <= 0 || p->nmembers < p->max_members)) {
        struct pool_member *m = p->ops->connect(p);
        if (!m)
            break;
        m->pending = true;
        m->idle = false;
        m->counted = true;
        p->pending++;
        p->nmembers++;
    }
    /* nothing connecting and nothing idle: fail the waiters, unless the
     * pool is at its member bound (a busy member will come back) */
    bool at_bound = p->max_members > 0 && p->nmembers >= p->max_members && !p->stopping;
    if (p->nwaiting && p->pending == 0 && p->nidle == 0 && !at_bound)
        fail_all(p);
}

void pool_request(struct pool *p, struct pool_waiter *w, int prio, bool front)
{
    if (prio < 0)
        prio = 0;
    if (prio >= POOL_PRIOS)
        prio = POOL_PRIOS - 1;
    w->prio = prio;
    struct pool_member *m = (prio == 0 || p->nwaiting == 0) ? pool_take_idle(p) : NULL;
    if (m) {
        p->ops->assign(p, m, w);
        return;
    }
    enqueue(p, w, front);
    pool_kick(p);
}

void pool_ready(struct pool *p, struct pool_member *m)
{
    if (m->pending) {
        m->pending = false;
        p->pending--;
    }
    struct pool_waiter *w = pool_first_waiter(p);
    if (w) {
        pool_cancel(p, w);
        p->ops->assign(p, m, w);
        return;
    }
    if (atomic_load(&m->node->removed)) {
        p->ops->close(p, m);
        return;
    }
    int keep = p->ops->idle_keep ? p->ops->idle_keep(p) : (p->connect_ahead > 0 ? p->connect_ahead : 1);
    if (p->stopping || p->nidle >= keep) {
        p->ops->close(p, m);
        return;
    }
    idle_push(p, m);
}

void pool_gone(struct pool *p, struct pool_member *m, bool failed)
{
    if (m->counted) {
        m->counted = false;
        p->nmembers--;
    }
    if (m->pending) {
        m->pending = false;
        p->pending--;
    }
    idle_remove(p, m);
    if (failed && m->node) {
        atomic_fetch_add_explicit(&m->node->failures, 1, memory_order_relaxed);
        pool_node_dead(m->node, p->dead_ms > 0 ? p->dead_ms : POOL_DEAD_MS);
    }
    if (p->nwaiting > 0 && !p->stopping)
        pool_kick(p);
}

void pool_drain(struct pool *p)
{
    fail_all(p);
    struct pool_member *m;
    while ((m = p->idle)) {
        idle_remove(p, m);
        p->ops->close(p, m);
    }
}
