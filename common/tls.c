/* tls: OpenSSL server contexts and accepted-socket wrapping (see tls.h). */
#include "common/tls.h"

#include <stdio.h>

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
    if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        ssl_err(err, errlen, "cannot load CA certificates", ca_file);
        return -1;
    }
    /* the CA names are offered to the client in the CertificateRequest */
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_file);
    if (names)
        SSL_CTX_set_client_CA_list(ctx, names);
    ERR_clear_error();
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
    if (*ctx && (SSL_CTX_get_verify_mode(*ctx) & SSL_VERIFY_PEER)) { /* keep the client-cert requirement */
        X509_STORE *store = SSL_CTX_get_cert_store(*ctx);
        STACK_OF(X509_NAME) *names = SSL_CTX_get_client_CA_list(*ctx);
        if (store && X509_STORE_up_ref(store) == 1)
            SSL_CTX_set_cert_store(n, store);
        if (names) {
            STACK_OF(X509_NAME) *dup = SSL_dup_CA_list(names);
            if (dup)
                SSL_CTX_set_client_CA_list(n, dup);
        }
        SSL_CTX_set_verify(n, SSL_CTX_get_verify_mode(*ctx), NULL);
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
