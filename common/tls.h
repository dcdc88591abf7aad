/* tls: OpenSSL server contexts for bufferevent_openssl listeners.
 *
 * A context is built from a PEM certificate (chain) file, a PEM key file and
 * an OpenSSL cipher list; tls_accept_bev wraps an accepted socket. Reload
 * builds a fresh context (new connections use it; old ones keep theirs). */
#ifndef CORE_TLS_H
#define CORE_TLS_H

#include <stddef.h>

struct bufferevent;
struct event_base;

/* Returns an SSL_CTX * (as void *) or NULL with a message in err. ciphers may
 * be NULL (OpenSSL's default). */
void *tls_server_ctx_new(const char *cert_file, const char *key_file, const char *ciphers, char *err, size_t errlen);
void tls_ctx_free(void *ctx);
/* Re-read cert and key into a new context; on success frees *ctx and
 * replaces it. Returns 0 or -1 with err (the old context stays). */
int tls_server_ctx_reload(void **ctx, const char *cert_file, const char *key_file, const char *ciphers, char *err,
                          size_t errlen);
/* Server-side TLS bufferevent over an accepted fd (owned by the bev). NULL
 * on failure (fd is not closed). */
struct bufferevent *tls_accept_bev(void *ctx, struct event_base *base, int fd);

#endif
