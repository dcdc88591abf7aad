/* auth.h: password files and the text protocol's authentication (-Y).
 *
 * auth_ascii.c owns both. A password file holds "user:password" lines; it
 * is read at start and on SIGHUP (never per attempt), into a table the
 * loops read under a read lock, and checked in constant time (every entry
 * compared, user and password both, so the time taken tells neither which
 * user exists nor how much of a password matched). The SASL path (-S)
 * and -Y each keep one.
 *
 * -Y FILE, as memcached 1.6.18: a text connection must first send
 * "set <any key> <flags> <exptime> <bytes>\r\n<user> <password>\r\n";
 * until then every request gets "CLIENT_ERROR unauthenticated". A good
 * pair answers STORED (nothing is stored), a bad one "CLIENT_ERROR
 * authentication failure" (counted in auth_cmds / auth_errors, and the
 * connection's next request waits, as after a failed SASL attempt). */
#ifndef MC_AUTH_H
#define MC_AUTH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

struct mc_pw_entry;
struct mc_pwfile {
    pthread_rwlock_t lock;
    struct mc_pw_entry *v;
    size_t n;
};
#define MC_PWFILE_INIT                                                                                                 \
    {                                                                                                                  \
        PTHREAD_RWLOCK_INITIALIZER, NULL, 0                                                                            \
    }

/* Read path into pf, replacing what it held (kept when this fails).
 * strict: a line without ':' is an error (-Y, as memcached); else such
 * lines are skipped (SASL). Blank lines are skipped. Returns the number of
 * users, or -1 with err. Lines longer than 4 KiB are refused. */
long mc_pwfile_load(struct mc_pwfile *pf, const char *path, bool strict, char *err, size_t errlen);
bool mc_pwfile_check(struct mc_pwfile *pf, const char *user, size_t ulen, const char *pass, size_t plen);

/* -Y's login request (proto_auth.c, pure): what is at the front of buf. */
#define MC_AUTH_LINE_MAX 2048 /* no line end within this: junk, closed (as memcached) */
#define MC_AUTH_DATA_MAX 4096 /* ours: the "user password" block and its CRLF */
enum mc_auth_kind {
    MC_AUTH_NEED_MORE = 0,
    MC_AUTH_NOT_LOGIN,  /* a line that is not the login set: consumed bytes */
    MC_AUTH_JUNK,       /* no line end within MC_AUTH_LINE_MAX: close */
    MC_AUTH_TOO_LONG,   /* a login block over MC_AUTH_DATA_MAX: answer, then close */
    MC_AUTH_BAD_END,    /* the block not ended by CRLF: consumed bytes */
    MC_AUTH_BAD_FORMAT, /* fewer than two tokens: consumed bytes */
    MC_AUTH_PAIR,       /* user and pass (pointing into buf): consumed bytes */
};
struct mc_auth_req {
    enum mc_auth_kind kind;
    size_t consumed;
    const char *user, *pass;
    size_t nuser, npass;
};
enum mc_auth_kind mc_auth_ascii_parse(const char *buf, size_t len, struct mc_auth_req *r);

/* -Y (auth_ascii.c). */
int mc_auth_ascii_load(char *err, size_t errlen);
struct session;
struct evbuffer;
/* The text driver's step while the session has not logged in. */
int mc_auth_ascii_step(struct session *s, struct evbuffer *in, size_t len, bool *progress);

#endif
