/* pool: waiters by priority, idle members, connect-ahead, dead nodes and
 * the failure of waiters nothing can serve — driven with fake members (the
 * pool opens no sockets, so none are needed). */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/pool.h"
#include "tests/unit/unit.h"

struct fake_member {
    struct pool_member m;
    int id;
    bool closed;
};

struct fake_waiter {
    struct pool_waiter w;
    int id;
    struct fake_member *got;
    bool failed;
};

static struct pool_node *nodes[2];
static int nnodes;
static struct fake_member *started[64];
static int nstarted, next_id, nclosed, assigned_order[16], nassigned;

#define MEMBER_OF(x) ((struct fake_member *)((char *)(x)-offsetof(struct fake_member, m)))
#define WAITER_OF(x) ((struct fake_waiter *)((char *)(x)-offsetof(struct fake_waiter, w)))

static struct pool_member *op_connect(struct pool *p)
{
    (void)p;
    struct pool_node *n = pool_pick(nodes, nnodes);
    if (!n)
        return NULL;
    struct fake_member *f = calloc(1, sizeof *f);
    f->m.node = n;
    f->id = ++next_id;
    started[nstarted++] = f;
    return &f->m;
}

static void op_assign(struct pool *p, struct pool_member *m, struct pool_waiter *w)
{
    (void)p;
    WAITER_OF(w)->got = MEMBER_OF(m);
    assigned_order[nassigned++] = WAITER_OF(w)->id;
}

static void op_fail(struct pool *p, struct pool_waiter *w)
{
    (void)p;
    WAITER_OF(w)->failed = true;
}

static void op_close(struct pool *p, struct pool_member *m)
{
    MEMBER_OF(m)->closed = true;
    nclosed++;
    pool_gone(p, m, false); /* as a close callback would */
}

static const struct pool_ops ops = {
    .connect = op_connect,
    .assign = op_assign,
    .fail = op_fail,
    .close = op_close,
};

static void reset(void)
{
    for (int i = 0; i < nstarted; i++)
        free(started[i]);
    nstarted = next_id = nclosed = nassigned = 0;
}

static void test_node_parse(void)
{
    struct pool_node n;
    CHECK_EQ_INT(pool_node_init(&n, "127.0.0.1:8080", 80), 0);
    CHECK_STR(n.name, "127.0.0.1:8080");
    CHECK_EQ_INT(pool_node_init(&n, "localhost", 81), 0);
    CHECK_STR(n.name, "127.0.0.1:81");
    CHECK_EQ_INT(pool_node_init(&n, "[::1]:9", 80), 0);
    CHECK_STR(n.name, "[::1]:9");
    CHECK_EQ_INT(pool_node_init(&n, "1.2.3.4:0", 80), -1);
    CHECK_EQ_INT(pool_node_init(&n, "1.2.3.4:65536", 80), -1);
    CHECK_EQ_INT(pool_node_init(&n, "example.org:80", 80), -1);
    CHECK_EQ_INT(pool_node_init(&n, "[::1", 80), -1);
    CHECK_EQ_INT(pool_node_init(&n, ":80", 80), -1);
    /* names: only through pool_node_init_host, kept for a resolve at connect */
    CHECK_EQ_INT(pool_node_init_host(&n, "db-1.example.org:3306", 80), 0);
    CHECK_STR(n.name, "db-1.example.org:3306");
    CHECK_STR(n.host, "db-1.example.org");
    CHECK_EQ_INT(n.port, 3306);
    CHECK_EQ_INT((int)n.salen, 0);
    CHECK_EQ_INT(pool_node_init_host(&n, "web", 81), 0);
    CHECK_STR(n.name, "web:81");
    CHECK_EQ_INT(pool_node_init_host(&n, "10.0.0.1:5", 80), 0); /* numbers stay addresses */
    CHECK_STR(n.host, "");
    CHECK(n.salen > 0);
    CHECK_EQ_INT(pool_node_init_host(&n, "localhost:7", 80), 0);
    CHECK_STR(n.name, "127.0.0.1:7");
    CHECK_EQ_INT(pool_node_init_host(&n, "1.2.3:80", 80), -1); /* no letter: not a name */
    CHECK_EQ_INT(pool_node_init_host(&n, "bad_name:80", 80), -1);
    CHECK_EQ_INT(pool_node_init_host(&n, "-x.org:80", 80), -1);
    CHECK_EQ_INT(pool_node_init_host(&n, "a..b:80", 80), -1);
    CHECK_EQ_INT(pool_node_init_host(&n, "[host]:80", 80), -1);
    CHECK_EQ_INT(pool_node_init_host(&n, "host:0", 80), -1);
}

