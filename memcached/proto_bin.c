/* proto_bin: the memcached binary protocol framing (pure): the 24-byte
 * request header, the body split into extras/key/value, and the response
 * header encoder. All integers on the wire are big endian. */
#include "memcached/proto.h"

#include <string.h>

static uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static uint64_t be64(const uint8_t *p) { return ((uint64_t)be32(p) << 32) | be32(p + 4); }

enum mc_parse mc_bin_parse_header(const uint8_t *buf, size_t len, uint32_t max_body, struct mc_bin_req *r)
{
    memset(r, 0, sizeof *r);
    if (len < MC_BIN_HDR)
        return MC_PARSE_NEED_MORE;
    if (buf[0] != MC_BIN_REQ) {
        r->error = "bad magic";
        return MC_PARSE_ERROR;
    }
    r->opcode = buf[1];
    r->keylen = be16(buf + 2);
    r->extlen = buf[4];
    r->datatype = buf[5];
    r->vbucket = be16(buf + 6);
    r->bodylen = be32(buf + 8);
    r->opaque = be32(buf + 12);
    r->cas = be64(buf + 16);
    if ((uint64_t)r->keylen + r->extlen > r->bodylen) {
        r->error = "bad lengths";
        return MC_PARSE_ERROR;
    }
    if (r->bodylen > max_body) {
        r->error = "body too large";
        return MC_PARSE_ERROR;
    }
    r->consumed = MC_BIN_HDR + (size_t)r->bodylen;
    return MC_PARSE_OK;
}

enum mc_parse mc_bin_parse(const uint8_t *buf, size_t len, uint32_t max_body, struct mc_bin_req *r)
{
    enum mc_parse st = mc_bin_parse_header(buf, len, max_body, r);
    if (st != MC_PARSE_OK)
        return st;
    if (len < r->consumed)
        return MC_PARSE_NEED_MORE;
    r->extras = buf + MC_BIN_HDR;
    r->key = r->extras + r->extlen;
    r->value = r->key + r->keylen;
    r->vlen = r->bodylen - r->keylen - r->extlen;
    return MC_PARSE_OK;
}

void mc_bin_write_header(uint8_t *o, uint8_t opcode, uint16_t keylen, uint8_t extlen, uint16_t status,
                         uint32_t bodylen, uint32_t opaque, uint64_t cas)
{
    o[0] = MC_BIN_RES;
    o[1] = opcode;
    o[2] = (uint8_t)(keylen >> 8);
    o[3] = (uint8_t)keylen;
    o[4] = extlen;
    o[5] = 0;
    o[6] = (uint8_t)(status >> 8);
    o[7] = (uint8_t)status;
    for (int i = 0; i < 4; i++) {
        o[8 + i] = (uint8_t)(bodylen >> (24 - 8 * i));
        o[12 + i] = (uint8_t)(opaque >> (24 - 8 * i));
    }
    for (int i = 0; i < 8; i++)
        o[16 + i] = (uint8_t)(cas >> (56 - 8 * i));
}
