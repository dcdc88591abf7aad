/* tls: OpenSSL server contexts and accepted-socket wrapping (see tls.h). */
#include "common/tls.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/log.h"

static void ssl_err(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, errlen, "%s %s: %s", what, file ? file : "", e ? buf : "failed");
    ERR_clear_error();
}

/* A server context that requires client certificates remembers its CA
 * file (ex_data, freed with the context), so a reload can read it again. */
static int ca_index = -1;
static pthread_once_t ca_once = PTHREAD_ONCE_INIT;

static void ca_path_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    free(ptr);
}

static void ca_index_init(void) { ca_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ca_path_free); }

static const char *ca_path_of(SSL_CTX *ctx)
{
    pthread_once(&ca_once, ca_index_init);
    return ca_index >= 0 ? SSL_CTX_get_ex_data(ctx, ca_index) : NULL;
}

void *tls_server_ctx_new(const char *cert_file, const char *key_file, const char *ciphers, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ssl_err(err, errlen, "SSL_CTX_new", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (!cert_file || SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        ssl_err(err, errlen, "cannot load certificate", cert_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (!key_file || SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ssl_err(err, errlen, "cannot load private key", key_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* Old Perlbal cipher strings name ciphers modern OpenSSL no longer has;
     * a list that selects nothing falls back to the default. */
    if (ciphers && *ciphers && SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
        ERR_clear_error();
        log_warn("tls: cipher list '%s' selects no cipher this OpenSSL has; using its defaults", ciphers);
    }
    return ctx;
}

void *tls_client_ctx_new(const char *ca_file, bool verify, const char *cert_file, const char *key_file, char *err,
                         size_t errlen)
{
    if (!cert_file != !key_file) {
        snprintf(err, errlen, "a client certificate needs both a certificate and a key file");
        return NULL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        ssl_err(err, errlen, "SSL_CTX_new", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (verify) {
        int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            ssl_err(err, errlen, "cannot load CA certificates", ca_file ? ca_file : "(system store)");
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    if (cert_file &&
        (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1 ||
         SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1)) {
        ssl_err(err, errlen, "cannot load client certificate", cert_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int tls_server_ctx_require_client_cert(void *ctx, const char *ca_file, char *err, size_t errlen)
{
    if (!ctx || !ca_file || !*ca_file) {
        snprintf(err, errlen, "client certificates need a CA file");
        return -1;
    }
    pthread_once(&ca_once, ca_index_init);
    char *path = strdup(ca_file);
    if (!path || ca_index < 0) {
        free(path);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* Load into a fresh store first: a CA file that does not load leaves
     * ctx as it was (a reload with a broken CA file keeps the old CAs). */
    X509_STORE *store = X509_STORE_new();
    if (!store || X509_STORE_load_file(store, ca_file) != 1) {
        ssl_err(err, errlen, "cannot load CA certificates", ca_file);
        X509_STORE_free(store);
        free(path);
        return -1;
    }
    /* the CA names are offered to the client in the CertificateRequest */
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_file);
    ERR_clear_error();
    SSL_CTX_set_cert_store(ctx, store); /* frees the old store */
    if (names)
        SSL_CTX_set_client_CA_list(ctx, names);
    char *old = SSL_CTX_get_ex_data(ctx, ca_index);
    SSL_CTX_set_ex_data(ctx, ca_index, path);
    free(old);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    return 0;
}

void tls_ctx_free(void *ctx) { SSL_CTX_free(ctx); }

int tls_server_ctx_reload(void **ctx, const char *cert_file, const char *key_file, const char *ciphers, char *err,
                          size_t errlen)
{
    SSL_CTX *n = tls_server_ctx_new(cert_file, key_file, ciphers, err, errlen);
    if (!n)
        return -1;
    const char *ca = *ctx ? ca_path_of(*ctx) : NULL;
    if (ca) { /* the client-certificate requirement, with the CA file as it is now */
        if (tls_server_ctx_require_client_cert(n, ca, err, errlen) < 0) {
            SSL_CTX_free(n);
            return -1;
        }
        SSL_CTX_set_verify_depth(n, SSL_CTX_get_verify_depth(*ctx));
    }
    if (*ctx)
        SSL_CTX_free(*ctx);
    *ctx = n;
    return 0;
}

struct bufferevent *tls_accept_bev(void *ctx, struct event_base *base, int fd)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    struct bufferevent *bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!bev)
        SSL_free(ssl);
    return bev;
}
