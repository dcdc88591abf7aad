/* session: one client connection of schwartzd (private to session.c and
 * cmd_sw.c). Lives on loop 0. */
#ifndef SW_SESSION_H
#define SW_SESSION_H

#include "schwartz/schwartzd.h"

enum sw_sess_state {
    SW_SS_LINE = 0, /* waiting for a request line */
    SW_SS_BLOCK,    /* waiting for the data block of cur */
    SW_SS_JOBLINE,  /* waiting for the next job line of insert_many / replace_with */
    SW_SS_WAIT,     /* a request is with a store: input stays buffered */
    SW_SS_CLOSING,  /* closing after the reply */
};

struct sw_sess {
    struct core_conn *c;
    enum sw_sess_state st;
    struct sw_sess *next, *prev;
    /* the request being read */
    enum sw_cmd cmd;
    char handle[64];
    uint64_t want; /* job lines expected */
    struct sw_jobspec *jobs;
    int njobs;
    uint64_t bytes_total; /* sum of blocks of this request (bounded by max-arg-size) */
    struct sw_jobspec cur;
    uint64_t cur_bytes;
    /* the request being run */
    struct sw_op *op;
    int order[SW_MAX_DBS];
    int norder, oi;
    int found;
    int answered; /* databases that answered this request */
    enum sw_err last_err;
    char last_msg[200];
    struct evbuffer *reply; /* multi-database replies are gathered here */
    struct sw_qrow *qrows;
    int nq;
    uint64_t t0;
    char log_cmd[160]; /* -vv: the request line, logged with its answer */
    size_t log_cmd_len;
    bool paused;
    /* for the console's `workers` */
    uint64_t n_grabbed, n_done;
    char last_funcs[128];
    double last_grab;
};

void sw_sess_reply(struct sw_sess *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sw_sess_error(struct sw_sess *s, enum sw_err e, const char *msg);
/* The request has its reply: go back to reading requests. */
void sw_sess_ready(struct sw_sess *s);
void sw_sess_wait(struct sw_sess *s);

#endif
