/* libFuzzer target: gearmand's whole connection path — the session state
 * machine, the binary and text command handlers and the job state —
 * driven through a real core conn over a socketpair. Each input is one
 * peer's byte stream (then EOF): a client, a worker, or both at once on
 * one connection; replies are read and dropped. Checks that nothing
 * crashes, leaks or hangs, whatever the bytes, and that the connection
 * ends once the peer has hung up. The job state is rebuilt between inputs
 * (background jobs would otherwise pile up across runs). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/conn.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/stats.h"
#include "gearmand/gearmand.h"
#include "tests/fuzz/fuzz_session.h"

static struct core_loop *loop;

/* gearmand.c (not linked: it has main) registers the "" stats group. The
 * core's `stats` would otherwise print argv[1] when there is none (a core
 * bug, reported). */
static void fuzz_stats(struct stats_sink *sink, void *arg)
{
    (void)arg;
    stats_u64(sink, "jobs_current", gm.njobs);
}

static void setup(void)
{
    log_init("fuzz", LOG_LEVEL_ERROR, false, NULL);
    if (loop_init(1) < 0)
        abort();
    loop = loop_get(0);
    stats_add_source("", fuzz_stats, NULL);
    /* gearmand.c's defaults, smaller where a fuzzer would only waste time */
    gm.cfg.max_packet = 1u << 20;
    gm.cfg.max_held = 64;
    gm.cfg.max_jobs = 10000;
    gm.cfg.max_job_bytes = 64u << 20;
    gm.cfg.max_functions = 1000;
    gm.cfg.max_client_output = 1u << 20;
    gm.cfg.client_stall_timeout = 60;
    gm.cfg.wakeup = 1;
    gm.cfg.handle_prefix = strdup("H:fuzz");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        setup();
        ready = true;
    }
    gm_state_init();
    gm_sessions_init();
    /* Inputs ending in 0xfe run with --exceptions, 0xfd with the job port's
     * admin commands read-only. */
    gm.cfg.exceptions = size > 0 && data[size - 1] == 0xfe;
    gm.cfg.job_port_admin = size > 0 && data[size - 1] == 0xfd ? "read-only" : "gearmand";
    fuzz_session_run(loop, gm_accept, data, size);
    /* deferred callbacks (resumes, busy rechecks) hold session refs */
    for (int spins = 0; spins < 10; spins++)
        event_base_loop(loop->base, EVLOOP_NONBLOCK);
    gm_sessions_free();
    gm_state_free();
    return 0;
}
