/* udp.h: memcached's UDP transport (-U).
 *
 * proto_udp.c holds the pure parts (the 8-byte frame header, how many
 * datagrams a reply takes, cutting a text get's reply into memcached's
 * per-key response objects), fuzzed by tests/fuzz/fuzz_mc_udp.c; udp.c
 * owns the sockets: one per listen address per loop (SO_REUSEPORT), each
 * running its datagrams' requests through a session of its own.
 *
 * The wire, as memcached 1.6.18 has it: every request and reply datagram
 * starts with request id, sequence number, datagram count and a reserved
 * field, 16 bits each, big-endian. A request must be one datagram (count
 * 1) of more than the header; anything else is dropped without a reply.
 * A reply is sent as memcached sends its response objects: each on its
 * own, cut into datagrams of at most 1400 bytes (header included), with
 * sequence numbers from 0 and the object's datagram count. */
#ifndef MC_UDP_H
#define MC_UDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MC_UDP_HDR 8
#define MC_UDP_MAX_PAYLOAD 1400                       /* a reply datagram, header included */
#define MC_UDP_DATA (MC_UDP_MAX_PAYLOAD - MC_UDP_HDR) /* reply bytes per datagram */
#define MC_UDP_READ_MAX 65536                         /* largest request datagram read */
#define MC_UDP_MAX_DATAGRAMS 65535                    /* what the header can count */

struct mc_udp_frame {
    uint16_t req_id, seq, total, reserved;
    const uint8_t *payload; /* the requests, after the header */
    size_t len;
};

/* A received datagram's header. false: drop it (not longer than the
 * header, or one of a multi-datagram request, which memcached refuses). */
bool mc_udp_parse_frame(const uint8_t *buf, size_t len, struct mc_udp_frame *f);
void mc_udp_write_header(uint8_t *out, uint16_t req_id, uint16_t seq, uint16_t total);
/* Datagrams a response object of len bytes is sent in, as memcached counts
 * them: 0 for an empty one (sent as a bare header), at most 65535. */
uint16_t mc_udp_total(size_t len);

/* A text get/gets/gat/gats reply (VALUE blocks, then END) cut as memcached
 * builds it: one response object per key the request named, in order —
 * that key's VALUE block, or nothing for a miss — with END on the last.
 * keys: the request's key list (space separated). emit(len, arg) is called
 * once per key with the object's length; the objects follow each other in
 * reply. Returns false (nothing emitted) when reply is not of that shape
 * (an error line): the caller sends it as one object. */
bool mc_udp_split_get(const char *keys, size_t keys_len, const char *reply, size_t rlen,
                      void (*emit)(size_t len, void *arg), void *arg);

/* ---- udp.c: the sockets ---- */
struct evbuffer;
/* Open the UDP sockets for -U on spec ("host", "[v6]", NULL = all), one
 * per loop. Returns 0, or -1 with err. The port bound is in *bound (for
 * port 0/-1: the kernel's choice). */
int mc_udp_open(const char *host, int port, int *bound, char *err, size_t errlen);
/* Close them all (after the loops stopped). */
void mc_udp_close_all(void);

/* "stats conns": each UDP socket, as memcached lists them. */
void mc_udp_foreach(void (*fn)(int fd, const void *sockaddr, unsigned salen, uint32_t last_cmd, void *arg), void *arg);
/* Datagrams dropped (too short, multi-datagram requests, replies cut at
 * 65535 datagrams or refused by the kernel): the metrics' udp_dropped. */
uint64_t mc_udp_dropped(void);
/* UDP sockets open (memcached counts them in curr_connections). */
uint64_t mc_udp_count(void);

#endif
