/* fuzz_session.h: the harness of the session fuzz targets — one peer's
 * byte stream fed through a real core conn over a socketpair.
 *
 * The daemon's accept function takes one end; the input is written to the
 * other as fast as the socket takes it, the loop turning between writes
 * and every reply read and dropped; then the peer hangs up (EOF) and the
 * loop turns until the session has ended. A session still open after that
 * aborts (a hang is a bug the fuzzer must report). Header-only: each
 * target is one program with the daemon's sources. */
#ifndef FUZZ_SESSION_H
#define FUZZ_SESSION_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/conn.h"
#include "common/loop.h"

typedef void (*fuzz_accept_fn)(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg);

/* Read and drop what the daemon sent. */
static inline void fuzz_session_drain(int fd)
{
    char buf[65536];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

/* Feed data[0..size) to a new session made by accept on loop, then EOF;
 * returns once the session has ended (aborts if it does not). */
static inline void fuzz_session_run(struct core_loop *loop, fuzz_accept_fn accept, const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    accept(loop, sv[0], NULL, 0, NULL);
    size_t off = 0;
    int spins = 0;
    while (off < size && spins++ < 10000) {
        ssize_t w = write(sv[1], data + off, size - off);
        if (w > 0)
            off += (size_t)w;
        else if (w < 0 && errno != EAGAIN)
            break;
        event_base_loop(loop->base, EVLOOP_NONBLOCK);
        fuzz_session_drain(sv[1]);
    }
    shutdown(sv[1], SHUT_WR);
    for (spins = 0; conn_total_current() > 0 && spins < 10000; spins++) {
        event_base_loop(loop->base, EVLOOP_NONBLOCK);
        fuzz_session_drain(sv[1]);
    }
    if (conn_total_current() != 0)
        abort(); /* the session did not end after the peer hung up */
    close(sv[1]);
}

#endif
