/* mime: file name extension -> media type, from the system's table
 * (/etc/mime.types, Debian's media-types package), for the types the HTTP
 * file server (common/httpd) has no fixed answer for.
 *
 * The table is read once, when the program starts (not on a loop), with
 * bounds on its size; without the file every lookup misses. Read-only
 * afterwards: safe from any thread. $STACK_MIME_TYPES names another file
 * (tests use it). */
#ifndef CORE_MIME_H
#define CORE_MIME_H

#define MIME_TYPES_PATH "/etc/mime.types"
#define MIME_MAX_FILE (1024 * 1024) /* bytes of the file read */
#define MIME_MAX_ENTRIES 8192       /* extensions kept */

/* The type for an extension (without the dot, any case), or NULL. */
const char *mime_type_of(const char *ext);
/* Extensions loaded (for tests and the log). */
unsigned mime_types_count(void);

#endif
