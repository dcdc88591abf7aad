/* tls: server contexts from PEM files (errors named, mismatched key refused,
 * reload keeps the old context on failure) and a real handshake + echo over
 * a socketpair between a tls_accept_bev and a blocking OpenSSL client. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/tls.h"
#include "tests/unit/common/test_cert.h"
#include "tests/unit/unit.h"

static char dir[] = "/tmp/test_tls.XXXXXX";
static char cert1[256], key1[256], cert2[256], key2[256];

static void test_ctx_errors(void)
{
    char err[256] = "";
    CHECK(tls_server_ctx_new("/nonexistent/cert.pem", key1, NULL, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "/nonexistent/cert.pem") != NULL);
    err[0] = '\0';
    CHECK(tls_server_ctx_new(cert1, key2, NULL, err, sizeof(err)) == NULL); /* key of another cert */
    CHECK(err[0] != '\0');
    /* Perlbal configs name ciphers modern OpenSSL lacks: warned, defaults kept */
    void *ctx = tls_server_ctx_new(cert1, key1, "NO-SUCH-CIPHER", err, sizeof(err));
    CHECK(ctx != NULL);
    tls_ctx_free(ctx);
    ctx = tls_server_ctx_new(cert1, key1, "HIGH:!aNULL", err, sizeof(err));
    CHECK(ctx != NULL);
    tls_ctx_free(ctx);
}

static void test_reload(void)
{
    char err[256];
    void *ctx = tls_server_ctx_new(cert1, key1, NULL, err, sizeof(err));
    CHECK(ctx != NULL);
    void *before = ctx;
    CHECK_EQ_INT(tls_server_ctx_reload(&ctx, "/nonexistent", key1, NULL, err, sizeof(err)), -1);
    CHECK(ctx == before); /* a failed reload keeps serving with the old one */
    CHECK_EQ_INT(tls_server_ctx_reload(&ctx, cert2, key2, NULL, err, sizeof(err)), 0);
    CHECK(ctx != NULL);
    tls_ctx_free(ctx);
}

/* Server side: echo what arrives. */
static void echo_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    bufferevent_write_buffer(bev, bufferevent_get_input(bev));
}

static void echo_event(struct bufferevent *bev, short what, void *arg)
{
    struct event_base *base = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        bufferevent_free(bev);
        event_base_loopexit(base, NULL);
    }
}

static int client_fd;
static char client_got[64];
static const char *client_cert, *client_key; /* presented when set */

static void *client_main(void *arg)
{
    (void)arg;
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    if (client_cert) {
        SSL_CTX_use_certificate_chain_file(cctx, client_cert);
        SSL_CTX_use_PrivateKey_file(cctx, client_key, SSL_FILETYPE_PEM);
    }
    SSL *ssl = SSL_new(cctx);
    SSL_set_fd(ssl, client_fd);
    if (SSL_connect(ssl) == 1 && SSL_write(ssl, "ping over tls", 13) == 13) {
        int n = SSL_read(ssl, client_got, sizeof(client_got) - 1);
        if (n > 0)
            client_got[n] = '\0';
    }
    SSL_shutdown(ssl);
    SSL_free(ssl);
    SSL_CTX_free(cctx);
    shutdown(client_fd, SHUT_RDWR);
    return NULL;
}

/* One connection through ctx; true if the echo came back. */
static bool echo_through(void *ctx, const char *ccert, const char *ckey)
{
    int sv[2];
    client_cert = ccert;
    client_key = ckey;
    client_got[0] = '\0';
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return false;
    evutil_make_socket_nonblocking(sv[0]);
    struct event_base *base = event_base_new();
    struct bufferevent *bev = tls_accept_bev(ctx, base, sv[0]);
    if (!bev)
        return false;
    bufferevent_setcb(bev, echo_read, NULL, echo_event, base);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    client_fd = sv[1];
    pthread_t t;
    pthread_create(&t, NULL, client_main, NULL);
    struct timeval limit = { 10, 0 };
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    pthread_join(t, NULL);
    close(sv[1]);
    event_base_free(base);
    ERR_clear_error();
    return strcmp(client_got, "ping over tls") == 0;
}

/* A server context that requires client certificates: no certificate and
 * an untrusted one fail the handshake, a trusted one passes; the
 * requirement survives a reload (SIGHUP's path). cert1 is self-signed, so
 * as its own CA file it trusts itself only. */
static void test_client_cert_required(void)
{
    char err[256];
    void *ctx = tls_server_ctx_new(cert1, key1, NULL, err, sizeof(err));
    CHECK(ctx != NULL);
    CHECK_EQ_INT(tls_server_ctx_require_client_cert(ctx, "/nonexistent/ca.pem", err, sizeof(err)), -1);
    CHECK(strstr(err, "/nonexistent/ca.pem") != NULL);
    CHECK(echo_through(ctx, NULL, NULL)); /* a failed call left it unchanged */
    CHECK_EQ_INT(tls_server_ctx_require_client_cert(ctx, cert1, err, sizeof(err)), 0);
    CHECK(!echo_through(ctx, NULL, NULL));
    CHECK(!echo_through(ctx, cert2, key2));
    CHECK(echo_through(ctx, cert1, key1));
    CHECK_EQ_INT(tls_server_ctx_reload(&ctx, cert2, key2, NULL, err, sizeof(err)), 0);
    CHECK(!echo_through(ctx, NULL, NULL));
    CHECK(!echo_through(ctx, cert2, key2));
    CHECK(echo_through(ctx, cert1, key1));
    tls_ctx_free(ctx);
}