static void test_queue_priority_and_ready(void)
{
    static struct pool_node a;
    pool_node_init(&a, "127.0.0.1:1", 80);
    nodes[0] = &a;
    nnodes = 1;
    struct pool p;
    pool_init(&p, &ops, NULL);
    struct fake_waiter w1 = { .id = 1 }, w2 = { .id = 2 }, w3 = { .id = 3 };
    pool_request(&p, &w1.w, 1, false);
    pool_request(&p, &w2.w, 2, false);
    pool_request(&p, &w3.w, 0, false);
    CHECK_EQ_INT(p.nwaiting, 3);
    CHECK_EQ_INT(p.pending, 3); /* one connect per waiter */
    CHECK_EQ_INT(nstarted, 3);
    /* the first connection ready goes to the highest priority waiter */
    pool_ready(&p, &started[0]->m);
    CHECK(w3.got == started[0]);
    pool_ready(&p, &started[1]->m);
    CHECK(w1.got == started[1]);
    pool_ready(&p, &started[2]->m);
    CHECK(w2.got == started[2]);
    CHECK_EQ_INT(p.nwaiting, 0);
    CHECK_EQ_INT(p.pending, 0);
    /* done with a request: kept idle (default keep 1), the next is closed */
    pool_ready(&p, &started[0]->m);
    CHECK_EQ_INT(p.nidle, 1);
    pool_ready(&p, &started[1]->m);
    CHECK_EQ_INT(p.nidle, 1);
    CHECK(started[1]->closed);
    /* an idle member is assigned at once */
    struct fake_waiter w4 = { .id = 4 };
    pool_request(&p, &w4.w, 1, false);
    CHECK(w4.got == started[0]);
    CHECK_EQ_INT(p.nidle, 0);
    CHECK_EQ_INT(nstarted, 3);
    reset();
}

static void test_fifo_front_and_cancel(void)
{
    static struct pool_node a;
    pool_node_init(&a, "127.0.0.1:1", 80);
    nodes[0] = &a;
    nnodes = 1;
    struct pool p;
    pool_init(&p, &ops, NULL);
    p.max_pending = 1; /* one connect at a time: waiters queue */
    struct fake_waiter w[4] = { { .id = 1 }, { .id = 2 }, { .id = 3 }, { .id = 4 } };
    pool_request(&p, &w[0].w, 1, false);
    pool_request(&p, &w[1].w, 1, false);
    pool_request(&p, &w[2].w, 1, true); /* a retry goes first */
    pool_request(&p, &w[3].w, 1, false);
    CHECK_EQ_INT(p.pending, 1);
    CHECK(pool_queued(&w[1].w));
    pool_cancel(&p, &w[1].w);
    CHECK(!pool_queued(&w[1].w));
    CHECK_EQ_INT(p.nwaiting, 3);
    CHECK(pool_queue_age_ms(&p, 1, pool_now_ms() + 5) >= 5);
    CHECK_EQ_INT(pool_queue_age_ms(&p, 0, pool_now_ms()), 0);
    for (int i = 0; i < 3; i++) {
        pool_ready(&p, &started[i]->m); /* each ready one starts the next connect */
        pool_kick(&p);
    }
    CHECK_EQ_INT(nassigned, 3);
    CHECK_EQ_INT(assigned_order[0], 3);
    CHECK_EQ_INT(assigned_order[1], 1);
    CHECK_EQ_INT(assigned_order[2], 4);
    CHECK(w[1].got == NULL);
    reset();
}

