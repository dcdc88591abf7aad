/* session.h: one client connection of the memcached daemon and the
 * per-thread counters the stats sources add up (memcached.c).
 *
 * session.c owns the connection: the state machine, reading requests,
 * data blocks and the reply buffer. The command files (cmd_text.c,
 * cmd_meta.c, cmd_bin.c) run parsed requests against the store and write
 * replies through the mc_out_* helpers below; they never read the socket. */
#ifndef MC_SESSION_H
#define MC_SESSION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "common/conn.h"
#include "memcached/mc.h"

/* Per-thread counters: written only by their thread (relaxed stores),
 * read by the stats sources from any thread. */
#define MC_THREAD_STATS(X)                                                                                             \
    X(cmd_get)                                                                                                         \
    X(cmd_set)                                                                                                         \
    X(cmd_touch)                                                                                                       \
    X(cmd_flush)                                                                                                       \
    X(cmd_meta)                                                                                                        \
    X(get_hits)                                                                                                        \
    X(get_misses)                                                                                                      \
    X(get_expired)                                                                                                     \
    X(get_flushed) X(delete_hits) X(delete_misses) X(incr_hits) X(incr_misses) X(decr_hits) X(decr_misses) X(cas_hits) \
        X(cas_misses) X(cas_badval) X(touch_hits) X(touch_misses) X(store_too_large) X(store_no_memory)                \
            X(response_obj_oom) X(conn_yields) X(idle_kicks) X(auth_cmds) X(auth_errors) X(bytes_read)                 \
                X(bytes_written) X(protocol_errors)

struct mc_thread_stats {
#define X(n) _Atomic uint64_t n;
    MC_THREAD_STATS(X)
#undef X
};

/* A get that missed: counts get_expired / get_flushed when the key was
 * there but dead (mc_find_miss). */
#define MC_STAT_MISS_REASON(st)                                                                                        \
    do {                                                                                                               \
        if (mc_find_miss == MC_MISS_EXPIRED)                                                                           \
            MC_STAT_ADD(st, get_expired, 1);                                                                           \
        else if (mc_find_miss == MC_MISS_FLUSHED)                                                                      \
            MC_STAT_ADD(st, get_flushed, 1);                                                                           \
    } while (0)

#define MC_STAT_ADD(th, field, v)                                                                                      \
    atomic_store_explicit(&(th)->field, atomic_load_explicit(&(th)->field, memory_order_relaxed) + (v),                \
                          memory_order_relaxed)

/* "stats slabs" per-class hit counters, per thread, by the class of the
 * item hit (memcached's slab_stats). */
struct mc_slab_stats {
    _Atomic uint64_t get_hits, cmd_set, delete_hits, incr_hits, decr_hits, cas_hits, cas_badval, touch_hits;
};
#define MC_SLAB_ADD(th, id, field, v) MC_STAT_ADD(&(th)->slab[(id)], field, v)
/* The same for the item the calling thread's last store call found. */
#define MC_SLAB_HIT(th, field) MC_SLAB_ADD(th, mc_hit_clsid, field, 1)

struct session;
struct evbuffer;
struct mc_thread {
    struct mc_thread_stats st;
    struct mc_slab_stats slab[MC_MAX_CLASSES];
    /* This thread's sessions, for "stats conns". The lock is taken on
     * connect, close and by the stats reader, never per request. */
    pthread_mutex_t sessions_lock;
    struct session *sessions;
    uint32_t resp_objs; /* response objects its TCP sessions hold unsent (mc_resp_obj_take) */
};
/* "stats conns": one block per client connection of every thread. */
void mc_session_stats_conns(struct evbuffer *out);

extern const struct conn_ops mc_conn_ops;
/* Accept callback for listen_open. */
void mc_session_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg);
void mc_session_reject(int fd, void *arg);

/* ------------------------------------------------------------------ */
/* Inside the component: the session as the command files see it. */

struct mc_text_req;
struct mc_bin_req;

/* The connection's states: the one driver (session.c, on_read) moves
 * between them. */
