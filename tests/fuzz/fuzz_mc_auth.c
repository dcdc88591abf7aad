/* libFuzzer target: the -Y login request parser (memcached/proto_auth.c)
 * over arbitrary bytes, fed as a stream: what it consumes lies inside the
 * input, the user and password it hands out too, and it asks for more
 * only while the request can still fit its bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memcached/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    size_t off = 0;
    while (off < size) {
        struct mc_auth_req r;
        enum mc_auth_kind k = mc_auth_ascii_parse(buf + off, size - off, &r);
        if (k == MC_AUTH_NEED_MORE) {
            if (size - off > MC_AUTH_LINE_MAX + 1 + MC_AUTH_DATA_MAX)
                abort(); /* more than a request can hold, and still waiting */
            break;
        }
        if (k == MC_AUTH_JUNK || k == MC_AUTH_TOO_LONG)
            break; /* the connection closes */
        if (r.consumed == 0 || r.consumed > size - off)
            abort();
        if (k == MC_AUTH_PAIR) {
            const char *lo = buf + off, *hi = buf + off + r.consumed;
            if (r.user < lo || r.user + r.nuser > hi || r.pass < lo || r.pass + r.npass > hi || !r.nuser || !r.npass ||
                memchr(r.user, ' ', r.nuser) || memchr(r.pass, ' ', r.npass))
                abort();
        }
        off += r.consumed;
    }
    free(buf);
    return 0;
}