static void test_dead_nodes_and_failure(void)
{
    static struct pool_node a, b;
    pool_node_init(&a, "127.0.0.1:1", 80);
    pool_node_init(&b, "127.0.0.1:2", 80);
    nodes[0] = &a;
    nodes[1] = &b;
    nnodes = 2;
    struct pool p;
    pool_init(&p, &ops, NULL);
    p.dead_ms = 60000;
    struct fake_waiter w1 = { .id = 1 };
    pool_request(&p, &w1.w, 1, false);
    CHECK_EQ_INT(nstarted, 1);
    struct pool_node *first = started[0]->m.node;
    /* its connect fails: the node is dead, the other one is tried */
    pool_gone(&p, &started[0]->m, true);
    CHECK(!pool_node_alive(first, pool_now_ms()));
    CHECK_EQ_INT(atomic_load(&first->failures), 1);
    CHECK_EQ_INT(nstarted, 2);
    CHECK(started[1]->m.node != first);
    CHECK(!w1.failed);
    /* that one fails too: nothing left to try, the waiter is failed */
    pool_gone(&p, &started[1]->m, true);
    CHECK(w1.failed);
    CHECK_EQ_INT(p.nwaiting, 0);
    CHECK(pool_pick(nodes, nnodes) == NULL);
    /* nodes come back by themselves */
    atomic_store(&a.dead_until_ms, 0);
    CHECK(pool_pick(nodes, nnodes) == &a);
    reset();
}

static void test_connect_ahead_removed_and_drain(void)
{
    static struct pool_node a;
    pool_node_init(&a, "127.0.0.1:1", 80);
    nodes[0] = &a;
    nnodes = 1;
    struct pool p;
    pool_init(&p, &ops, NULL);
    p.connect_ahead = 2;
    pool_kick(&p);
    CHECK_EQ_INT(p.pending, 2); /* spares opened with nobody waiting */
    pool_ready(&p, &started[0]->m);
    pool_ready(&p, &started[1]->m);
    CHECK_EQ_INT(p.nidle, 2);
    pool_kick(&p);
    CHECK_EQ_INT(nstarted, 2); /* enough spares */
    /* a removed node's idle members are closed instead of used */
    atomic_store(&a.removed, true);
    struct fake_waiter w1 = { .id = 1 };
    nnodes = 0;
    pool_request(&p, &w1.w, 1, false);
    CHECK(started[0]->closed && started[1]->closed);
    CHECK(w1.failed); /* and no node is left */
    /* stopping: nothing is kept */
    atomic_store(&a.removed, false);
    nnodes = 1;
    p.stopping = true;
    struct fake_member extra = { .m.node = &a };
    pool_ready(&p, &extra.m);
    CHECK(extra.closed);
    p.stopping = false;
    struct fake_member idle1 = { .m.node = &a };
    pool_ready(&p, &idle1.m);
    CHECK_EQ_INT(p.nidle, 1);
    pool_drain(&p);
    CHECK(idle1.closed);
    CHECK_EQ_INT(p.nidle, 0);
    reset();
}

static void test_member_bound_makes_waiters_wait(void)
{
    static struct pool_node a;
    pool_node_init(&a, "127.0.0.1:1", 80);
    nodes[0] = &a;
    nnodes = 1;
    struct pool p;
    pool_init(&p, &ops, NULL);
    p.max_members = 1;
    struct fake_waiter w1 = { .id = 1 }, w2 = { .id = 2 }, w3 = { .id = 3 };
    pool_request(&p, &w1.w, 1, false);
    pool_request(&p, &w2.w, 1, false);
    CHECK_EQ_INT(nstarted, 1); /* the bound: one connection only */
    CHECK_EQ_INT(p.nmembers, 1);
    pool_ready(&p, &started[0]->m);
    CHECK(w1.got == started[0]);
    pool_kick(&p); /* nothing pending or idle, but a member is busy */
    CHECK(!w2.failed && pool_queued(&w2.w));
    pool_ready(&p, &started[0]->m); /* w1 done: the same connection serves w2 */
    CHECK(w2.got == started[0]);
    pool_request(&p, &w3.w, 1, false);
    CHECK(pool_queued(&w3.w) && nstarted == 1);
    pool_gone(&p, &started[0]->m, false); /* the member closes: a new connect for w3 */
    CHECK_EQ_INT(nstarted, 2);
    CHECK_EQ_INT(p.nmembers, 1);
    pool_ready(&p, &started[1]->m);
    CHECK(w3.got == started[1]);
    reset();
}

int main(void)
{
    RUN(test_node_parse);
    RUN(test_queue_priority_and_ready);
    RUN(test_fifo_front_and_cancel);
    RUN(test_dead_nodes_and_failure);
    RUN(test_connect_ahead_removed_and_drain);
    RUN(test_member_bound_makes_waiters_wait);
    return unit_done();
}
