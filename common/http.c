/* http: HTTP/1.x heads, framing, chunked coding, Range, dates, paths.
 *
 * Pure code over caller buffers (see http.h). The head parser is strict on
 * purpose: anything two HTTP implementations could read differently (the root
 * of request smuggling) is refused rather than guessed at. */
#include "common/http.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* tchar per RFC 9110 5.6.2 */
static const unsigned char tchar_tab[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1,
    ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1, ['0'] = 1,  ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,
    ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['A'] = 1,  ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,
    ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1,  ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1,
    ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1,  ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1,  ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,
    ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1,  ['z'] = 1,
};
#define IS_TCHAR(c) (tchar_tab[(unsigned char)(c)])

static bool ci_eq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    return alen == blen && strncasecmp(a, b, alen) == 0;
}

enum http_method http_method_parse(const char *s, size_t len)
{
    static const struct {
        const char *name;
        enum http_method m;
    } tab[] = {
        { "GET", HTTP_M_GET },     { "HEAD", HTTP_M_HEAD },       { "POST", HTTP_M_POST },
        { "PUT", HTTP_M_PUT },     { "DELETE", HTTP_M_DELETE },   { "OPTIONS", HTTP_M_OPTIONS },
        { "TRACE", HTTP_M_TRACE }, { "CONNECT", HTTP_M_CONNECT },
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strlen(tab[i].name) == len && memcmp(tab[i].name, s, len) == 0)
            return tab[i].m;
    return HTTP_M_OTHER;
}

/* Find the end of the head: the first empty line. Accepts CRLF or bare LF
 * line ends. Returns the offset just past it, or 0 if not there yet. */
static size_t find_head_end(const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return 0;
        const char *q = nl + 1;
        if (q < end && *q == '\n')
            return (size_t)(q + 1 - buf);
        if (q + 1 < end && q[0] == '\r' && q[1] == '\n')
            return (size_t)(q + 2 - buf);
        if (q >= end || (q + 1 >= end && *q == '\r'))
            return 0;
        p = q;
    }
    return 0;
}

/* One line out of [p, end): sets *eol to its end (before CR) and returns the
 * start of the next line, or NULL when there is no line end. A CR inside
 * the line is left to the caller (header_line checks every byte). */
static const char *line_end(const char *p, const char *end, const char **eol)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl)
        return NULL;
    const char *e = nl;
    if (e > p && e[-1] == '\r')
        e--;
    *eol = e;
    return nl + 1;
}

/* As line_end, and a CR not followed by LF is an error (NULL): for the
 * request and status lines, whose bytes are not all checked otherwise. */
static const char *next_line(const char *p, const char *end, const char **eol)
{
    const char *next = line_end(p, end, eol);
    if (next && memchr(p, '\r', (size_t)(*eol - p)))
        return NULL;
    return next;
}

/* True when [v, ve) holds no control character but HTAB (CR, LF, NUL and
 * DEL included). Eight bytes at a time: a word with no byte below 0x20 and
 * none equal to 0x7f is clean; a word that may hold one (a tab does too)
 * is checked byte by byte. */
