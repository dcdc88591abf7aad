/* proto_bin: the Gearman binary packet format as pure functions — header
 * and packet parsing with a size bound, encoding, strict numbers, and the
 * SUBMIT_JOB_SCHED calendar. Pure functions over caller buffers; see proto.h. */
#include "gearmand/proto.h"

#include "common/num.h"

#include <string.h>
#include <strings.h>
#include <time.h>

struct cmd_info {
    const char *name;
    int argc;
};

/* Argument counts from the protocol document; the last argument is the
 * opaque data and may contain NULs. */
static const struct cmd_info cmd_table[GM_CMD_MAX] = {
    [GM_CAN_DO] = { "CAN_DO", 1 },
    [GM_CANT_DO] = { "CANT_DO", 1 },
    [GM_RESET_ABILITIES] = { "RESET_ABILITIES", 0 },
    [GM_PRE_SLEEP] = { "PRE_SLEEP", 0 },
    [GM_NOOP] = { "NOOP", 0 },
    [GM_SUBMIT_JOB] = { "SUBMIT_JOB", 3 },
    [GM_JOB_CREATED] = { "JOB_CREATED", 1 },
    [GM_GRAB_JOB] = { "GRAB_JOB", 0 },
    [GM_NO_JOB] = { "NO_JOB", 0 },
    [GM_JOB_ASSIGN] = { "JOB_ASSIGN", 3 },
    [GM_WORK_STATUS] = { "WORK_STATUS", 3 },
    [GM_WORK_COMPLETE] = { "WORK_COMPLETE", 2 },
    [GM_WORK_FAIL] = { "WORK_FAIL", 1 },
    [GM_GET_STATUS] = { "GET_STATUS", 1 },
    [GM_ECHO_REQ] = { "ECHO_REQ", 1 },
    [GM_ECHO_RES] = { "ECHO_RES", 1 },
    [GM_SUBMIT_JOB_BG] = { "SUBMIT_JOB_BG", 3 },
    [GM_ERROR] = { "ERROR", 2 },
    [GM_STATUS_RES] = { "STATUS_RES", 5 },
    [GM_SUBMIT_JOB_HIGH] = { "SUBMIT_JOB_HIGH", 3 },
    [GM_SET_CLIENT_ID] = { "SET_CLIENT_ID", 1 },
    [GM_CAN_DO_TIMEOUT] = { "CAN_DO_TIMEOUT", 2 },
    [GM_ALL_YOURS] = { "ALL_YOURS", 0 },
    [GM_WORK_EXCEPTION] = { "WORK_EXCEPTION", 2 },
    [GM_OPTION_REQ] = { "OPTION_REQ", 1 },
    [GM_OPTION_RES] = { "OPTION_RES", 1 },
    [GM_WORK_DATA] = { "WORK_DATA", 2 },
    [GM_WORK_WARNING] = { "WORK_WARNING", 2 },
    [GM_GRAB_JOB_UNIQ] = { "GRAB_JOB_UNIQ", 0 },
    [GM_JOB_ASSIGN_UNIQ] = { "JOB_ASSIGN_UNIQ", 4 },
    [GM_SUBMIT_JOB_HIGH_BG] = { "SUBMIT_JOB_HIGH_BG", 3 },
    [GM_SUBMIT_JOB_LOW] = { "SUBMIT_JOB_LOW", 3 },
    [GM_SUBMIT_JOB_LOW_BG] = { "SUBMIT_JOB_LOW_BG", 3 },
    [GM_SUBMIT_JOB_SCHED] = { "SUBMIT_JOB_SCHED", 8 },
    [GM_SUBMIT_JOB_EPOCH] = { "SUBMIT_JOB_EPOCH", 4 },
    /* libgearman packs an extra (empty) argument before the data. */
    [GM_SUBMIT_REDUCE_JOB] = { "SUBMIT_REDUCE_JOB", 5 },
    [GM_SUBMIT_REDUCE_JOB_BG] = { "SUBMIT_REDUCE_JOB_BACKGROUND", 5 },
    [GM_GRAB_JOB_ALL] = { "GRAB_JOB_ALL", 0 },
    [GM_JOB_ASSIGN_ALL] = { "JOB_ASSIGN_ALL", 5 },
    [GM_GET_STATUS_UNIQUE] = { "GET_STATUS_UNIQUE", 1 },
    [GM_STATUS_RES_UNIQUE] = { "STATUS_RES_UNIQUE", 6 },
};

const char *gm_cmd_name(uint32_t cmd) { return cmd < GM_CMD_MAX ? cmd_table[cmd].name : NULL; }

int gm_cmd_argc(uint32_t cmd) { return (cmd < GM_CMD_MAX && cmd_table[cmd].name) ? cmd_table[cmd].argc : -1; }

static uint32_t get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