static int copy_file(const char *from, const char *to)
{
    FILE *f = fopen(from, "r"), *g = fopen(to, "w");
    char buf[8192];
    size_t n;
    int rc = f && g ? 0 : -1;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, f)) > 0)
        if (fwrite(buf, 1, n, g) != n)
            rc = -1;
    if (f)
        fclose(f);
    if (g && fclose(g) != 0)
        rc = -1;
    return rc;
}

/* A reload reads the client-certificate CA file again: a CA put in its
 * place is trusted from then on and the one taken out no longer is; a CA
 * file that no longer loads fails the reload and the old context (with
 * the CAs it had) stays. */
static void test_reload_rereads_ca_file(void)
{
    char err[256], ca[300];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    CHECK_EQ_INT(copy_file(cert1, ca), 0);
    void *ctx = tls_server_ctx_new(cert1, key1, NULL, err, sizeof(err));
    CHECK(ctx != NULL);
    CHECK_EQ_INT(tls_server_ctx_require_client_cert(ctx, ca, err, sizeof(err)), 0);
    CHECK(echo_through(ctx, cert1, key1));
    CHECK(!echo_through(ctx, cert2, key2));
    CHECK_EQ_INT(copy_file(cert2, ca), 0); /* the operator swaps the CA */
    CHECK(echo_through(ctx, cert1, key1)); /* nothing changes before the reload */
    CHECK_EQ_INT(tls_server_ctx_reload(&ctx, cert1, key1, NULL, err, sizeof(err)), 0);
    CHECK(echo_through(ctx, cert2, key2));
    CHECK(!echo_through(ctx, cert1, key1));
    CHECK(!echo_through(ctx, NULL, NULL)); /* still required */
    void *before = ctx;
    unlink(ca);
    CHECK_EQ_INT(tls_server_ctx_reload(&ctx, cert1, key1, NULL, err, sizeof(err)), -1);
    CHECK(strstr(err, ca) != NULL);
    CHECK(ctx == before);
    CHECK(echo_through(ctx, cert2, key2));
    tls_ctx_free(ctx);
}

/* A reloaded context serves the new certificate to new connections. */
static void test_reload_serves_new_cert(void)
{
    char err[256];
    void *ctx = tls_server_ctx_new(cert1, key1, NULL, err, sizeof(err));
    CHECK(ctx != NULL);
    X509 *before = SSL_CTX_get0_certificate(ctx);
    CHECK_EQ_INT(tls_server_ctx_reload(&ctx, cert2, key2, NULL, err, sizeof(err)), 0);
    X509 *after = SSL_CTX_get0_certificate(ctx);
    FILE *f = fopen(cert2, "r");
    X509 *want = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    CHECK(want != NULL && after != NULL && X509_cmp(after, want) == 0);
    (void)before;
    X509_free(want);
    CHECK(echo_through(ctx, NULL, NULL));
    tls_ctx_free(ctx);
}

static void test_handshake_and_echo(void)
{
    char err[256];
    void *ctx = tls_server_ctx_new(cert1, key1, NULL, err, sizeof(err));
    CHECK(ctx != NULL);
    client_cert = client_key = NULL;
    int sv[2];
    CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    evutil_make_socket_nonblocking(sv[0]);
    struct event_base *base = event_base_new();
    struct bufferevent *bev = tls_accept_bev(ctx, base, sv[0]);
    CHECK(bev != NULL);
    if (!bev)
        return;
    bufferevent_setcb(bev, echo_read, NULL, echo_event, base);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    client_fd = sv[1];
    pthread_t t;
    pthread_create(&t, NULL, client_main, NULL);
    struct timeval limit = { 10, 0 };
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    pthread_join(t, NULL);
    CHECK_STR(client_got, "ping over tls");
    close(sv[1]);
    event_base_free(base);
    tls_ctx_free(ctx);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* a refused client writes to a closed socket */
    if (!mkdtemp(dir))
        return 2;
    snprintf(cert1, sizeof(cert1), "%s/c1.pem", dir);
    snprintf(key1, sizeof(key1), "%s/k1.pem", dir);
    snprintf(cert2, sizeof(cert2), "%s/c2.pem", dir);
    snprintf(key2, sizeof(key2), "%s/k2.pem", dir);
    if (test_make_cert(cert1, key1) < 0 || test_make_cert(cert2, key2) < 0) {
        fprintf(stderr, "cannot make test certificates\n");
        return 2;
    }
    RUN(test_ctx_errors);
    RUN(test_client_cert_required);
    RUN(test_reload_serves_new_cert);
    RUN(test_reload_rereads_ca_file);
    RUN(test_reload);
    RUN(test_handshake_and_echo);
    unlink(cert1);
    unlink(key1);
    unlink(cert2);
    unlink(key2);
    rmdir(dir);
    return unit_done();
}
