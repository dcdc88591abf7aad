/* libFuzzer target: mc_async's reply reader (mc_async_parse) over arbitrary
 * bytes, for each kind of request. The first byte picks the kind; the rest
 * is read as a stream of replies. A reply must use only bytes it was
 * given, point its value inside them, and ask for more only when it needs
 * more than it has. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memcached/client/mc_async.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum mc_async_kind kind = (enum mc_async_kind)(data[0] % 5);
    size_t len = size - 1;
    char *buf = malloc(len ? len : 1);
    memcpy(buf, data + 1, len);
    size_t off = 0;
    while (off < len) {
        struct mc_async_result r;
        size_t consumed = 0, need = 0;
        int rc = mc_async_parse(kind, buf + off, len - off, &r, &consumed, &need);
        if (rc == 0) {
            if (need <= len - off)
                abort();
            break;
        }
        if (rc < 0)
            break;
        if (consumed == 0 || consumed > len - off)
            abort();
        if (r.rc == MC_CLIENT_OK && r.data && (r.data < buf + off || r.data + r.len > buf + off + consumed))
            abort();
        off += consumed;
    }
    free(buf);
    return 0;
}
