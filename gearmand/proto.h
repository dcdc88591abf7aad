/* proto: the Gearman wire format, as pure functions.
 *
 * Owns the binary packet layout (12-byte header: "\0REQ"/"\0RES" magic,
 * big-endian type, big-endian payload size; NUL-separated arguments, the
 * last one running to the end of the payload), the per-command argument
 * counts, the encoder, and the tokenising/classification of admin text
 * lines. Never touches a socket, a global or the job state: everything here
 * works over (buffer, length) so it can be unit-tested and fuzzed. */
#ifndef GM_PROTO_H
#define GM_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GM_HEADER_SIZE 12
#define GM_DEFAULT_PORT 4730
#define GM_MAX_ARGS 8
/* Limits from libgearman 1.1 (bytes, without the NUL). */
#define GM_MAX_HANDLE 63
#define GM_MAX_UNIQUE 64
#define GM_MAX_FUNCTION 512
#define GM_MAX_CLIENT_ID 254

enum gm_magic { GM_REQ = 0, GM_RES = 1 };

enum gm_cmd {
    GM_CAN_DO = 1,
    GM_CANT_DO = 2,
    GM_RESET_ABILITIES = 3,
    GM_PRE_SLEEP = 4,
    GM_UNUSED_5 = 5,
    GM_NOOP = 6,
    GM_SUBMIT_JOB = 7,
    GM_JOB_CREATED = 8,
    GM_GRAB_JOB = 9,
    GM_NO_JOB = 10,
    GM_JOB_ASSIGN = 11,
    GM_WORK_STATUS = 12,
    GM_WORK_COMPLETE = 13,
    GM_WORK_FAIL = 14,
    GM_GET_STATUS = 15,
    GM_ECHO_REQ = 16,
    GM_ECHO_RES = 17,
    GM_SUBMIT_JOB_BG = 18,
    GM_ERROR = 19,
    GM_STATUS_RES = 20,
    GM_SUBMIT_JOB_HIGH = 21,
    GM_SET_CLIENT_ID = 22,
    GM_CAN_DO_TIMEOUT = 23,
    GM_ALL_YOURS = 24,
    GM_WORK_EXCEPTION = 25,
    GM_OPTION_REQ = 26,
    GM_OPTION_RES = 27,
    GM_WORK_DATA = 28,
    GM_WORK_WARNING = 29,
    GM_GRAB_JOB_UNIQ = 30,
    GM_JOB_ASSIGN_UNIQ = 31,
    GM_SUBMIT_JOB_HIGH_BG = 32,
    GM_SUBMIT_JOB_LOW = 33,
    GM_SUBMIT_JOB_LOW_BG = 34,
    GM_SUBMIT_JOB_SCHED = 35,
    GM_SUBMIT_JOB_EPOCH = 36,
    GM_SUBMIT_REDUCE_JOB = 37,
    GM_SUBMIT_REDUCE_JOB_BG = 38,
    GM_GRAB_JOB_ALL = 39,
    GM_JOB_ASSIGN_ALL = 40,
    GM_GET_STATUS_UNIQUE = 41,
    GM_STATUS_RES_UNIQUE = 42,
    GM_CMD_MAX = 43
};

/* One parsed packet. arg[] point into the caller's buffer (not NUL-ended). */
struct gm_packet {
    enum gm_magic magic;
    uint32_t cmd;
    uint32_t size; /* payload bytes */
    int argc;
    const char *arg[GM_MAX_ARGS];
    size_t arg_len[GM_MAX_ARGS];
};

enum gm_parse_status {
    GM_PARSE_OK = 0,
    GM_PARSE_NEED_MORE = 1,
    GM_PARSE_BAD_MAGIC = -1,   /* not "\0REQ"/"\0RES": stream can't be trusted */
    GM_PARSE_TOO_LARGE = -2,   /* payload above the limit */
    GM_PARSE_UNKNOWN_CMD = -3, /* type 0, 5 or >= GM_CMD_MAX: framing intact */
    GM_PARSE_BAD_ARGS = -4,    /* fewer NUL separators than the type needs: framing intact */
};

