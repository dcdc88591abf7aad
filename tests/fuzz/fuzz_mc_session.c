/* libFuzzer target: the whole memcached connection path — session state
 * machine, the three protocols' handlers and the item store — driven
 * through a real core conn over a socketpair. Each input is sent as one
 * client's byte stream (then EOF); replies are read and dropped. Checks
 * that nothing crashes, leaks or hangs, whatever the bytes. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/conn.h"
#include "common/log.h"
#include "common/loop.h"
#include "memcached/mc.h"
#include "memcached/session.h"
#include "tests/fuzz/fuzz_session.h"

/* What memcached.c and tls.c (not linked: main, OpenSSL contexts) give session.c. */
struct mc_settings mc_settings;
void mc_stats_reset(void) {}
bool mc_sasl_check(const char *user, size_t ulen, const char *pass, size_t plen)
{
    return ulen == 1 && plen == 1 && user[0] == 'u' && pass[0] == 'p';
}
void mc_shutdown_request(bool graceful) { (void)graceful; }
int mc_tls_refresh(char *err, size_t errlen)
{
    snprintf(err, errlen, "TLS is not enabled");
    return -1;
}
void mc_tls_handshake_failed(void) {} /* tls.c's counter: no TLS here */

static struct core_loop *loop;
static struct mc_thread thread_state;

static void setup(void)
{
    log_init("fuzz", LOG_LEVEL_ERROR, false, NULL);
    mc_settings.maxbytes = 4u << 20;
    mc_settings.item_size_max = 64 * 1024;
    mc_settings.factor = 1.25;
    mc_settings.chunk_min = 48;
    mc_settings.hot_pct = 20;
    mc_settings.warm_pct = 40;
    mc_settings.maxconns = 100;
    mc_settings.threads = 1;
    mc_settings.slab_reassign = true; /* the daemon's defaults */
    mc_settings.slab_automove = 1;
    mc_settings.reqs_per_event = 20;
    mc_settings.out_mem_limit = 8u << 20;
    mc_settings.auth_delay_us = 0; /* SASL failures pause 0 s here: the loop spins, time does not pass */
    mc_clock_update();
    if (loop_init(1) < 0 || mc_slabs_init() < 0 || mc_assoc_init(10) < 0)
        abort();
    loop = loop_get(0);
    pthread_mutex_init(&thread_state.sessions_lock, NULL);
    loop->data = &thread_state;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        setup();
        ready = true;
    }
    /* Inputs ending in 0xff run with SASL required (-S): binary only, and
     * nothing but SASL until "u"/"p" authenticates. */
    mc_settings.sasl = size > 0 && data[size - 1] == 0xff;
    fuzz_session_run(loop, mc_session_accept, data, size);
    mc_flush(0);
    return 0;
}
