/* auth_ascii: password files (read at start and on HUP, checked in
 * constant time) and memcached's text-protocol authentication, -Y (see
 * auth.h). The login step runs in place of the text parser until the
 * connection has logged in; it never touches the store. */
#include "memcached/auth.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/log.h"
#include "memcached/session.h"

struct mc_pw_entry {
    char *user, *pass;
    size_t ulen, plen;
};

#define PW_LINE_MAX 4096

static void free_entries(struct mc_pw_entry *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].user);
        explicit_bzero(v[i].pass, v[i].plen);
        free(v[i].pass);
    }
    free(v);
}

long mc_pwfile_load(struct mc_pwfile *pf, const char *path, bool strict, char *err, size_t errlen)
{
    /* A small file read on the calling thread: main at start, loop 0 on
     * HUP (rare; the file is a handful of lines). */
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "Could not open %s for reading: %s", path, strerror(errno));
        return -1;
    }
    struct mc_pw_entry *v = NULL;
    size_t n = 0, cap = 0;
    char line[PW_LINE_MAX + 2];
    long rc = 0;
    unsigned lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            snprintf(err, errlen, "%s line %u: longer than %d bytes", path, lineno, PW_LINE_MAX);
            rc = -1;
            break;
        }
        len = strcspn(line, "\r\n");
        line[len] = 0;
        if (len == 0)
            continue;
        char *colon = strchr(line, ':');
        if (!colon) {
            if (!strict)
                continue;
            snprintf(err, errlen, "%s has a malformed entry (line %u). Should be 'user:password'", path, lineno);
            rc = -1;
            break;
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            struct mc_pw_entry *nv = realloc(v, nc * sizeof *nv);
            if (!nv) {
                snprintf(err, errlen, "Out of memory reading password file: %s", path);
                rc = -1;
                break;
            }
            v = nv;
            cap = nc;
        }
        struct mc_pw_entry *e = &v[n];
        e->ulen = (size_t)(colon - line);
        e->plen = strlen(colon + 1);
        e->user = strndup(line, e->ulen);
        e->pass = strdup(colon + 1);
        if (!e->user || !e->pass) {
            free(e->user);
            free(e->pass);
            snprintf(err, errlen, "Out of memory reading password file: %s", path);
            rc = -1;
            break;
        }
        n++;
    }
    fclose(f);
    explicit_bzero(line, sizeof line);
    if (rc < 0) {
        free_entries(v, n);
        return -1;
    }
    pthread_rwlock_wrlock(&pf->lock);
    struct mc_pw_entry *old = pf->v;
    size_t oldn = pf->n;
    pf->v = v;
    pf->n = n;
    pthread_rwlock_unlock(&pf->lock);
    free_entries(old, oldn);
    return (long)n;
}

/* Equal in time that depends only on the longer length, not on where
 * the first difference is. */
static unsigned ct_differ(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen > blen ? alen : blen;
    unsigned diff = alen != blen;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned)(unsigned char)((i < alen ? a[i] : 0) ^ (i < blen ? b[i] : 0));
    return diff;
}

bool mc_pwfile_check(struct mc_pwfile *pf, const char *user, size_t ulen, const char *pass, size_t plen)
{
    unsigned ok = 0;
    pthread_rwlock_rdlock(&pf->lock);
    for (size_t i = 0; i < pf->n; i++) {
        const struct mc_pw_entry *e = &pf->v[i];
        unsigned d = ct_differ(e->user, e->ulen, user, ulen) | ct_differ(e->pass, e->plen, pass, plen);
        ok |= d == 0;
    }
    pthread_rwlock_unlock(&pf->lock);
    return ok != 0;
}

/* ------------------------------------------------------------------ */
/* -Y */

static struct mc_pwfile ascii_users = MC_PWFILE_INIT;

int mc_auth_ascii_load(char *err, size_t errlen)
{
    long n = mc_pwfile_load(&ascii_users, mc_settings.auth_file, true, err, errlen);
    if (n < 0)
        return -1;
    log_info("ascii auth: %ld users loaded from %s", n, mc_settings.auth_file);
    return 0;
}

int mc_auth_ascii_step(struct session *s, struct evbuffer *in, size_t len, bool *progress)
{
    size_t look = len < MC_AUTH_LINE_MAX + 1 + MC_AUTH_DATA_MAX ? len : MC_AUTH_LINE_MAX + 1 + MC_AUTH_DATA_MAX;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)look);
    if (!p)
        return 0;
    struct mc_auth_req r;
    const char *reply = NULL;
    switch (mc_auth_ascii_parse(p, look, &r)) {
    case MC_AUTH_NEED_MORE: return 0;
    case MC_AUTH_JUNK: *progress = true; return -1; /* memcached closes */
    case MC_AUTH_TOO_LONG:
        /* more than any user and password: answered, then closed (the
         * stream cannot be followed without reading all of it) */
        *progress = true;
        mc_out_line(s, "CLIENT_ERROR bad authentication token format");
        return 1;
    case MC_AUTH_NOT_LOGIN: reply = "CLIENT_ERROR unauthenticated"; break;
    case MC_AUTH_BAD_END: reply = "CLIENT_ERROR bad command line termination"; break;
    case MC_AUTH_BAD_FORMAT: reply = "CLIENT_ERROR bad authentication token format"; break;
    case MC_AUTH_PAIR:
        MC_STAT_ADD(&s->th->st, auth_cmds, 1);
        if (mc_pwfile_check(&ascii_users, r.user, r.nuser, r.pass, r.npass)) {
            reply = "STORED";
            s->auth_ascii = false;
        } else {
            reply = "CLIENT_ERROR authentication failure";
            MC_STAT_ADD(&s->th->st, auth_errors, 1);
            mc_sess_auth_failed(s);
        }
        break;
    }
    *progress = true;
    evbuffer_drain(in, r.consumed);
    mc_out_line(s, reply);
    return 0;
}
