/* libFuzzer target for the address parser of common/pool (pool_node_init:
 * "ip:port", "[v6]:port", "localhost", pool nodes and reproxy URL hosts;
 * pool_node_init_host: host names too):
 * never reads past its input, and what it accepts has a canonical name
 * that parses back to the same address. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/pool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 200)
        return 0;
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;
    struct pool_node n, again;
    if (pool_node_init(&n, s, 80) == 0) {
        if (!n.name[0] || strlen(n.name) >= sizeof n.name)
            abort();
        if (pool_node_init(&again, n.name, 1) != 0)
            abort();
        if (strcmp(again.name, n.name) || again.salen != n.salen || memcmp(&again.sa, &n.sa, n.salen))
            abort();
    }
    /* with names (pool_node_init_host): an address parses as above; a name
     * keeps host and port, and its canonical name parses back the same */
    if (pool_node_init_host(&n, s, 80) == 0) {
        if (!n.name[0] || strlen(n.name) >= sizeof n.name || n.port <= 0 || n.port > 65535)
            abort();
        if ((n.host[0] != 0) != (n.salen == 0))
            abort();
        if (pool_node_init_host(&again, n.name, 1) != 0)
            abort();
        if (strcmp(again.name, n.name) || strcmp(again.host, n.host) || again.port != n.port)
            abort();
    }
    free(s);
    return 0;
}
