/* proto_udp: the pure parts of memcached's UDP transport (see udp.h):
 * the frame header, datagram counts and the cut of a text get's reply
 * into per-key response objects. No socket, no store, no globals. */
#include "memcached/udp.h"

#include <string.h>

bool mc_udp_parse_frame(const uint8_t *buf, size_t len, struct mc_udp_frame *f)
{
    if (len <= MC_UDP_HDR)
        return false;
    f->req_id = (uint16_t)(buf[0] << 8 | buf[1]);
    f->seq = (uint16_t)(buf[2] << 8 | buf[3]);
    f->total = (uint16_t)(buf[4] << 8 | buf[5]);
    f->reserved = (uint16_t)(buf[6] << 8 | buf[7]);
    /* memcached looks only at the count: a request is one datagram. The
     * sequence number and the reserved field are not checked. */
    if (f->total != 1)
        return false;
    f->payload = buf + MC_UDP_HDR;
    f->len = len - MC_UDP_HDR;
    return true;
}

void mc_udp_write_header(uint8_t *out, uint16_t req_id, uint16_t seq, uint16_t total)
{
    out[0] = (uint8_t)(req_id >> 8);
    out[1] = (uint8_t)req_id;
    out[2] = (uint8_t)(seq >> 8);
    out[3] = (uint8_t)seq;
    out[4] = (uint8_t)(total >> 8);
    out[5] = (uint8_t)total;
    out[6] = 0;
    out[7] = 0;
}

uint16_t mc_udp_total(size_t len)
{
    size_t n = len / MC_UDP_DATA + (len % MC_UDP_DATA != 0);
    return n > MC_UDP_MAX_DATAGRAMS ? MC_UDP_MAX_DATAGRAMS : (uint16_t)n;
}

/* The VALUE block at p (of at most n bytes) for key k: its length, or 0
 * when p holds no complete block for that key. */
static size_t value_block(const char *p, size_t n, const char *k, size_t nk)
{
    if (n < 6 + nk + 1 || memcmp(p, "VALUE ", 6) != 0 || memcmp(p + 6, k, nk) != 0 || p[6 + nk] != ' ')
        return 0;
    const char *eol = memchr(p, '\n', n);
    if (!eol)
        return 0;
    /* "VALUE <key> <flags> <bytes>[ <cas>]\r\n": bytes is the 4th token */
    const char *q = p + 6 + nk + 1, *end = eol;
    if (end < q) /* a key with a line feed in it: not a VALUE line for it */
        return 0;
    const char *sp = memchr(q, ' ', (size_t)(end - q)); /* after flags */
    if (!sp)
        return 0;
    uint64_t bytes = 0;
    const char *d = sp + 1;
    if (d >= end || *d < '0' || *d > '9')
        return 0;
    for (; d < end && *d >= '0' && *d <= '9'; d++) {
        if (bytes > (UINT64_MAX - 9) / 10)
            return 0;
        bytes = bytes * 10 + (uint64_t)(*d - '0');
    }
    size_t head = (size_t)(eol + 1 - p);
    if (bytes > n || head + bytes + 2 > n)
        return 0;
    return head + (size_t)bytes + 2;
}

bool mc_udp_split_get(const char *keys, size_t keys_len, const char *reply, size_t rlen,
                      void (*emit)(size_t len, void *arg), void *arg)
{
    if (rlen < 5 || memcmp(reply + rlen - 5, "END\r\n", 5) != 0)
        return false;
    /* First check the shape, then emit: nothing is emitted for a reply
     * that is not VALUE blocks and END. */
    for (int pass = 0; pass < 2; pass++) {
        const char *kp = keys, *kend = keys + keys_len;
        size_t off = 0, body = rlen - 5, last = 0;
        bool any = false;
        while (kp < kend) {
            while (kp < kend && *kp == ' ')
                kp++;
            if (kp >= kend)
                break;
            const char *k = kp;
            const char *sp = memchr(kp, ' ', (size_t)(kend - kp));
            size_t nk = sp ? (size_t)(sp - kp) : (size_t)(kend - kp);
            kp = k + nk;
            size_t b = off < body ? value_block(reply + off, body - off, k, nk) : 0;
            if (pass == 1 && any)
                emit(last, arg);
            last = b;
            any = true;
            off += b;
        }
        if (off != body || !any)
            return false;
        if (pass == 1)
            emit(last + 5, arg); /* END goes on the last key's object */
    }
    return true;
}
