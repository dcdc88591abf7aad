/* line: CRLF/LF line framing with a hard maximum, and in-place tokenising.
 * Pure functions; no allocation. */
#ifndef CORE_LINE_H
#define CORE_LINE_H

#include <stddef.h>

struct evbuffer;

enum line_status { LINE_OK = 0, LINE_NEED_MORE = 1, LINE_TOO_LONG = -1 };

/* Find the first line in buf[0..len). On LINE_OK, *line_len is its length
 * without "\r\n" or "\n" and *consumed includes the terminator.
 * LINE_TOO_LONG: no terminator within max bytes (max counts the line without
 * its terminator). */
enum line_status line_find(const char *buf, size_t len, size_t max, size_t *line_len, size_t *consumed);

/* The same over an evbuffer: on LINE_OK returns a pointer to the line, made
 * contiguous and writable inside the buffer (valid until the buffer is
 * drained or changed). The caller drains *consumed bytes when done. */
char *line_peek(struct evbuffer *in, size_t max, size_t *line_len, size_t *consumed, enum line_status *st);

/* Copy up to cap bytes of b from offset off into dst; returns how many.
 * Works on a bufferevent's output too, whose frozen start makes
 * evbuffer_copyout_from refuse (a daemon's -vv log reads its reply so). */
size_t line_copy_at(struct evbuffer *b, size_t off, char *dst, size_t cap);

/* Split line[0..len) on spaces/tabs, in place: each token gets a NUL. Up to
 * max tokens go in tok[]. Returns the number of tokens, or -1 if there were
 * more than max (tok[] then holds the first max). line must have room for
 * the NUL at line[len] (the terminator's place does). */
int line_split(char *line, size_t len, char **tok, int max);

#endif
