/* tls: memcached 1.6.18's TLS settings (-Z, -o ssl_*) over OpenSSL.
 *
 * Owns the server context every TLS listener accepts with (mc_tls_ctx,
 * swapped whole by refresh_certs), the ssl_* options with memcached's
 * values and messages, client-certificate checks (ssl_verify_mode 0..3,
 * ssl_ca_cert), the session cache and kernel TLS switches, and the ssl
 * stats. Accepting a socket over a context is the core's (common/tls).
 *
 * Why not common/tls's context builder: memcached's key format, its verify
 * modes 1 and 3, its error lines (which refresh_certs sends to the client)
 * and its minimum versions down to TLS 1.0 are memcached's own; the core's
 * builder fixes PEM keys, TLS 1.2 and mode 2 for all daemons.
 *
 * Must not: print a key or a password; block a loop for more than the
 * reads of the three files on refresh_certs (an operator's command). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/log.h"
#include "common/stats.h"
#include "common/tls.h"
#include "memcached/mc.h"
#include "memcached/session.h"

/* The context new TLS connections are accepted with (listeners hold its
 * address); connections made before a refresh keep the one they have. */
void *mc_tls_ctx;

static _Atomic uint64_t handshake_errors, new_sessions;
static _Atomic uint64_t last_refresh; /* mono_seconds() of the last good load */

static uint64_t mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec;
}

/* memcached's values: ssl_verify_mode is kept as OpenSSL's flags (stats
 * settings shows them so: mode 2 is 3, mode 3 is 7), ssl_min_version as
 * the protocol version, ssl_keyformat as OpenSSL's file type. */
static int verify_flags = SSL_VERIFY_NONE;
static int min_version = TLS1_2_VERSION;
static int key_format = SSL_FILETYPE_PEM;
static unsigned wbuf_size = 16 * 1024;
static bool session_cache, kernel_tls;

static bool parse_long(const char *v, long *out)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    while (*end == ' ' || *end == '\t' || *end == '\n')
        end++;
    if (errno || end == v || *end)
        return false;
    *out = n;
    return true;
}

int mc_tls_option(const char *name, const char *val, char *err, size_t errlen)
{
    if (strncmp(name, "ssl_", 4) != 0)
        return 0;
    bool flag = strcmp(name, "ssl_session_cache") == 0 || strcmp(name, "ssl_kernel_tls") == 0;
    static const char *const known[] = { "ssl_chain_cert", "ssl_key",     "ssl_verify_mode", "ssl_keyformat",
                                         "ssl_ciphers",    "ssl_ca_cert", "ssl_wbuf_size",   "ssl_min_version" };
    size_t i = 0;
    while (!flag && i < sizeof known / sizeof *known && strcmp(known[i], name) != 0)
        i++;
    if (!flag && i == sizeof known / sizeof *known)
        return 0; /* the caller's "Illegal suboption" */
    if (flag) {
        if (strcmp(name, "ssl_session_cache") == 0)
            session_cache = true;
        else
            kernel_tls = true;
        return 1;
    }
    if (!val || !*val) {
        snprintf(err, errlen, "Missing %s argument", name);
        return -1;
    }
    char **str = strcmp(name, "ssl_chain_cert") == 0 ? &mc_settings.ssl_chain_cert
                 : strcmp(name, "ssl_key") == 0      ? &mc_settings.ssl_key
                 : strcmp(name, "ssl_ciphers") == 0  ? &mc_settings.ssl_ciphers
                 : strcmp(name, "ssl_ca_cert") == 0  ? &mc_settings.ssl_ca_cert
                                                     : NULL;
    if (str) {
        free(*str);
        *str = strdup(val);
        return *str ? 1 : -1;
    }
    long n;
    if (strcmp(name, "ssl_min_version") == 0) {
        /* memcached's 0..3; our earlier tlsv1.2/tlsv1.3 names still work */
        if (strcmp(val, "tlsv1.2") == 0 || strcmp(val, "tlsv1.3") == 0) {
            min_version = val[6] == '3' ? TLS1_3_VERSION : TLS1_2_VERSION;
            return 1;
        }
        if (!parse_long(val, &n)) {
            snprintf(err, errlen, "could not parse argument to ssl_min_version");
            return -1;
        }
        static const int versions[] = { TLS1_VERSION, TLS1_1_VERSION, TLS1_2_VERSION, TLS1_3_VERSION };
        if (n < 0 || n > 3) {
            snprintf(err, errlen, "Invalid ssl_min_version. Use help to see valid options.");
            return -1;
        }
        min_version = versions[n];
        return 1;
    }
    if (!parse_long(val, &n)) {
        snprintf(err, errlen, "could not parse argument to %s", name);
        return -1;
    }
    if (strcmp(name, "ssl_verify_mode") == 0) {
        /* 0 none, 1 request (checked when sent), 2 require, 3 once */
        static const int modes[] = { SSL_VERIFY_NONE, SSL_VERIFY_PEER,
                                     SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                                     SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT | SSL_VERIFY_CLIENT_ONCE };
        if (n < 0 || n > 3) {
            snprintf(err, errlen, "Invalid ssl_verify_mode. Use help to see valid options.");
            return -1;
        }
        verify_flags = modes[n];
        mc_settings.ssl_verify_mode = (int)n;
    } else if (strcmp(name, "ssl_keyformat") == 0) {
        key_format = (int)n; /* a format OpenSSL does not know fails loading the key, as memcached */
    } else {                 /* ssl_wbuf_size, in KB; shown, our TLS writes go through the bufferevent */
        if (n < 0 || n > (long)(UINT32_MAX / 1024)) {
            snprintf(err, errlen, "could not parse argument to ssl_wbuf_size");
            return -1;
        }
        wbuf_size = (unsigned)n * 1024;
    }
    return 1;
}

