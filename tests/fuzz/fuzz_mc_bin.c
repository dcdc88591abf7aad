/* libFuzzer target: the memcached binary packet parser over arbitrary
 * bytes; every parsed packet's fields must lie inside the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memcached/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    size_t off = 0;
    while (off < size) {
        struct mc_bin_req r;
        enum mc_parse st = mc_bin_parse(buf + off, size - off, 1u << 20, &r);
        if (st != MC_PARSE_OK)
            break;
        if (r.consumed > size - off || r.value + r.vlen > buf + off + r.consumed || r.key < buf + off)
            abort();
        uint8_t out[24];
        mc_bin_write_header(out, r.opcode, r.keylen, r.extlen, 0, r.bodylen, r.opaque, r.cas);
        off += r.consumed;
    }
    free(buf);
    return 0;
}
