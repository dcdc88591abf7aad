/* test_ketama_compat: our ketama continuum (common/hash.c, used by libmc)
 * maps keys to the same servers as libmemcached's weighted ketama
 * (MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED), checked against libmemcached itself
 * for several server lists, weights and ports. No server is contacted. */
#include <stdio.h>
#include <string.h>

#include <libmemcached/memcached.h>

#include "common/hash.h"
#include "tests/unit/unit.h"

struct srv {
    const char *host;
    int port;
    uint32_t weight;
};

static void compare(const struct srv *list, size_t n, int nkeys)
{
    memcached_st *m = memcached_create(NULL);
    CHECK(m != NULL);
    if (!m)
        return;
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
    struct hash_ketama_server ours[16];
    for (size_t i = 0; i < n; i++) {
        CHECK(memcached_server_add_with_weight(m, list[i].host, (in_port_t)list[i].port, list[i].weight) ==
              MEMCACHED_SUCCESS);
        ours[i] = (struct hash_ketama_server){ list[i].host, list[i].port, list[i].weight, false };
    }
    struct hash_ketama k = { 0 };
    CHECK_EQ_INT(hash_ketama_build(&k, ours, n), 0);
    int mismatches = 0;
    for (int i = 0; i < nkeys; i++) {
        char key[64];
        int kn = snprintf(key, sizeof key, "user:%d:profile", i * 7919);
        uint32_t theirs = memcached_generate_hash(m, key, (size_t)kn);
        int mine = hash_ketama_server_for(&k, key, (size_t)kn);
        if ((int)theirs != mine && mismatches++ < 5)
            fprintf(stderr, "key %s: libmemcached %u, ours %d\n", key, theirs, mine);
    }
    CHECK_EQ_INT(mismatches, 0);
    hash_ketama_free(&k);
    memcached_free(m);
}

static void test_three_servers_default_port(void)
{
    struct srv s[] = { { "10.0.0.1", 11211, 1 }, { "10.0.0.2", 11211, 1 }, { "10.0.0.3", 11211, 1 } };
    compare(s, 3, 20000);
}

static void test_other_ports_and_names(void)
{
    struct srv s[] = {
        { "127.0.0.1", 22122, 1 }, { "127.0.0.1", 22123, 1 }, { "cache-a", 11211, 1 }, { "cache-b", 40000, 1 }
    };
    compare(s, 4, 20000);
}

static void test_weighted(void)
{
    struct srv s[] = { { "10.1.0.1", 11211, 1 }, { "10.1.0.2", 11211, 3 }, { "10.1.0.3", 11311, 2 } };
    compare(s, 3, 20000);
}

static void test_single_server(void)
{
    struct srv s[] = { { "localhost", 11211, 1 } };
    compare(s, 1, 1000);
}

int main(void)
{
    RUN(test_three_servers_default_port);
    RUN(test_other_ports_and_names);
    RUN(test_weighted);
    RUN(test_single_server);
    return unit_done();
}
