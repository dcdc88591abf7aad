/* libFuzzer target: mogstored's whole connection path — the HTTP session
 * (GET/HEAD/Range/PUT with Content-Length or chunked, Content-MD5, DELETE,
 * keep-alive and pipelining) and the side channel — driven through a real
 * core conn over a socketpair, on a scratch docroot. The first byte picks
 * the port (even: HTTP, odd: side channel); the rest is one client's byte
 * stream, then EOF. Checks that nothing crashes, leaks or hangs. The
 * scratch docroot is emptied as it goes and removed at exit. */
#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/conn.h"
#include "common/log.h"
#include "common/loop.h"
#include "mogilefs/mogilefs.h"
#include "mogilefs/storage.h"

/* What mogilefsd's files would define (not linked here). */
struct mog_tracker mog;

static struct core_loop *loop;
static char root[256];
static unsigned runs;

static void cleanup(void);

static void setup(void)
{
    log_init("fuzz", LOG_LEVEL_ERROR, false, NULL);
    snprintf(root, sizeof root, "/tmp/fuzz-mogstored-%d", (int)getpid());
    char dev[300];
    snprintf(dev, sizeof dev, "%s/dev1", root);
    if ((mkdir(root, 0700) < 0 && errno != EEXIST) || (mkdir(dev, 0700) < 0 && errno != EEXIST))
        abort();
    mog_st_cfg.docroot = root;
    mog_st_cfg.max_put = 1 << 20;
    mog_st_cfg.idle_timeout = 60;
    mog_st_cfg.max_hash_jobs = 0; /* digests would start threads: refused */
    mog_st_cfg.disk_threads = 0;  /* disk work on the loop: deterministic */
    if (loop_init(1) < 0)
        abort();
    loop = loop_get(0);
    mog_st_sync_start(0);
    atexit(cleanup);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag;
    if (ftw->level > 1) /* keep the root and dev1 */
        remove(path);
    return 0;
}

static int rm_all(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void cleanup(void) { nftw(root, rm_all, 16, FTW_DEPTH | FTW_PHYS); }

static void drain(int fd)
{
    char buf[65536];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        setup();
        ready = true;
    }
    if (size == 0)
        return 0;
    bool side = data[0] & 1;
    data++, size--;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    if (side)
        mog_st_side_accept(loop, sv[0], NULL, 0, NULL);
    else
        mog_st_http_accept(loop, sv[0], NULL, 0, NULL);
    size_t off = 0;
    int spins = 0;
    while (off < size && spins++ < 10000) {
        ssize_t w = write(sv[1], data + off, size - off);
        if (w > 0)
            off += (size_t)w;
        else if (w < 0 && errno != EAGAIN)
            break;
        event_base_loop(loop->base, EVLOOP_NONBLOCK);
        drain(sv[1]);
    }
    shutdown(sv[1], SHUT_WR);
    for (spins = 0; conn_total_current() > 0 && spins < 10000; spins++) {
        event_base_loop(loop->base, EVLOOP_NONBLOCK);
        drain(sv[1]);
    }
    if (conn_total_current() != 0)
        abort(); /* the session did not finish after EOF */
    close(sv[1]);
    if (++runs % 256 == 0)
        nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