static const char *proto_text(int v)
{
    switch (v) {
    case TLS1_VERSION: return "tlsv1.0";
    case TLS1_1_VERSION: return "tlsv1.1";
    case TLS1_2_VERSION: return "tlsv1.2";
    case TLS1_3_VERSION: return "tlsv1.3";
    default: return "unknown";
    }
}

static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    (void)sess;
    atomic_fetch_add(&new_sessions, 1);
    return 0; /* OpenSSL keeps its own reference */
}

static void ssl_error_text(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    buf[0] = '\0';
    if (e)
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
}

/* A whole context from the settings, or NULL with memcached's message for
 * what failed (the line refresh_certs answers and start-up prints). */
static SSL_CTX *build_ctx(char *msg, size_t msglen)
{
    char ssl_err[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ssl_error_text(ssl_err, sizeof ssl_err);
        snprintf(msg, msglen, "SSL_CTX_new: %s", ssl_err);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, min_version);
    const char *cert = mc_settings.ssl_chain_cert, *key = mc_settings.ssl_key, *ca = mc_settings.ssl_ca_cert;
    bool ok = false;
    /* (no file name: OpenSSL's "Bad address", which memcached prints as (null)) */
    if (!cert || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        ssl_error_text(ssl_err, sizeof ssl_err);
        snprintf(msg, msglen, "Error loading the certificate chain: %s : %s", cert ? cert : "(null)",
                 cert ? ssl_err : "error:8000000E:system library::Bad address");
    } else if (!key || SSL_CTX_use_PrivateKey_file(ctx, key, key_format) != 1) {
        ssl_error_text(ssl_err, sizeof ssl_err);
        snprintf(msg, msglen, "Error loading the key: %s : %s", key ? key : "(null)",
                 key ? ssl_err : "error:8000000E:system library::Bad address");
    } else if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_error_text(ssl_err, sizeof ssl_err);
        snprintf(msg, msglen, "Error validating the certificate: %s", ssl_err);
    } else if (ca && SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        ssl_error_text(ssl_err, sizeof ssl_err);
        snprintf(msg, msglen, "Error loading the CA certificate: %s : %s", ca, ssl_err);
    } else {
        if (ca) /* the names offered in the server's certificate request */
            SSL_CTX_set_client_CA_list(ctx, SSL_load_client_CA_file(ca));
        ok = true;
    }
    if (ok && mc_settings.ssl_ciphers && SSL_CTX_set_cipher_list(ctx, mc_settings.ssl_ciphers) != 1) {
        snprintf(msg, msglen, "Error setting the provided cipher(s): %s", mc_settings.ssl_ciphers);
        ok = false;
    }
    ERR_clear_error();
    if (!ok) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, verify_flags, NULL);
    if (session_cache) {
        static const unsigned char id_ctx[] = "memcached";
        SSL_CTX_sess_set_new_cb(ctx, on_new_session);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
        SSL_CTX_set_session_id_context(ctx, id_ctx, sizeof id_ctx - 1);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    if (kernel_tls)
        SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return ctx;
}