/* Name ("SUBMIT_JOB") or NULL for an unknown type. */
const char *gm_cmd_name(uint32_t cmd);
/* Number of arguments the type carries (the last one is the data), or -1. */
int gm_cmd_argc(uint32_t cmd);

/* Parse the 12-byte header in buf[0..len). Fills magic, cmd, size. Returns
 * OK, NEED_MORE, BAD_MAGIC or TOO_LARGE (size > max_size). An unknown cmd is
 * not an error here. */
enum gm_parse_status gm_parse_header(const void *buf, size_t len, uint32_t max_size, struct gm_packet *p);

/* Parse one whole packet from buf[0..len). On OK, UNKNOWN_CMD and BAD_ARGS
 * *consumed is the packet's full length (the caller can skip it and carry
 * on); on BAD_MAGIC/TOO_LARGE the stream is unusable. */
enum gm_parse_status gm_parse_packet(const void *buf, size_t len, uint32_t max_size, struct gm_packet *p,
                                     size_t *consumed);

/* Encode a packet into out[0..cap). Returns the full length; if that is
 * > cap nothing past the header fit and the caller must retry bigger. The
 * argument count is not checked against the type (encoders of tests and
 * fuzzers send malformed packets on purpose). */
size_t gm_encode(void *out, size_t cap, enum gm_magic magic, uint32_t cmd, int argc, const void *const *args,
                 const size_t *lens);
/* Just the header. */
void gm_encode_header(void *out12, enum gm_magic magic, uint32_t cmd, uint32_t size);

/* ---- admin text protocol ---------------------------------------------- */

enum gm_text_cmd {
    GM_TEXT_NONE = 0, /* empty line */
    GM_TEXT_WORKERS,
    GM_TEXT_STATUS,
    GM_TEXT_PRIORITYSTATUS,
    GM_TEXT_MAXQUEUE, /* args: function [n | high normal low] */
    GM_TEXT_VERSION,
    GM_TEXT_GETPID,
    GM_TEXT_VERBOSE,
    GM_TEXT_SHOW_JOBS,
    GM_TEXT_SHOW_UNIQUE_JOBS,
    GM_TEXT_SHOW_UNKNOWN,    /* "show <something else>" */
    GM_TEXT_CANCEL_JOB,      /* args: handle */
    GM_TEXT_CREATE_FUNCTION, /* args: name */
    GM_TEXT_DROP_FUNCTION,   /* args: name */
    GM_TEXT_SHUTDOWN,        /* args: ["graceful"] */
    GM_TEXT_BAD_ARGS,        /* a known command with a wrong argument count */
    GM_TEXT_OTHER,           /* not a gearmand command (left to the core console) */
};

#define GM_TEXT_MAX_TOKENS 8

struct gm_text {
    enum gm_text_cmd cmd;
    int argc;      /* arguments after the command words */
    char *arg[4];  /* point into the tokenised line */
    bool graceful; /* shutdown graceful */
};

/* Split line[0..len) on spaces/tabs in place (each token NUL-ended; line
 * must have room for line[len] = '\0'). Returns the token count, at most
 * max (extra tokens are left joined to the last one's tail: ignored). */
int gm_text_split(char *line, size_t len, char **tok, int max);
/* Classify a tokenised line (case-insensitive command words). */
void gm_text_classify(int ntok, char **tok, struct gm_text *out);

/* Parse a decimal unsigned number from a non-NUL-ended argument. Returns 0
 * and *out, or -1 if empty, not digits, or above max. */
int gm_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out);

/* SUBMIT_JOB_SCHED: the first minute at or after `after` (epoch seconds,
 * UTC) matching minute/hour/day-of-month/month/day-of-week; a field of -1
 * matches anything. Returns -1 if no match within 5 years or a field is out
 * of range. */
int64_t gm_sched_next(int64_t after, int minute, int hour, int mday, int month, int wday);
/* Parse a SUBMIT_JOB_SCHED field: "" or "*" = -1, else a number 0..max. */
int gm_sched_field(const char *s, size_t len, int max, int *out);
#endif