enum gm_parse_status gm_parse_header(const void *buf, size_t len, uint32_t max_size, struct gm_packet *p)
{
    const unsigned char *b = buf;
    /* Reject a bad magic as soon as the bytes we have disagree, so garbage
     * is answered before the client sends 12 bytes. */
    static const char req[4] = { 0, 'R', 'E', 'Q' }, res[4] = { 0, 'R', 'E', 'S' };
    size_t have = len < 4 ? len : 4;
    bool is_req = memcmp(b, req, have) == 0, is_res = memcmp(b, res, have) == 0;
    if (!is_req && !is_res)
        return GM_PARSE_BAD_MAGIC;
    if (len < GM_HEADER_SIZE)
        return GM_PARSE_NEED_MORE;
    p->magic = is_req ? GM_REQ : GM_RES;
    p->cmd = get_be32(b + 4);
    p->size = get_be32(b + 8);
    p->argc = 0;
    if (p->size > max_size)
        return GM_PARSE_TOO_LARGE;
    return GM_PARSE_OK;
}

enum gm_parse_status gm_parse_packet(const void *buf, size_t len, uint32_t max_size, struct gm_packet *p,
                                     size_t *consumed)
{
    enum gm_parse_status st = gm_parse_header(buf, len, max_size, p);
    if (st != GM_PARSE_OK)
        return st;
    size_t total = GM_HEADER_SIZE + (size_t)p->size;
    if (len < total)
        return GM_PARSE_NEED_MORE;
    *consumed = total;

    int want = gm_cmd_argc(p->cmd);
    if (want < 0)
        return GM_PARSE_UNKNOWN_CMD;
    const char *d = (const char *)buf + GM_HEADER_SIZE;
    size_t left = p->size;
    if (want == 0)
        return GM_PARSE_OK; /* a payload on an argument-less packet is ignored, as gearmand does */
    for (int i = 0; i < want - 1; i++) {
        const char *nul = memchr(d, '\0', left);
        if (!nul)
            return GM_PARSE_BAD_ARGS;
        p->arg[i] = d;
        p->arg_len[i] = (size_t)(nul - d);
        left -= p->arg_len[i] + 1;
        d = nul + 1;
    }
    p->arg[want - 1] = d;
    p->arg_len[want - 1] = left;
    p->argc = want;
    return GM_PARSE_OK;
}

void gm_encode_header(void *out12, enum gm_magic magic, uint32_t cmd, uint32_t size)
{
    unsigned char *o = out12;
    o[0] = 0;
    memcpy(o + 1, magic == GM_REQ ? "REQ" : "RES", 3);
    put_be32(o + 4, cmd);
    put_be32(o + 8, size);
}

size_t gm_encode(void *out, size_t cap, enum gm_magic magic, uint32_t cmd, int argc, const void *const *args,
                 const size_t *lens)
{
    size_t size = 0;
    for (int i = 0; i < argc; i++)
        size += lens[i] + (i < argc - 1 ? 1 : 0);
    size_t total = GM_HEADER_SIZE + size;
    if (cap < GM_HEADER_SIZE)
        return total;
    gm_encode_header(out, magic, cmd, (uint32_t)size);
    if (total > cap)
        return total;
    unsigned char *o = (unsigned char *)out + GM_HEADER_SIZE;
    for (int i = 0; i < argc; i++) {
        if (lens[i])
            memcpy(o, args[i], lens[i]);
        o += lens[i];
        if (i < argc - 1)
            *o++ = 0;
    }
    return total;
}

int gm_parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    return parse_u64(s, len, 0, max, out) == NUM_OK ? 0 : -1;
}

/* ---- SUBMIT_JOB_SCHED -------------------------------------------------- */

int gm_sched_field(const char *s, size_t len, int max, int *out)
{
    if (len == 0 || (len == 1 && s[0] == '*')) {
        *out = -1;
        return 0;
    }
    uint64_t v;
    if (gm_parse_u64(s, len, (uint64_t)max, &v) < 0)
        return -1;
    *out = (int)v;
    return 0;
}

int64_t gm_sched_next(int64_t after, int minute, int hour, int mday, int month, int wday)
{
    if (minute > 59 || hour > 23 || mday == 0 || mday > 31 || month == 0 || month > 12 || wday > 6)
        return -1;
    /* Round up to a whole minute, then walk: day by day while the date
     * doesn't match, minute by minute inside a matching day. */
    int64_t t = (after + 59) / 60 * 60;
    int64_t limit = t + (int64_t)5 * 366 * 86400;
    while (t < limit) {
        time_t tt = (time_t)t;
        struct tm tm;
        gmtime_r(&tt, &tm);
        bool day_ok = (mday < 0 || tm.tm_mday == mday) && (month < 0 || tm.tm_mon + 1 == month) &&
                      (wday < 0 || tm.tm_wday == wday);
        if (!day_ok) {
            t += (int64_t)(86400 - tm.tm_hour * 3600 - tm.tm_min * 60);
            continue;
        }
        if (hour >= 0 && tm.tm_hour != hour) {
            if (tm.tm_hour < hour)
                t += (int64_t)(hour - tm.tm_hour) * 3600 - tm.tm_min * 60;
            else
                t += (int64_t)(86400 - tm.tm_hour * 3600 - tm.tm_min * 60);
            continue;
        }
        if (minute >= 0 && tm.tm_min != minute) {
            if (tm.tm_min < minute)
                t += (int64_t)(minute - tm.tm_min) * 60;
            else
                t += (int64_t)(60 - tm.tm_min) * 60; /* next hour */
            continue;
        }
        return t;
    }
    return -1;
}