static bool bytes_clean(const char *v, const char *ve)
{
    for (; v < ve; v++) {
        unsigned char c = (unsigned char)*v;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

static bool word_clean(const char *v)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t x;
    memcpy(&x, v, 8);
    uint64_t del = x ^ (0x7f * ones);
    if (((x - 0x20 * ones) & ~x & highs) | ((del - ones) & ~del & highs))
        return bytes_clean(v, v + 8); /* may hold one (or a tab) */
    return true;
}

static bool value_clean(const char *v, const char *ve)
{
    if (ve - v < 8)
        return bytes_clean(v, ve);
    const char *last = ve - 8; /* the last word, overlapping the one before */
    for (; v < last; v += 8)
        if (!word_clean(v))
            return false;
    return word_clean(last);
}

static int parse_version(const char *p, const char *e, int *minor)
{
    if (e - p != 8 || memcmp(p, "HTTP/", 5) != 0 || !isdigit((unsigned char)p[5]) || p[6] != '.' ||
        !isdigit((unsigned char)p[7]))
        return 400;
    if (p[5] != '1')
        return 505;
    *minor = p[7] == '0' ? 0 : 1;
    return 0;
}

/* Header lines from p up to the empty line; fills msg->headers and the
 * derived fields common to requests and responses. Returns 0 or a status. */
static int parse_headers(const char *p, const char *end, int max_headers, struct http_msg *msg, bool is_request)
{
    bool have_cl = false, have_te = false, te_chunked_last = false, te_bad = false;
    uint64_t cl = 0;
    bool conn_keep = false;
    msg->nheaders = 0;
    msg->host_index = -1;
    for (;;) {
        /* Every byte of a header line is checked below (name tchars, ':',
         * blanks, value without control characters), so a stray CR in it
         * is refused there: no separate scan for one. */
        const char *eol;
        const char *next = line_end(p, end, &eol);
        if (!next)
            return 400;
        if (eol == p)
            break; /* the empty line */
        if (*p == ' ' || *p == '\t')
            return 400; /* obs-fold: refused */
        const char *colon = p;
        while (colon < eol && IS_TCHAR(*colon))
            colon++;
        if (colon == p || colon >= eol || *colon != ':')
            return 400; /* bad name or space before ':' */
        const char *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (!value_clean(v, ve))
            return 400;
        if (msg->nheaders >= max_headers)
            return 431;
        struct http_header *h = &msg->headers[msg->nheaders];
        h->name = p;
        h->name_len = (uint32_t)(colon - p);
        h->value = v;
        h->value_len = (uint32_t)(ve - v);
        size_t nl = h->name_len, vl = h->value_len;
        if (ci_eq(p, nl, "content-length")) {
            if (vl >= 2 && v[0] == '-') {
                size_t d = 1;
                while (d < vl && isdigit((unsigned char)v[d]))
                    d++;
                if (d == vl) {
                    msg->fault = HTTP_FAULT_NEGATIVE_LENGTH;
                    return 400;
                }
            }
            msg->fault = HTTP_FAULT_BAD_LENGTH;
            if (vl == 0 || vl > 18)
                return 400;
            uint64_t n = 0;
            for (size_t i = 0; i < vl; i++) {
                if (!isdigit((unsigned char)v[i]))
                    return 400;
                n = n * 10 + (uint64_t)(v[i] - '0');
            }
            if (have_cl && n != cl)
                return 400;
            msg->fault = HTTP_FAULT_OTHER;
            have_cl = true;
            cl = n;
        } else if (ci_eq(p, nl, "transfer-encoding")) {
            /* Only "chunked" (possibly as the sole entry of a list) is
             * understood; anything else is refused with 501 for requests. */
            have_te = true;
            const char *s = v;
            while (s < ve) {
                const char *c = memchr(s, ',', (size_t)(ve - s));
                const char *te = c ? c : ve;
                const char *a = s, *b = te;
                while (a < b && (*a == ' ' || *a == '\t'))
                    a++;
                while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                    b--;
                if (b > a) {
                    if (ci_eq(a, (size_t)(b - a), "chunked")) {
                        if (te_chunked_last)
                            te_bad = true; /* chunked twice */
                        te_chunked_last = true;
                    } else {
                        te_bad = true;
                        te_chunked_last = false;
                    }
                }
                s = c ? c + 1 : ve;
            }
        } else if (ci_eq(p, nl, "connection")) {
            if (http_token_list_has(v, vl, "close"))
                msg->conn_close = true;
            if (http_token_list_has(v, vl, "keep-alive"))
                conn_keep = true;
        } else if (is_request && ci_eq(p, nl, "host")) {
            if (msg->host_index >= 0)
                return 400; /* two Host headers */
            msg->host_index = msg->nheaders;
        } else if (is_request && ci_eq(p, nl, "expect")) {
            if (ci_eq(v, vl, "100-continue"))
                msg->expect_continue = true;
            else
                return 417;
        }
        msg->nheaders++;
        p = next;
    }
    if (have_te) {
        if (have_cl) { /* smuggling: both */
            msg->fault = HTTP_FAULT_LENGTH_AND_CHUNKED;
            return 400;
        }
        if (te_bad || !te_chunked_last)
            return is_request ? 501 : 502;
        msg->body = HTTP_BODY_CHUNKED;
        if (msg->version_minor == 0) { /* RFC 9112 6.1: read it, then close */
            msg->keep_alive = false;
            return 0;
        }
    } else if (have_cl) {
        msg->content_length = cl;
        msg->body = cl ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
    } else {
        msg->body = HTTP_BODY_NONE;
    }
    if (msg->version_minor >= 1)
        msg->keep_alive = !msg->conn_close;
    else
        msg->keep_alive = conn_keep && !msg->conn_close;
    return 0;
}

static void msg_reset(struct http_msg *msg)
{
    msg->method = HTTP_M_OTHER;
    msg->method_str = msg->target = msg->reason = NULL;
    msg->method_len = msg->target_len = msg->reason_len = 0;
    msg->status = 0;
    msg->version_minor = 1;
    msg->nheaders = 0;
    msg->head_len = 0;
    msg->body = HTTP_BODY_NONE;
    msg->content_length = 0;
    msg->keep_alive = msg->conn_close = msg->expect_continue = false;
    msg->host_index = -1;
    msg->error = 0;
    msg->fault = HTTP_FAULT_OTHER;
}

static int limits(const struct http_limits *lim, size_t *max_head)
{
    *max_head = lim && lim->max_head ? lim->max_head : HTTP_DEFAULT_MAX_HEAD;
    int mh = lim && lim->max_headers ? lim->max_headers : HTTP_MAX_HEADERS;
    return mh > HTTP_MAX_HEADERS ? HTTP_MAX_HEADERS : mh;
}

static int fail(struct http_msg *msg, int status)
{
    msg->error = status;
    return -1;
}

int http_parse_request(const char *buf, size_t len, const struct http_limits *lim, struct http_msg *msg)
{
    size_t max_head;
    int max_headers = limits(lim, &max_head);
    msg_reset(msg);
    size_t skip = 0;
    while (skip < len && skip < 8 && (buf[skip] == '\r' || buf[skip] == '\n'))
        skip++;
    const char *start = buf + skip;
    size_t avail = len - skip;
    if (avail > max_head)
        avail = max_head;
    /* Garbage is refused before the head is complete: the method must be a
     * token and come first. */
    for (size_t i = 0; i < avail; i++) {
        if (start[i] == ' ')
            break;
        if (!IS_TCHAR(start[i]) || i > 32)
            return fail(msg, 400);
    }
    size_t head = find_head_end(start, avail);
    if (!head) {
        if (len - skip >= max_head)
            return fail(msg, 431);
        return 0;
    }
    const char *end = start + head;
    const char *eol;
    const char *p = next_line(start, end, &eol);
    if (!p)
        return fail(msg, 400);
    /* METHOD SP target SP HTTP/1.x */
    const char *sp1 = memchr(start, ' ', (size_t)(eol - start));
    if (!sp1 || sp1 == start)
        return fail(msg, 400);
    const char *t = sp1 + 1;
    const char *sp2 = memchr(t, ' ', (size_t)(eol - t));
    if (!sp2 || sp2 == t)
        return fail(msg, 400);
    for (const char *q = t; q < sp2; q++) {
        unsigned char c = (unsigned char)*q;
        if (c <= 0x20 || c == 0x7f)
            return fail(msg, 400);
    }
    int st = parse_version(sp2 + 1, eol, &msg->version_minor);
    if (st)
        return fail(msg, st);
    msg->method_str = start;
    msg->method_len = (uint32_t)(sp1 - start);
    msg->method = http_method_parse(start, msg->method_len);
    msg->target = t;
    msg->target_len = (uint32_t)(sp2 - t);
    st = parse_headers(p, end, max_headers, msg, true);
    if (st)
        return fail(msg, st);
    if (msg->version_minor >= 1 && msg->host_index < 0)
        return fail(msg, 400);
    msg->head_len = skip + head;
    return (int)msg->head_len;
}

int http_parse_response(const char *buf, size_t len, enum http_method req_method, const struct http_limits *lim,
                        struct http_msg *msg)
{
    size_t max_head;
    int max_headers = limits(lim, &max_head);
    msg_reset(msg);
    size_t avail = len > max_head ? max_head : len;
    if (avail >= 5 && memcmp(buf, "HTTP/", 5) != 0)
        return fail(msg, 502);
    size_t head = find_head_end(buf, avail);
    if (!head) {
        if (len >= max_head)
            return fail(msg, 502);
        return 0;
    }
    const char *end = buf + head, *eol;
    const char *p = next_line(buf, end, &eol);
    if (!p || eol - buf < 12 || buf[8] != ' ')
        return fail(msg, 502);
    if (parse_version(buf, buf + 8, &msg->version_minor))
        return fail(msg, 502);
    if (!isdigit((unsigned char)buf[9]) || !isdigit((unsigned char)buf[10]) || !isdigit((unsigned char)buf[11]))
        return fail(msg, 502);
    msg->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    if (msg->status < 100)
        return fail(msg, 502);
    if (eol - buf > 12) {
        if (buf[12] != ' ')
            return fail(msg, 502);
        msg->reason = buf + 13;
        msg->reason_len = (uint32_t)(eol - (buf + 13));
    }
    int st = parse_headers(p, end, max_headers, msg, false);
    if (st)
        return fail(msg, 502);
    bool have_len =
        msg->body == HTTP_BODY_LENGTH || msg->body == HTTP_BODY_CHUNKED || http_find_header(msg, "content-length") >= 0;
    if (req_method == HTTP_M_HEAD || (msg->status >= 100 && msg->status < 200) || msg->status == 204 ||
        msg->status == 304 || (req_method == HTTP_M_CONNECT && msg->status / 100 == 2)) {
        msg->body = HTTP_BODY_NONE;
    } else if (!have_len) {
        msg->body = HTTP_BODY_CLOSE;
        msg->keep_alive = false;
    }
    msg->head_len = head;
    return (int)head;
}

int http_find_header(const struct http_msg *msg, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < msg->nheaders; i++)
        if (msg->headers[i].name_len == n && strncasecmp(msg->headers[i].name, name, n) == 0)
            return i;
    return -1;
}

