/* uring: batched non-blocking socket operations over io_uring (liburing).
 *
 * Owns one ring per batch and nothing else: it does not know connections,
 * buffers or the loop. Built without liburing, uring_new fails (ENOSYS)
 * and conn stays on epoll. */
#include "common/uring.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifdef CORE_HAVE_LIBURING
#include <liburing.h>
#endif

static bool wanted, default_on;
static pthread_once_t wanted_once = PTHREAD_ONCE_INIT;

static void read_wanted(void)
{
    const char *v = getenv("STACK_IO_URING");
    if (!v || !*v)
        wanted = default_on;
    else
        wanted = !strcmp(v, "1") || !strcasecmp(v, "yes") || !strcasecmp(v, "on") || !strcasecmp(v, "true");
}

void uring_default(bool on)
{
    default_on = on;
}

bool uring_wanted(void)
{
    pthread_once(&wanted_once, read_wanted);
    return wanted;
}

#ifdef CORE_HAVE_LIBURING

struct uring_batch {
    struct io_uring ring;
    unsigned entries;
    unsigned queued;
    bool broken; /* a submission failed: entries may be left in the ring */
    uint64_t runs, ops;
};

struct uring_batch *uring_new(unsigned entries)
{
    struct uring_batch *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    /* The ring is used by one thread, and every operation completes inside
     * the submitting call: no task work is ever run on our behalf later,
     * so the kernel need not interrupt the thread for it (COOP_TASKRUN).
     * Older kernels refuse the flags: retry without them. */
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL;
    int rc = io_uring_queue_init_params(entries, &u->ring, &p);
    if (rc == -EINVAL) {
        memset(&p, 0, sizeof p);
        rc = io_uring_queue_init_params(entries, &u->ring, &p);
    }
    if (rc < 0) {
        free(u);
        errno = -rc;
        return NULL;
    }
    u->entries = entries;
    return u;
}

void uring_free(struct uring_batch *u)
{
    if (!u)
        return;
    io_uring_queue_exit(&u->ring);
    free(u);
}

unsigned uring_room(const struct uring_batch *u) { return u->entries - u->queued; }

static bool queue(struct uring_batch *u, bool recv, int fd, struct msghdr *msg, struct iovec *iov, int n, uint64_t tag)
{
    if (u->queued >= u->entries)
        return false;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe)
        return false;
    /* MSG_DONTWAIT: -EAGAIN comes back as the result instead of the kernel
     * arming a poll and finishing later, so no buffer outlives the run. */
    int flags = MSG_DONTWAIT | (recv ? 0 : MSG_NOSIGNAL);
    if (n == 1) {
        if (recv)
            io_uring_prep_recv(sqe, fd, iov[0].iov_base, iov[0].iov_len, flags);
        else
            io_uring_prep_send(sqe, fd, iov[0].iov_base, iov[0].iov_len, flags);
    } else {
        memset(msg, 0, sizeof *msg);
        msg->msg_iov = iov;
        msg->msg_iovlen = (size_t)n;
        if (recv)
            io_uring_prep_recvmsg(sqe, fd, msg, (unsigned)flags);
        else
            io_uring_prep_sendmsg(sqe, fd, msg, (unsigned)flags);
    }
    io_uring_sqe_set_data64(sqe, tag);
    u->queued++;
    return true;
}

bool uring_recv(struct uring_batch *u, int fd, struct msghdr *msg, struct iovec *iov, int n, uint64_t tag)
{
    return queue(u, true, fd, msg, iov, n, tag);
}

bool uring_send(struct uring_batch *u, int fd, struct msghdr *msg, struct iovec *iov, int n, uint64_t tag)
{
    return queue(u, false, fd, msg, iov, n, tag);
}

int uring_run(struct uring_batch *u, void (*done)(void *arg, uint64_t tag, int res), void *arg)
{
    unsigned want = u->queued;
    if (want == 0 || u->broken)
        return u->broken ? -EIO : 0;
    u->queued = 0;
    u->runs++;
    /* Wait for all of them: they finish inline (MSG_DONTWAIT), so this
     * returns at once; waiting makes that a guarantee for the buffers. */
    int rc;
    do
        rc = io_uring_submit_and_wait(&u->ring, want);
    while (rc == -EINTR);
    if (rc < 0) {
        u->broken = true; /* the entries stay in the ring: free the batch */
        return rc;
    }
    /* Without SUBMIT_ALL (older kernels) the kernel stops at an entry it
     * refuses (and answers that one): submit the rest. If that fails, the
     * ones that did go are still reported; the others never ran. */
    unsigned sent = (unsigned)rc;
    while (sent < want) {
        rc = io_uring_submit(&u->ring);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN) {
            u->broken = true;
            break;
        }
        if (rc > 0)
            sent += (unsigned)rc;
    }
    unsigned got = 0;
    while (got < sent) {
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&u->ring, head, cqe)
        {
            done(arg, io_uring_cqe_get_data64(cqe), cqe->res);
            seen++;
        }
        io_uring_cq_advance(&u->ring, seen);
        got += seen;
        if (got < sent) { /* not finished inline (should not happen): wait */
            int w = io_uring_wait_cqe(&u->ring, &cqe);
            if (w < 0 && w != -EINTR && w != -EAGAIN) {
                u->broken = true;
                break;
            }
        }
    }
    u->ops += got;
    return (int)got;
}

bool uring_broken(const struct uring_batch *u) { return u->broken; }

void uring_counters(const struct uring_batch *u, uint64_t *runs, uint64_t *ops)
{
    *runs = u->runs;
    *ops = u->ops;
}

#else /* !CORE_HAVE_LIBURING */

struct uring_batch {
    int unused;
};

struct uring_batch *uring_new(unsigned entries)
{
    (void)entries;
    errno = ENOSYS;
    return NULL;
}
void uring_free(struct uring_batch *u) { (void)u; }
unsigned uring_room(const struct uring_batch *u)
{
    (void)u;
    return 0;
}
bool uring_recv(struct uring_batch *u, int fd, struct msghdr *msg, struct iovec *iov, int n, uint64_t tag)
{
    (void)u, (void)fd, (void)msg, (void)iov, (void)n, (void)tag;
    return false;
}
bool uring_send(struct uring_batch *u, int fd, struct msghdr *msg, struct iovec *iov, int n, uint64_t tag)
{
    (void)u, (void)fd, (void)msg, (void)iov, (void)n, (void)tag;
    return false;
}
int uring_run(struct uring_batch *u, void (*done)(void *arg, uint64_t tag, int res), void *arg)
{
    (void)u, (void)done, (void)arg;
    return -ENOSYS;
}
bool uring_broken(const struct uring_batch *u)
{
    (void)u;
    return true;
}
void uring_counters(const struct uring_batch *u, uint64_t *runs, uint64_t *ops)
{
    (void)u;
    *runs = *ops = 0;
}

#endif