enum mc_sess_state {
    MC_SESS_CMD = 0, /* waiting for a request (line or binary header) */
    MC_SESS_NREAD,   /* copying a storage command's data block into its item */
    MC_SESS_SWALLOW, /* skipping the data block of a refused storage command */
    MC_SESS_DUMP,    /* streaming an lru_crawler metadump, piece by piece */
    MC_SESS_WATCH,   /* a "watch" log stream (watch.c): takes no more commands */
    MC_SESS_EXT,     /* waiting for extstore reads; the request runs again after (extstore.c) */
};
enum mc_sess_proto { MC_PROTO_UNKNOWN = 0, MC_PROTO_TEXT, MC_PROTO_BIN };
/* Which protocol's storage command the NREAD state completes. */
enum mc_pend_kind { MC_PEND_TEXT = 0, MC_PEND_META };

/* An ms command's flags, kept while its data block arrives. */
struct mc_pending_meta {
    uint64_t flags;
    char opaque[33];
    uint8_t nopaque;
    char mode;
    uint64_t C_cas, E_cas;
    bool key_b64;
    bool key_first;
};

struct mc_obuf;
struct event;
struct session {
    struct core_conn *c;
    int fd;           /* for the -vv debug lines */
    bool dbg_noreply; /* -vv: the pending store is noreply; print its reply as memcached does */
    struct mc_thread *th;
    enum mc_sess_proto proto;
    enum mc_sess_state state;
    /* NREAD */
    mc_item *item;
    uint64_t nread_left; /* value bytes still to copy */
    uint8_t crlf_got;    /* bytes of the trailing CRLF seen */
    char crlf[2];
    enum mc_pend_kind kind;
    enum mc_store_op op;
    uint64_t cas;
    bool noreply;
    struct mc_pending_meta pm;
    bool bin_close; /* binary: close once the error reply is out */
    /* SWALLOW */
    uint64_t swallow_left;
    bool authenticated;
    bool auth_ascii; /* -Y: not logged in yet (text requests go to auth_ascii.c) */
    uint32_t last_cmd; /* rel time of the last request */
    /* Replies not yet handed to the socket: they collect in ob (olen
     * bytes); output made by evbuffer writers (stats, dumps) goes to out,
     * ob's bytes moved there first so the order holds (mc_out_evb). */
    struct mc_obuf *ob;
    size_t olen;
    struct evbuffer *out;
    bool out_used;               /* mc_out_evb ran since the last flush (else out is empty) */
    bool out_oom;                /* a reply could not be built (mc_out_grow refused) */
    struct event *yield_ev;      /* -R yields and metadump pieces: run again from the loop */
    struct mc_dump *dump;        /* DUMP: the metadump's cursor */
    bool tls;                    /* over TLS: replies go through the bufferevent */
    bool tls_read;               /* a read came through (the TLS handshake is done) */
    bool out_oom_keep;           /* out_oom from the response-object bound: answer, stay open */
    uint32_t resp_objs;          /* response objects held until the next flush */
    uint8_t auth_failures;       /* SASL failures on this connection */
    bool auth_wait;              /* reading paused after a failure (slows guessing) */
    bool close_normal;           /* quit: a watcher's conn_close line says reason=normal */
    struct session *next, *prev; /* th->sessions */
    struct mc_ext_req *ext;      /* extstore values this request reads (extstore.c) */
};

/* memcached's response objects (-o read_buf_mem_limit given): take one
 * for a command or a get's key; false when the loop has none left. Given
 * back when the session's replies go to the socket. UDP is not bounded. */
static inline bool mc_resp_obj_take(struct session *s)
{
    if (__builtin_expect(mc_settings.resp_obj_cap == 0, 1) || !s->c->ops)
        return true;
    if (s->th->resp_objs >= mc_settings.resp_obj_cap)
        return false;
    s->th->resp_objs++;
    s->resp_objs++;
    return true;
}

/* The reply buffer (session.c). */
struct mc_obuf {
    size_t cap;
    char data[];
};
char *mc_out_grow(struct session *s, size_t need);
/* The evbuffer for writers that need one; what ob holds goes first. */
struct evbuffer *mc_out_evb(struct session *s);

