/* libFuzzer target: memcached's -o ssl_* option values (memcached/tls.c)
 * over arbitrary bytes, split as -o splits them (commas, then the first
 * '='): every call answers taken / not ours / refused, a refusal carries
 * a message, and the verify mode taken is one of memcached's 0..3. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memcached/mc.h"
#include "memcached/session.h"

struct mc_settings mc_settings;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        const char *val = NULL;
        if (eq) {
            *eq = '\0';
            val = eq + 1;
        }
        char err[256] = "";
        int rc = mc_tls_option(tok, val, err, sizeof err);
        if (rc < -1 || rc > 1)
            abort();
        if (rc < 0 && !err[0])
            abort();
        if (rc == 0 && strncmp(tok, "ssl_", 4) == 0 && strcmp(tok, "ssl_") != 0 && err[0])
            abort();
        if (mc_settings.ssl_verify_mode < 0 || mc_settings.ssl_verify_mode > 3)
            abort();
    }
    free(mc_settings.ssl_chain_cert);
    free(mc_settings.ssl_key);
    free(mc_settings.ssl_ciphers);
    free(mc_settings.ssl_ca_cert);
    memset(&mc_settings, 0, sizeof mc_settings);
    free(buf);
    return 0;
}
