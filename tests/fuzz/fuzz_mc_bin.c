/* libFuzzer target: the memcached binary packet parser and the per-opcode
 * decoder over arbitrary bytes; every parsed packet's fields, and every
 * pointer the decoder hands out, must lie inside the input. */
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
        struct mc_bin_cmd c;
        mc_bin_decode(&r, &c);
        if (c.plain_ok && (c.user < (const char *)r.value || c.pass + c.npass > (const char *)r.value + r.vlen ||
                           c.user + c.nuser > c.pass))
            abort();
        if (c.status == MC_BIN_OK && c.kind == MC_BINK_UNKNOWN)
            abort();
        uint8_t out[24];
        mc_bin_write_header(out, r.opcode, r.keylen, r.extlen, 0, r.bodylen, r.opaque, r.cas);
        off += r.consumed;
    }
    free(buf);
    return 0;
}