/* Room for need bytes at the end of the replies (NULL: out of memory);
 * mc_out_commit(s, n) then keeps the n written. */
static inline char *mc_out_reserve(struct session *s, size_t need)
{
    struct mc_obuf *b = s->ob;
    if (b && need <= b->cap - s->olen)
        return b->data + s->olen;
    return mc_out_grow(s, need);
}
static inline void mc_out_commit(struct session *s, size_t n) { s->olen += n; }
/* Bytes in out (0 without asking when mc_out_evb has not run). */
size_t mc_out_queued(struct session *s);
void mc_out_add(struct session *s, const void *p, size_t n);
void mc_out_str(struct session *s, const char *str);
/* str and CRLF. */
void mc_out_line(struct session *s, const char *str);

/* Storage commands (session.c): allocate the item and switch to NREAD;
 * false (and *errmsg, the text reply) when it can't be had. */
bool mc_sess_begin_store(struct session *s, const char *key, size_t nkey, uint32_t flags, int64_t exptime,
                         int64_t bytes, const char **errmsg);
/* Skip n bytes of input (a refused data block). */
void mc_sess_begin_swallow(struct session *s, uint64_t n);
/* A SASL attempt failed: this connection's next request waits 100 ms,
 * doubling with each failure up to 3.2 s (password guessing slowed; the
 * loop's other connections are not held up). */
void mc_sess_auth_failed(struct session *s);
/* Stream a metadump of the classes in d (ownership passes in) and then
 * "END"; later requests wait for it. */
void mc_sess_begin_dump(struct session *s, struct mc_dump *d);

/* One request (or data block) of in, for udp.c (session.c). */
int mc_sess_step(struct session *s, struct evbuffer *in, bool *progress);

/* The command files. The dispatchers return 0 to go on, 1 to close once
 * the replies are out, -1 to close now. */
int mc_cmd_text(struct session *s, const struct mc_text_req *r);
/* A get refused by the parser for a too-long key: count the keys before
 * it as memcached does (cmd_text.c). */
void mc_cmd_text_get_refused(struct session *s, const struct mc_text_req *r);
void mc_cmd_text_stored(struct session *s, mc_item *it); /* data block in, CRLF checked */
void mc_cmd_meta(struct session *s, const struct mc_text_req *r);
void mc_cmd_meta_stored(struct session *s, mc_item *it);
int mc_cmd_bin(struct session *s, const struct mc_bin_req *r);
void mc_cmd_bin_error(struct session *s, uint8_t opcode, uint32_t opaque, uint16_t status);
/* ENOMEM "out of memory writing get response" (memcached's out_of_memory). */
void mc_cmd_bin_oom(struct session *s, uint8_t opcode, uint32_t opaque);

/* Reply memory of all sessions (session.c), for stats. */
extern _Atomic uint64_t mc_out_mem_bytes;
extern _Atomic uint64_t mc_out_bufs;

void mc_stats_reset(void);
/* Sum of all threads' counters. */
void mc_stats_sum(struct mc_thread_stats *out);
/* SASL PLAIN check against the password file (-S). */
bool mc_sasl_check(const char *user, size_t ulen, const char *pass, size_t plen);
void mc_shutdown_request(bool graceful);
/* TLS (tls.c). refresh_certs: re-read certificate, key and CA file into
 * a new context; 0, or -1 with memcached's error line in msg. */
int mc_tls_refresh(char *msg, size_t msglen);
/* -o ssl_*: 1 taken, 0 not a TLS option, -1 bad value (err: memcached's message). */
int mc_tls_option(const char *name, const char *val, char *err, size_t errlen);
int mc_tls_setup(void); /* -Z at start: the context; -1 after logging memcached's message */
void mc_tls_handshake_failed(void);
struct stats_sink;
void mc_tls_stats(struct stats_sink *k);
void mc_tls_stats_settings(struct stats_sink *k);
extern void *mc_tls_ctx;

#endif
