/* tls: OpenSSL contexts for bufferevent_openssl connections.
 *
 * A server context is built from a PEM certificate (chain) file, a PEM key
 * file and an OpenSSL cipher list; tls_accept_bev wraps an accepted socket.
 * Reload builds a fresh context (new connections use it; old ones keep
 * theirs). A client context verifies the peer (system CAs or a CA file);
 * conn_start_tls (common/conn.h) upgrades a live conn with either kind and
 * sends SNI / checks the host name. */
#ifndef CORE_TLS_H
#define CORE_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct bufferevent;
struct event_base;

/* Returns an SSL_CTX * (as void *) or NULL with a message in err. ciphers may
 * be NULL (OpenSSL's default). */
void *tls_server_ctx_new(const char *cert_file, const char *key_file, const char *ciphers, char *err, size_t errlen);
void tls_ctx_free(void *ctx);
/* A client context: TLS 1.2 or later; verify = check the peer's chain
 * against ca_file (PEM; NULL = the system's CA store) and, per connection,
 * its name (conn_start_tls's server_name). verify false accepts any
 * certificate (test set-ups only: say so in the setting's help). An
 * optional client certificate (cert_file + key_file, both or neither) is
 * presented when the server asks (XMPP server-to-server). NULL + err on
 * failure. */
void *tls_client_ctx_new(const char *ca_file, bool verify, const char *cert_file, const char *key_file, char *err,
                         size_t errlen);
/* Make a server context require a client certificate signed by one of the
 * CAs in ca_file (PEM): a client without one, or with one those CAs did not
 * sign, fails the handshake. Returns 0 or -1 with err (ctx unchanged). */
int tls_server_ctx_require_client_cert(void *ctx, const char *ca_file, char *err, size_t errlen);
/* Re-read cert and key into a new context; on success frees *ctx (a
 * reference: connections using it keep it until they end) and replaces it.
 * A client-certificate requirement set on the old context carries over,
 * its CA file read again (CAs added or removed since take effect; a CA
 * file that no longer loads fails the reload). Returns 0 or -1 with err
 * (the old context stays). New connections get the new context: a daemon calls this
 * from its loop's on_reload (SIGHUP). */
int tls_server_ctx_reload(void **ctx, const char *cert_file, const char *key_file, const char *ciphers, char *err,
                          size_t errlen);
/* Server-side TLS bufferevent over an accepted fd (owned by the bev). NULL
 * on failure (fd is not closed). */
struct bufferevent *tls_accept_bev(void *ctx, struct event_base *base, int fd);

#endif
