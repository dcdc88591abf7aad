/* extstore.h: memcached 1.6's external storage — item values moved from
 * memory to pages of one or more files (-o ext_path=FILE:SIZE), the
 * in-memory item reduced to a small header pointing at them.
 *
 * Who does what:
 *   - the write thread (extstore.c) copies values of cold items into a
 *     write buffer, writes it to the current page, then swaps each item
 *     still unchanged for a header item (MC_IT_EXT) holding its location;
 *     it also compacts pages (live items rewritten elsewhere) and drops or
 *     evicts the oldest page when the files are full;
 *   - a get that finds a header item (one predictable branch on the get
 *     path: mc_item_is_ext) asks mc_ext_value for the bytes; the first time
 *     the read is only queued, the session parks the request
 *     (MC_SESS_EXT), the IO pool (common/work) reads and checks the
 *     records, and the request runs again with the values at hand, so
 *     replies leave in request order;
 *   - a header item unlinked for any reason gives its bytes back to its
 *     page (mc_ext_release); a page with nothing live left is free again.
 *
 * Lock order: stripe -> class -> the page table lock (ext_lock); the write
 * thread never holds the page table lock while taking a stripe or class. */
#ifndef MC_EXTSTORE_H
#define MC_EXTSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memcached/mc.h"

#define MC_IT_EXT 16 /* bits: the item is a header; its value is on disk */

/* Where a value lives: the header item's value (nbytes = sizeof). */
struct mc_ext_loc {
    uint64_t version; /* the page's version when written (0 = none) */
    uint32_t page;
    uint32_t offset; /* of the record in the page */
    uint32_t nbytes; /* the value's length */
    uint32_t reclen; /* the record's length (header + key + value, padded) */
};

struct mc_ext_settings {
    bool enabled; /* an ext_path was given */
    int npaths;
    char *paths[8];
    uint64_t sizes[8];
    uint64_t page_size, wbuf_size;
    unsigned threads, io_depth;
    unsigned item_size, item_age, low_ttl, recache_rate, compact_under, drop_under, max_sleep;
    double max_frag;
    bool drop_unread;
};
extern struct mc_ext_settings mc_ext;

static inline bool mc_item_is_ext(const mc_item *it) { return mc_bits(it) & MC_IT_EXT; }

/* -o suboptions named ext_*: 1 when taken, 0 when not an ext_ option, -1 on
 * a bad value (err says why). */
int mc_ext_option(const char *name, const char *val, char *err, size_t errlen);
/* A record read from the file (rec, at most avail bytes): its length
 * when it is whole and its CRC holds, else 0. */
uint32_t mc_ext_rec_check(const char *rec, uint64_t avail);
/* Open the files and start the threads (after the slabs exist). */
int mc_ext_init(void);
void mc_ext_stop(void);

/* A header item is going away (unlinked): its page loses the bytes. */
void mc_ext_release(mc_item *it);
/* The real value length of a header item. */
uint32_t mc_ext_nbytes(mc_item *it);

struct session;
/* In a get handler, stripe held, it a header item: the value when this
 * request has read it already (*n its length); NULL with *miss false when
 * the read has been queued (the handler carries on; its reply is thrown
 * away and the request runs again once the read is in); NULL with *miss
 * true when the value cannot be had (page reused, bad record, I/O error:
 * the item has been unlinked, answer a miss). */
const char *mc_ext_value(struct session *s, mc_item *it, uint64_t hv, uint32_t *n, bool *miss);
/* How many leading keys of the multi-get now running were counted by an
 * earlier pass (0 without one), and raising it (cmd_text.c). */
size_t mc_ext_counted(struct session *s);
void mc_ext_set_counted(struct session *s, size_t n);
/* Called on the loop when the reads of a session without a stream (a UDP
 * socket's: udp.c sets it) are in; the session's state is back to CMD. */
extern void (*mc_ext_stream_less_resume)(struct session *s);
/* A read memcached would have queued and then aborted (get_aborted_extstore). */
void mc_ext_count_aborted(void);
/* A read was queued for the request now running. */
bool mc_ext_waiting(struct session *s);
/* After a command ran (s->ext set): 1 when its reads are queued (the
 * session must keep the request and wait), 0 when it is complete. mark:
 * where the command's output began (what it wrote is dropped on 1). */
int mc_ext_after_cmd(struct session *s, size_t mark);
/* The session is closing. */
void mc_ext_session_gone(struct session *s);

/* "extstore <setting> <value>" (text protocol): the reply line. */
const char *mc_ext_command(const char *args, size_t len);

struct stats_sink;
/* The ext lines of "stats" (get_*_extstore after get_flushed, the
 * extstore_* block after log_watchers) and of "stats settings". */
void mc_ext_stats_gets(struct stats_sink *k);
void mc_ext_stats_store(struct stats_sink *k);
/* ext_item_size .. ext_max_sleep (memcached.c prints ext_max_frag,
 * slab_automove_freeratio and ext_drop_unread after them). */
void mc_ext_stats_settings(struct stats_sink *k);
/* "stats extstore" (per page). */
void mc_ext_register_stats(void);

#endif