const char *http_header_value(const struct http_msg *msg, const char *name, size_t *len)
{
    int i = http_find_header(msg, name);
    if (i < 0)
        return NULL;
    if (len)
        *len = msg->headers[i].value_len;
    return msg->headers[i].value;
}

bool http_token_list_has(const char *value, size_t len, const char *token)
{
    const char *s = value, *e = value + len;
    size_t tl = strlen(token);
    while (s < e) {
        const char *c = memchr(s, ',', (size_t)(e - s));
        const char *te = c ? c : e;
        const char *a = s, *b = te;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if ((size_t)(b - a) == tl && strncasecmp(a, token, tl) == 0)
            return true;
        s = c ? c + 1 : e;
    }
    return false;
}

const char *http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* ---- chunked ---- */

enum {
    CK_SIZE = 0,
    CK_EXT,
    CK_SIZE_LF,
    CK_DATA,
    CK_DATA_CR,
    CK_DATA_LF,
    CK_TRAILER,
    CK_TRAILER_LINE,
    CK_TRAILER_LF,
    CK_END_LF,
    CK_DONE
};
#define CK_MAX_DIGITS 15    /* < 2^60 bytes per chunk */
#define CK_MAX_EXT 1024     /* bytes of chunk extensions per chunk */
#define CK_MAX_TRAILER 8192 /* bytes of trailer fields */

