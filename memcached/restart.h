/* restart.h: -e FILE, memcached's restartable cache (restart.c). */
#ifndef MC_RESTART_H
#define MC_RESTART_H

#include <stdbool.h>
#include <stdint.h>

#include "memcached/mc.h"

extern char *mc_memory_file; /* -e / --memory-file, NULL = off */

/* Start-up, in this order: after mc_slabs_init (the layout is known),
 * mc_restart_open maps the file and reads FILE.meta (it may set
 * mc_settings.hashpower and the clock); then the hash table is made and
 * mc_restart_restore puts the saved items back. -1: refuse to start (the
 * file cannot be mapped, or FILE.meta is not a metadata file). */
int mc_restart_open(void);
void mc_restart_restore(void);
/* A graceful stop was asked for (SIGUSR1, "shutdown graceful"): save on
 * the way out. */
void mc_restart_request_save(void);
/* After the loops and the maintainer thread stopped: save if asked, unmap. */
void mc_restart_close(void);

/* FILE.meta's text (buf[n] == 0, cut up in place) for a mapping of
 * npages pages: -1 not a metadata file, 0 not usable, 1 usable. */
int mc_restart_parse_meta(char *buf, size_t n, uint64_t npages);

/* What restart.c needs from the store (slabs.c, items.c, watch.c). */
void mc_slabs_set_region(char *base, uint64_t pages);
void mc_slabs_region_map(int16_t *out);
int mc_slabs_adopt_page(uint64_t i, int id);
void mc_slabs_restore_free(mc_item *it);
void mc_item_restore_link(mc_item *it);
uint64_t mc_cas_current(void);
void mc_cas_restore(uint64_t v);

#endif
