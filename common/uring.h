/* uring: a batch of socket reads and writes in one system call (io_uring).
 *
 * conn uses it on plain sockets when uring_wanted(): the reads and
 * writes a loop iteration needs are queued here and run together at its
 * end, one io_uring_enter for the lot instead of one read()/writev() each.
 *
 * Every operation is submitted non-blocking (MSG_DONTWAIT): a socket with
 * nothing to give or no room answers -EAGAIN instead of the kernel waiting
 * on it, so uring_run returns with every operation finished and no buffer
 * is referenced by the kernel after it returns. libevent's epoll stays the
 * loop; the ring is never polled and holds nothing between runs.
 *
 * One batch per loop, touched only from that loop's thread. */
#ifndef CORE_URING_H
#define CORE_URING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct uring_batch;

/* True when $STACK_IO_URING asks for the ring ("1", "yes", "on", "true"),
 * false for any other value; with the variable unset or empty, the
 * daemon's default (uring_default, off unless set). Read once per process. */
bool uring_wanted(void);
/* The daemon's choice when $STACK_IO_URING is unset: call before the loops
 * start (before the first uring_wanted). */
void uring_default(bool on);

/* A ring for up to entries operations per run. NULL when io_uring cannot
 * be set up (seccomp, old kernel, RLIMIT_MEMLOCK, built without liburing):
 * errno says why. */
struct uring_batch *uring_new(unsigned entries);
void uring_free(struct uring_batch *u);
/* Operations the batch can take before it must run. */
unsigned uring_room(const struct uring_batch *u);

/* Queue a receive into iov[0..n) (n <= 2 for a plain recv with n == 1),
 * or a send of iov[0..n). msg is filled here and must stay valid, with the
 * iovecs it names, until uring_run returns. tag comes back with the result.
 * Return false when the batch is full (run it first). */
bool uring_recv(struct uring_batch *u, int fd, struct msghdr *msg, struct iovec *iov, int n, uint64_t tag);
bool uring_send(struct uring_batch *u, int fd, struct msghdr *msg, struct iovec *iov, int n, uint64_t tag);

/* Submit what is queued and wait for all of it (nothing waits on a
 * socket: see above); done(arg, tag, res) once per operation that ran, res
 * as the system call would return it (bytes, 0 = EOF on a receive) or
 * -errno. Returns how many ran, or -errno. An operation not reported did
 * not run (its bytes were neither sent nor received). After a failed
 * submission uring_broken() is true: free the batch and go on without. */
int uring_run(struct uring_batch *u, void (*done)(void *arg, uint64_t tag, int res), void *arg);
bool uring_broken(const struct uring_batch *u);

/* Counters for tests and stats: runs (io_uring_enter calls) and the
 * operations they carried, on this batch since it was made. */
void uring_counters(const struct uring_batch *u, uint64_t *runs, uint64_t *ops);

#endif