int mc_tls_setup(void)
{
    char msg[1024];
    if (mc_settings.port == 0) {
        log_error("ERROR: You cannot enable SSL without a TCP port.");
        return -1;
    }
    mc_tls_ctx = build_ctx(msg, sizeof msg);
    if (!mc_tls_ctx) {
        log_error("%s", msg);
        return -1;
    }
    atomic_store(&last_refresh, mono_seconds());
    return 0;
}

int mc_tls_refresh(char *msg, size_t msglen)
{
    if (!mc_tls_ctx) {
        snprintf(msg, msglen, "Error TLS not enabled"); /* memcached's words */
        return -1;
    }
    /* The file reads happen on the calling loop: a rare operator command. */
    SSL_CTX *ctx = build_ctx(msg, msglen);
    if (!ctx)
        return -1; /* the old context stays */
    /* Another loop may have just loaded the old pointer to accept with:
     * the old context is freed one refresh later, not now (connections
     * hold their own reference to it anyway). */
    static void *retired;
    static pthread_mutex_t refresh_lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&refresh_lock);
    if (retired)
        tls_ctx_free(retired);
    retired = __atomic_exchange_n(&mc_tls_ctx, (void *)ctx, __ATOMIC_ACQ_REL);
    pthread_mutex_unlock(&refresh_lock);
    atomic_store(&last_refresh, mono_seconds());
    return 0;
}

void mc_tls_handshake_failed(void) { atomic_fetch_add(&handshake_errors, 1); }

void mc_tls_stats(struct stats_sink *k)
{
    if (!mc_settings.ssl_enabled)
        return;
    if (session_cache)
        stats_u64(k, "ssl_new_sessions", atomic_load(&new_sessions));
    stats_u64(k, "ssl_handshake_errors", atomic_load(&handshake_errors));
    stats_u64(k, "time_since_server_cert_refresh", mono_seconds() - atomic_load(&last_refresh));
}

void mc_tls_stats_settings(struct stats_sink *k)
{
    stats_str(k, "ssl_enabled", mc_settings.ssl_enabled ? "yes" : "no");
    stats_str(k, "ssl_chain_cert", mc_settings.ssl_chain_cert ? mc_settings.ssl_chain_cert : "(null)");
    stats_str(k, "ssl_key", mc_settings.ssl_key ? mc_settings.ssl_key : "(null)");
    stats_u64(k, "ssl_verify_mode", (uint64_t)verify_flags);
    stats_i64(k, "ssl_keyformat", key_format);
    stats_str(k, "ssl_ciphers", mc_settings.ssl_ciphers ? mc_settings.ssl_ciphers : "NULL");
    stats_str(k, "ssl_ca_cert", mc_settings.ssl_ca_cert ? mc_settings.ssl_ca_cert : "NULL");
    stats_u64(k, "ssl_wbuf_size", wbuf_size);
    stats_str(k, "ssl_session_cache", session_cache ? "yes" : "no");
    stats_str(k, "ssl_kernel_tls", kernel_tls ? "yes" : "no");
    stats_str(k, "ssl_min_version", proto_text(min_version));
}
