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
#include "tests/fuzz/fuzz_session.h"

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
    fuzz_session_run(loop, side ? mog_st_side_accept : mog_st_http_accept, data, size);
    if (++runs % 256 == 0)
        nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
