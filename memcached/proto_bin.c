/* proto_bin: the memcached binary protocol (pure): the 24-byte request
 * header, the body split into extras/key/value, each opcode's extras and
 * lengths decoded and checked (mc_bin_decode), and the response header
 * encoder. All integers on the wire are big endian. Nothing here touches
 * a socket, the store or a global. */
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

void mc_bin_write_header(uint8_t *o, uint8_t opcode, uint16_t keylen, uint8_t extlen, uint16_t status, uint32_t bodylen,
                         uint32_t opaque, uint64_t cas)
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

static bool op_quiet(uint8_t op)
{
    switch (op) {
    case MC_BIN_GETQ:
    case MC_BIN_GETKQ:
    case MC_BIN_SETQ:
    case MC_BIN_ADDQ:
    case MC_BIN_REPLACEQ:
    case MC_BIN_DELETEQ:
    case MC_BIN_INCRQ:
    case MC_BIN_DECRQ:
    case MC_BIN_QUITQ:
    case MC_BIN_FLUSHQ:
    case MC_BIN_APPENDQ:
    case MC_BIN_PREPENDQ:
    case MC_BIN_GATQ:
    case MC_BIN_GATKQ: return true;
    default: return false;
    }
}

/* The SASL PLAIN message: [authzid] NUL authcid NUL passwd. */
static void decode_plain(const struct mc_bin_req *r, struct mc_bin_cmd *c)
{
    if (r->keylen != 5 || memcmp(r->key, "PLAIN", 5) != 0)
        return;
    const char *v = (const char *)r->value;
    size_t vl = r->vlen;
    const char *z1 = memchr(v, 0, vl);
    if (!z1)
        return;
    const char *user = z1 + 1;
    const char *z2 = memchr(user, 0, vl - (size_t)(user - v));
    if (!z2)
        return;
    c->user = user;
    c->nuser = (size_t)(z2 - user);
    c->pass = z2 + 1;
    c->npass = vl - (size_t)(c->pass - v);
    c->plain_ok = true;
}

