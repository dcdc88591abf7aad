/* libFuzzer target: memcached's UDP frame header and the cut of a text
 * get's reply into per-key response objects (memcached/proto_udp.c).
 * Input: a datagram; its payload, when the frame is accepted, is split at
 * the first NUL into a key list and a reply. The frame must point inside
 * the input; the objects emitted must add up to exactly the reply, and
 * one must be emitted per key. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memcached/udp.h"

struct sum {
    size_t total, n;
};

static void add(size_t len, void *arg)
{
    struct sum *s = arg;
    s->total += len;
    s->n++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mc_udp_frame f;
    if (!mc_udp_parse_frame(data, size, &f))
        return 0;
    if (f.payload != data + MC_UDP_HDR || f.len != size - MC_UDP_HDR || f.total != 1)
        abort();
    uint8_t hdr[MC_UDP_HDR];
    mc_udp_write_header(hdr, f.req_id, f.seq, f.total);
    if (memcmp(hdr, data, 6) != 0)
        abort();
    uint16_t t = mc_udp_total(f.len);
    if ((size_t)t * MC_UDP_DATA < f.len || (f.len && (size_t)(t - 1) * MC_UDP_DATA >= f.len))
        abort();
    const uint8_t *nul = memchr(f.payload, 0, f.len);
    if (!nul)
        return 0;
    /* copies, so ASan sees reads past either part */
    size_t nk = (size_t)(nul - f.payload), nr = f.len - nk - 1;
    char *keys = malloc(nk ? nk : 1), *reply = malloc(nr ? nr : 1);
    memcpy(keys, f.payload, nk);
    memcpy(reply, nul + 1, nr);
    size_t nkeys = 0;
    for (size_t i = 0; i < nk; i++)
        if (keys[i] != ' ' && (i == 0 || keys[i - 1] == ' '))
            nkeys++;
    struct sum s = { 0, 0 };
    if (mc_udp_split_get(keys, nk, reply, nr, add, &s) && (s.total != nr || s.n != nkeys))
        abort();
    free(keys);
    free(reply);
    return 0;
}