void http_chunked_init(struct http_chunked *c, uint64_t max_total)
{
    memset(c, 0, sizeof *c);
    c->max_total = max_total;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

enum http_chunk_result http_chunked_step(struct http_chunked *c, const char *buf, size_t len, size_t *consumed,
                                         size_t *data_off, size_t *data_len)
{
    size_t i = 0;
    *data_off = *data_len = 0;
    while (i < len) {
        char ch = buf[i];
        switch (c->state) {
        case CK_SIZE: {
            int h = hexval(ch);
            if (h >= 0) {
                if (++c->aux > CK_MAX_DIGITS)
                    goto bad;
                c->remaining = c->remaining * 16 + (uint64_t)h;
                i++;
                break;
            }
            if (c->aux == 0)
                goto bad;
            if (ch == ';' || ch == ' ' || ch == '\t') {
                c->state = CK_EXT;
                c->aux = 0;
                i++;
                break;
            }
            if (ch == '\r') {
                c->state = CK_SIZE_LF;
                i++;
                break;
            }
            if (ch == '\n') {
                i++;
                goto size_done;
            }
            goto bad;
        }
        case CK_EXT:
            if (ch == '\r') {
                c->state = CK_SIZE_LF;
                i++;
                break;
            }
            if (ch == '\n') {
                i++;
                goto size_done;
            }
            if ((unsigned char)ch < 0x20 && ch != '\t')
                goto bad;
            if (++c->aux > CK_MAX_EXT)
                goto bad;
            i++;
            break;
        case CK_SIZE_LF:
            if (ch != '\n')
                goto bad;
            i++;
        size_done:
            c->aux = 0;
            if (c->remaining == 0) {
                c->state = CK_TRAILER;
            } else {
                if (c->max_total && c->total + c->remaining > c->max_total)
                    goto bad;
                c->state = CK_DATA;
            }
            break;
        case CK_DATA: {
            size_t n = len - i;
            if (n > c->remaining)
                n = (size_t)c->remaining;
            *data_off = i;
            *data_len = n;
            c->remaining -= n;
            c->total += n;
            i += n;
            if (c->remaining == 0)
                c->state = CK_DATA_CR;
            *consumed = i;
            return HTTP_CHUNK_DATA;
        }
        case CK_DATA_CR:
            if (ch == '\r') {
                c->state = CK_DATA_LF;
                i++;
                break;
            }
            if (ch == '\n') {
                c->state = CK_SIZE;
                c->aux = 0;
                c->remaining = 0;
                i++;
                break;
            }
            goto bad;
        case CK_DATA_LF:
            if (ch != '\n')
                goto bad;
            c->state = CK_SIZE;
            c->aux = 0;
            c->remaining = 0;
            i++;
            break;
        case CK_TRAILER: /* at the start of a trailer line (or the end) */
            if (ch == '\r') {
                c->state = CK_END_LF;
                i++;
                break;
            }
            if (ch == '\n') {
                i++;
                c->state = CK_DONE;
                *consumed = i;
                return HTTP_CHUNK_DONE;
            }
            c->state = CK_TRAILER_LINE;
            break;
        case CK_TRAILER_LINE:
            if (++c->remaining > CK_MAX_TRAILER)
                goto bad;
            if (ch == '\r') {
                c->state = CK_TRAILER_LF;
                i++;
                break;
            }
            if (ch == '\n') {
                c->state = CK_TRAILER;
                i++;
                break;
            }
            if ((unsigned char)ch < 0x20 && ch != '\t')
                goto bad;
            i++;
            break;
        case CK_TRAILER_LF:
            if (ch != '\n')
                goto bad;
            c->state = CK_TRAILER;
            i++;
            break;
        case CK_END_LF:
            if (ch != '\n')
                goto bad;
            i++;
            c->state = CK_DONE;
            *consumed = i;
            return HTTP_CHUNK_DONE;
        case CK_DONE: *consumed = 0; return HTTP_CHUNK_DONE;
        default: goto bad;
        }
    }
    *consumed = i;
    return c->state == CK_DONE ? HTTP_CHUNK_DONE : HTTP_CHUNK_NEED_MORE;
bad:
    *consumed = i;
    return HTTP_CHUNK_ERROR;
}

size_t http_chunk_header(char *out, uint64_t n) { return (size_t)sprintf(out, "%llx\r\n", (unsigned long long)n); }

/* ---- Range ---- */

static bool parse_u64(const char **pp, const char *e, uint64_t *out)
{
    const char *p = *pp;
    uint64_t n = 0;
    int digits = 0;
    while (p < e && isdigit((unsigned char)*p)) {
        if (++digits > 18)
            return false;
        n = n * 10 + (uint64_t)(*p - '0');
        p++;
    }
    if (!digits)
        return false;
    *pp = p;
    *out = n;
    return true;
}

enum http_range_result http_parse_range(const char *value, size_t len, uint64_t size, uint64_t *first, uint64_t *last)
{
    const char *p = value, *e = value + len;
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    if (e - p < 7 || strncasecmp(p, "bytes=", 6) != 0)
        return HTTP_RANGE_IGNORE;
    p += 6;
    while (p < e && *p == ' ')
        p++;
    if (memchr(p, ',', (size_t)(e - p)))
        return HTTP_RANGE_IGNORE; /* multiple ranges: whole entity */
    uint64_t a = 0, b = 0;
    if (*p == '-') {
        p++;
        if (!parse_u64(&p, e, &b) || p != e)
            return HTTP_RANGE_IGNORE;
        if (b == 0 || size == 0)
            return HTTP_RANGE_UNSATISFIABLE;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return HTTP_RANGE_OK;
    }
    if (!parse_u64(&p, e, &a) || p >= e || *p != '-')
        return HTTP_RANGE_IGNORE;
    p++;
    if (p == e) {
        b = UINT64_MAX;
    } else {
        if (!parse_u64(&p, e, &b) || p != e)
            return HTTP_RANGE_IGNORE;
        if (b < a)
            return HTTP_RANGE_INVERTED;
    }
    if (a >= size)
        return HTTP_RANGE_UNSATISFIABLE;
    *first = a;
    *last = b >= size ? size - 1 : b;
    return HTTP_RANGE_OK;
}

/* ---- dates ---- */

static const char wkday[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
static const char month[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

size_t http_date_format(time_t t, char *out)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, HTTP_DATE_LEN + 1, "%s, %02d %s %04d %02d:%02d:%02d GMT", wkday[tm.tm_wday % 7], tm.tm_mday,
             month[tm.tm_mon % 12], (tm.tm_year + 1900) % 10000, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return HTTP_DATE_LEN;
}

static int month_index(const char *s)
{
    for (int i = 0; i < 12; i++)
        if (strncmp(s, month[i], 3) == 0)
            return i;
    return -1;
}

static bool num(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static bool hms(const char *s, struct tm *tm)
{
    return num(s, 2, &tm->tm_hour) && s[2] == ':' && num(s + 3, 2, &tm->tm_min) && s[5] == ':' &&
           num(s + 6, 2, &tm->tm_sec);
}

int http_date_parse(const char *s, size_t len, time_t *out)
{
    char b[64];
    if (len >= sizeof b)
        return -1;
    memcpy(b, s, len);
    b[len] = 0;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *comma = strchr(b, ',');
    if (len == 29 && comma == b + 3) {
        /* Sun, 06 Nov 1994 08:49:37 GMT */
        if (!num(b + 5, 2, &tm.tm_mday) || b[7] != ' ' || (tm.tm_mon = month_index(b + 8)) < 0 || b[11] != ' ' ||
            !num(b + 12, 4, &tm.tm_year) || b[16] != ' ' || !hms(b + 17, &tm) || strcmp(b + 25, " GMT") != 0)
            return -1;
    } else if (comma) {
        /* Sunday, 06-Nov-94 08:49:37 GMT */
        const char *p = comma + 1;
        if (strlen(p) != 23 || p[0] != ' ' || !num(p + 1, 2, &tm.tm_mday) || p[3] != '-' ||
            (tm.tm_mon = month_index(p + 4)) < 0 || p[7] != '-' || !num(p + 8, 2, &tm.tm_year) || p[10] != ' ' ||
            !hms(p + 11, &tm) || strcmp(p + 19, " GMT") != 0)
            return -1;
        tm.tm_year += tm.tm_year < 70 ? 2000 : 1900;
    } else if (len == 24) {
        /* Sun Nov  6 08:49:37 1994 */
        if (b[3] != ' ' || (tm.tm_mon = month_index(b + 4)) < 0 || b[7] != ' ')
            return -1;
        if (b[8] == ' ') {
            if (!num(b + 9, 1, &tm.tm_mday))
                return -1;
        } else if (!num(b + 8, 2, &tm.tm_mday)) {
            return -1;
        }
        if (b[10] != ' ' || !hms(b + 11, &tm) || b[19] != ' ' || !num(b + 20, 4, &tm.tm_year))
            return -1;
    } else {
        return -1;
    }
    if (tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    tm.tm_year -= 1900;
    *out = timegm(&tm);
    return 0;
}

/* ---- paths ---- */

int http_path_normalize(const char *target, size_t len, char *out, size_t outlen, bool *trailing_slash)
{
    const char *p = target, *e = target + len;
    if (trailing_slash)
        *trailing_slash = false;
    if (outlen < 2)
        return -1;
    if (len >= 7 && (strncasecmp(p, "http://", 7) == 0 || (len >= 8 && strncasecmp(p, "https://", 8) == 0))) {
        p += p[4] == ':' ? 7 : 8;
        p = memchr(p, '/', (size_t)(e - p));
        if (!p)
            p = e - 0; /* no path: root */
    }
    const char *q = memchr(p, '?', (size_t)(e - p));
    if (q)
        e = q;
    const char *hash = memchr(p, '#', (size_t)(e - p));
    if (hash)
        e = hash;
    if (p < e && *p != '/')
        return -1;
    size_t o = 0;
    out[o++] = '/';
    /* segment start positions, for '..' */
    size_t seg_start = 1;
    while (p < e) {
        /* read one decoded segment into out[o..] */
        while (p < e && *p == '/')
            p++;
        if (p >= e)
            break;
        seg_start = o;
        while (p < e && *p != '/') {
            unsigned char c = (unsigned char)*p;
            if (c == '%') {
                if (e - p < 3)
                    return -1;
                int h1 = hexval(p[1]), h2 = hexval(p[2]);
                if (h1 < 0 || h2 < 0)
                    return -1;
                c = (unsigned char)(h1 * 16 + h2);
                if (c == '/')
                    return -1; /* encoded slash: refuse rather than guess */
                p += 3;
            } else {
                p++;
            }
            if (c < 0x20 || c == 0x7f || c == '\\')
                return -1;
            if (o + 2 >= outlen)
                return -1;
            out[o++] = (char)c;
        }
        size_t sl = o - seg_start;
        if (sl == 1 && out[seg_start] == '.') {
            o = seg_start;
        } else if (sl == 2 && out[seg_start] == '.' && out[seg_start + 1] == '.') {
            if (seg_start <= 1)
                return -1; /* climbs above the root */
            /* drop the previous segment and its slash */
            o = seg_start - 1; /* at the '/' before the previous segment's end */
            while (o > 1 && out[o - 1] != '/')
                o--;
        } else {
            out[o++] = '/';
            continue;
        }
    }
    /* o points after a '/' (or at 1). Remove the trailing slash except root. */
    bool trail = (e > target && e[-1] == '/');
    if (o > 1 && out[o - 1] == '/')
        o--;
    out[o] = 0;
    if (trailing_slash)
        *trailing_slash = trail || o == 1;
    return (int)o;
}