void mc_bin_decode(const struct mc_bin_req *r, struct mc_bin_cmd *c)
{
    uint8_t op = r->opcode;
    memset(c, 0, sizeof *c);
    c->status = MC_BIN_OK;
    c->quiet = op_quiet(op);
    c->want_value = true;
    bool bad = false;
    switch (op) {
    case MC_BIN_GET:
    case MC_BIN_GETQ:
    case MC_BIN_GETK:
    case MC_BIN_GETKQ:
    case MC_BIN_TOUCH:
    case MC_BIN_GAT:
    case MC_BIN_GATQ:
    case MC_BIN_GATK:
    case MC_BIN_GATKQ:
        c->kind = MC_BINK_GET;
        c->touch =
            op == MC_BIN_TOUCH || op == MC_BIN_GAT || op == MC_BIN_GATQ || op == MC_BIN_GATK || op == MC_BIN_GATKQ;
        c->want_key = op == MC_BIN_GETK || op == MC_BIN_GETKQ || op == MC_BIN_GATK || op == MC_BIN_GATKQ;
        c->want_value = op != MC_BIN_TOUCH;
        bad = r->keylen == 0 || r->extlen != (c->touch ? 4 : 0) || r->vlen != 0;
        if (!bad && c->touch)
            c->exptime = (int32_t)be32(r->extras);
        break;
    case MC_BIN_SET:
    case MC_BIN_SETQ:
    case MC_BIN_ADD:
    case MC_BIN_ADDQ:
    case MC_BIN_REPLACE:
    case MC_BIN_REPLACEQ:
    case MC_BIN_APPEND:
    case MC_BIN_APPENDQ:
    case MC_BIN_PREPEND:
    case MC_BIN_PREPENDQ: {
        c->kind = MC_BINK_STORE;
        switch (op) {
        case MC_BIN_SET:
        case MC_BIN_SETQ: c->store = MC_BINS_SET; break;
        case MC_BIN_ADD:
        case MC_BIN_ADDQ: c->store = MC_BINS_ADD; break;
        case MC_BIN_REPLACE:
        case MC_BIN_REPLACEQ: c->store = MC_BINS_REPLACE; break;
        case MC_BIN_APPEND:
        case MC_BIN_APPENDQ: c->store = MC_BINS_APPEND; break;
        default: c->store = MC_BINS_PREPEND; break;
        }
        bool cat = c->store == MC_BINS_APPEND || c->store == MC_BINS_PREPEND;
        bad = r->keylen == 0 || r->extlen != (cat ? 0 : 8);
        if (!bad && !cat) {
            c->flags = be32(r->extras);
            c->exptime = (int32_t)be32(r->extras + 4);
        }
        break;
    }
    case MC_BIN_DELETE:
    case MC_BIN_DELETEQ:
        c->kind = MC_BINK_DELETE;
        bad = r->keylen == 0 || r->extlen != 0 || r->vlen != 0;
        break;
    case MC_BIN_INCR:
    case MC_BIN_INCRQ:
    case MC_BIN_DECR:
    case MC_BIN_DECRQ:
        c->kind = MC_BINK_ARITH;
        c->incr = op == MC_BIN_INCR || op == MC_BIN_INCRQ;
        bad = r->keylen == 0 || r->extlen != 20 || r->vlen != 0;
        if (!bad) {
            c->delta = be64(r->extras);
            c->initial = be64(r->extras + 8);
            uint32_t exp = be32(r->extras + 16);
            c->create = exp != 0xffffffffu;
            c->exptime = (int32_t)exp;
        }
        break;
    case MC_BIN_QUIT:
    case MC_BIN_QUITQ:
        c->kind = MC_BINK_QUIT;
        c->pre_auth = true;
        break;
    case MC_BIN_FLUSH:
    case MC_BIN_FLUSHQ:
        c->kind = MC_BINK_FLUSH;
        bad = r->keylen != 0 || (r->extlen != 0 && r->extlen != 4) || r->vlen != 0;
        if (!bad && r->extlen == 4) {
            c->has_delay = true;
            c->delay = (int32_t)be32(r->extras);
        }
        break;
    case MC_BIN_NOOP:
        c->kind = MC_BINK_NOOP;
        c->pre_auth = true;
        break;
    case MC_BIN_VERSION:
        c->kind = MC_BINK_VERSION;
        c->pre_auth = true;
        break;
    case MC_BIN_VERBOSITY:
        c->kind = MC_BINK_VERBOSITY;
        if (r->extlen != 4 || r->keylen != 0 || r->vlen != 0)
            c->status = MC_BIN_UNKNOWN_COMMAND; /* what memcached 1.6 answers */
        else
            c->verbosity = be32(r->extras);
        break;
    case MC_BIN_STAT: c->kind = MC_BINK_STAT; break;
    case MC_BIN_SASL_LIST:
        c->kind = MC_BINK_SASL_LIST;
        c->pre_auth = true;
        break;
    case MC_BIN_SASL_AUTH:
    case MC_BIN_SASL_STEP:
        c->kind = MC_BINK_SASL_AUTH;
        c->pre_auth = true;
        decode_plain(r, c);
        break;
    default:
        c->kind = MC_BINK_UNKNOWN;
        c->status = MC_BIN_UNKNOWN_COMMAND;
        break;
    }
    if (r->keylen > MC_KEY_MAX_LEN || bad)
        c->status = MC_BIN_EINVAL;
}

const char *mc_bin_status_text(uint16_t status)
{
    switch (status) {
    case MC_BIN_KEY_ENOENT: return "Not found";
    case MC_BIN_KEY_EEXISTS: return "Data exists for key.";
    case MC_BIN_E2BIG: return "Too large.";
    case MC_BIN_EINVAL: return "Invalid arguments";
    case MC_BIN_NOT_STORED: return "Not stored.";
    case MC_BIN_DELTA_BADVAL: return "Non-numeric server-side value for incr or decr";
    case MC_BIN_AUTH_ERROR: return "Auth failure.";
    case MC_BIN_ENOMEM: return "Out of memory";
    default: return "Unknown command";
    }
}
