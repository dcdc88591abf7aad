/* restart: -e FILE, memcached's restartable cache ("memory file").
 *
 * With -e the item memory is FILE mapped MAP_SHARED instead of malloc'd
 * pages (put it on tmpfs, as memcached advises). On a graceful stop
 * (SIGUSR1, or "shutdown graceful") the mapping is synced and what the
 * items depend on is written next to it, in FILE.meta: the settings that
 * fix the memory layout, the clock, the CAS counter, the flush marks, the
 * hash table's size, the watch gid, and which class owns each page. The
 * next start with the same -e reads FILE.meta and removes it (a crash
 * later starts clean), checks that the layout settings are the same
 * (otherwise memcached's "restart incompatible" message and a clean
 * cache), maps the file again and puts every live item back into the
 * hash table and its LRU, in access-time order, correcting the pointers
 * of chunked items for the new address. A FILE.meta that is not a
 * metadata file (empty, foreign) refuses to start, as memcached does.
 * A stop by SIGTERM saves nothing: the next start is clean.
 *
 * Everything here runs single-threaded: at start-up before the loops
 * and the maintainer run, at the end after they stopped. Reading the
 * metadata blocks the start-up thread (a small file, once). */
#include "memcached/restart.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "memcached/watch.h"

char *mc_memory_file;

#define META_TAG "memcached-restart 1"
#define META_MAX (64u << 20) /* bytes of FILE.meta read at most */
#define RESTORED 0x80        /* state bit: kept in pass 1 (cleared in pass 2) */

static int map_fd = -1;
static char *map_base;
static uint64_t map_len, map_pages;
static bool save_requested;

/* What a compatible FILE.meta carried over. */
static struct {
    bool reuse;
    uint64_t old_base, cas, oldest_cas, gid;
    uint32_t oldest_live;
    int hashpower;
    long process_started;
    int16_t *pages;
} saved;

static char *meta_path(void)
{
    size_t n = strlen(mc_memory_file);
    char *p = malloc(n + 6);
    if (p) {
        memcpy(p, mc_memory_file, n);
        memcpy(p + n, ".meta", 6);
    }
    return p;
}

/* The settings that fix where items lie in the file, as text: the same
 * function writes them and checks them. */
static void layout_value(const char *key, char *out, size_t len, uint64_t npages)
{
    out[0] = '\0';
    if (strcmp(key, "maxbytes") == 0)
        snprintf(out, len, "%" PRIu64, mc_settings.maxbytes);
    else if (strcmp(key, "chunk_size") == 0)
        snprintf(out, len, "%d", mc_settings.chunk_min);
    else if (strcmp(key, "item_size_max") == 0)
        snprintf(out, len, "%" PRIu64, mc_settings.item_size_max);
    else if (strcmp(key, "slab_chunk_max") == 0)
        snprintf(out, len, "%u", mc_chunk_max);
    else if (strcmp(key, "slab_page_size") == 0)
        snprintf(out, len, "%" PRIu64, mc_page_size);
    else if (strcmp(key, "region_pages") == 0)
        snprintf(out, len, "%" PRIu64, npages);
    else if (strcmp(key, "use_cas") == 0)
        snprintf(out, len, "%s", mc_settings.no_cas ? "false" : "true");
    else if (strcmp(key, "slab_reassign") == 0)
        snprintf(out, len, "%s", mc_settings.slab_reassign ? "true" : "false");
    else if (strcmp(key, "slab_config") == 0) {
        size_t o = 0;
        for (int i = 1; i <= mc_nclasses && o + 12 < len; i++)
            o += (size_t)snprintf(out + o, len - o, "%s%u", i > 1 ? "," : "", mc_classes[i].size);
    }
}

static const char *const layout_keys[] = { "maxbytes",       "chunk_size",     "item_size_max",
                                           "slab_chunk_max", "slab_page_size", "region_pages",
                                           "use_cas",        "slab_reassign",  "slab_config" };
#define NLAYOUT (sizeof layout_keys / sizeof layout_keys[0])

static bool parse_u64(const char *v, int base, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, base);
    if (errno || end == v || *end || v[0] == '-')
        return false;
    *out = x;
    return true;
}

/* Parses a metadata file's text (buf[n] must be 0; the text is cut up in
 * place) into saved, for a mapping of npages pages. Returns -1 when it is
 * not a metadata file, 0 when it cannot be used (saved.reuse false: other
 * settings, a missing or bad line), 1 when the items can be restored.
 * Bounded by n; fuzzed (tests/fuzz/fuzz_mc_restart.c). */
int mc_restart_parse_meta(char *buf, size_t n, uint64_t npages)
{
    free(saved.pages);
    memset(&saved, 0, sizeof saved);
    if (n <= strlen(META_TAG) || strncmp(buf, META_TAG "\n", strlen(META_TAG) + 1) != 0)
        return -1;
    unsigned seen = 0, layout_seen = 0;
    bool ok = true, ended = false;
    char *save = NULL;
    for (char *line = strtok_r(buf + strlen(META_TAG) + 1, "\n", &save); line && ok;
         line = strtok_r(NULL, "\n", &save)) {
        if (strcmp(line, "end") == 0) {
            ended = true;
            break;
        }
        char *val = strchr(line, ' ');
        if (!val) {
            ok = false;
            break;
        }
        *val++ = '\0';
        uint64_t v = 0;
        bool is_layout = false;
        for (size_t i = 0; i < NLAYOUT; i++)
            if (strcmp(line, layout_keys[i]) == 0) {
                char now[4096];
                layout_value(line, now, sizeof now, npages);
                is_layout = true;
                layout_seen++;
                if (strcmp(now, val) != 0) {
                    log_warn("[restart] restart incompatible due to setting for [%s] [old value: %.200s]", line, val);
                    ok = false;
                }
            }
        if (is_layout)
            continue;
        seen++;
        if (strcmp(line, "mmap_oldbase") == 0)
            ok = parse_u64(val, 16, &saved.old_base);
        else if (strcmp(line, "process_started") == 0) {
            ok = parse_u64(val, 10, &v) && v > 0 && v < (uint64_t)time(NULL);
            saved.process_started = (long)v;
        } else if (strcmp(line, "current_time") == 0)
            ok = parse_u64(val, 10, &v); /* informational: the clock follows process_started */
        else if (strcmp(line, "stop_time") == 0)
            ok = parse_u64(val, 10, &v) && v <= (uint64_t)time(NULL); /* the clock went back: items' times are off */
        else if (strcmp(line, "current_cas") == 0)
            ok = parse_u64(val, 10, &saved.cas);
        else if (strcmp(line, "oldest_cas") == 0)
            ok = parse_u64(val, 10, &saved.oldest_cas);
        else if (strcmp(line, "oldest_live") == 0) {
            ok = parse_u64(val, 10, &v) && v <= UINT32_MAX;
            saved.oldest_live = (uint32_t)v;
        } else if (strcmp(line, "logger_gid") == 0)
            ok = parse_u64(val, 10, &saved.gid);
        else if (strcmp(line, "hashpower") == 0) {
            ok = parse_u64(val, 10, &v) && v >= 16 && v <= 32;
            saved.hashpower = (int)v;
        } else if (strcmp(line, "pages") == 0 && !saved.pages) {
            saved.pages = calloc(npages ? npages : 1, sizeof *saved.pages);
            uint64_t k = 0;
            char *p = val;
            while (ok && saved.pages && *p && k < npages) {
                if (*p == '-') {
                    saved.pages[k++] = -1;
                    p++;
                } else {
                    char *end;
                    errno = 0;
                    long c = strtol(p, &end, 10);
                    ok = !errno && end != p && c >= 0 && c <= mc_nclasses;
                    saved.pages[k++] = (int16_t)(ok ? c : -1);
                    p = end;
                }
                if (*p == ',')
                    p++;
                else if (*p)
                    ok = false;
            }
            ok = ok && saved.pages && k == npages && !*p;
        } else {
            log_warn("[restart] unknown/unhandled key: %.100s", line);
            seen--;
        }
        if (!ok)
            log_warn("[restart] failed to parse %.100s: %.200s", line, val);
    }
    if (ok && (!ended || seen < 10 || layout_seen < NLAYOUT || !saved.pages || !saved.hashpower)) {
        log_warn("[restart] missing some metadata lines");
        ok = false;
    }
    if (!ok) {
        free(saved.pages);
        memset(&saved, 0, sizeof saved);
        return 0;
    }
    saved.reuse = true;
    return 1;
}

/* Reads FILE.meta into saved (and removes it). Returns 0 (saved.reuse
 * says whether the items can be used), or -1 when the file is there but
 * not a metadata file. */
static int meta_load(void)
{
    char *path = meta_path();
    if (!path)
        return -1;
    FILE *f = fopen(path, "r");
    if (!f) {
        log_info("[restart] no metadata save file, starting with a clean cache");
        free(path);
        return 0;
    }
    char *buf = malloc(META_MAX + 1);
    size_t n = buf ? fread(buf, 1, META_MAX, f) : 0;
    fclose(f);
    unlink(path); /* used once: a crash from here on starts clean */
    int rc = buf && n < META_MAX ? (buf[n] = '\0', mc_restart_parse_meta(buf, n, map_pages)) : -1;
    free(buf);
    if (rc < 0)
        log_error("[restart] corrupt metadata file %s", path);
    else if (rc == 0)
        log_warn("[restart] failed to validate metadata, starting with a clean cache");
    free(path);
    return rc < 0 ? -1 : 0;
}

int mc_restart_open(void)
{
    /* The pages -m allows, plus one for each class (a class's first page
     * is always granted, as in memcached). */
    map_pages = (mc_settings.maxbytes + mc_page_size - 1) / mc_page_size + MC_MAX_CLASSES;
    map_len = map_pages * mc_page_size;
    map_fd = open(mc_memory_file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (map_fd < 0) {
        log_error("memory file %s: %s", mc_memory_file, strerror(errno));
        return -1;
    }
    if (meta_load() < 0)
        return -1;
    if (saved.reuse)
        mc_settings.hashpower = saved.hashpower; /* the table as large as it had grown */
    if (ftruncate(map_fd, (off_t)map_len) != 0) {
        log_error("memory file %s: %s", mc_memory_file, strerror(errno));
        return -1;
    }
    map_base = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
    if (map_base == MAP_FAILED) {
        map_base = NULL;
        log_error("memory file %s: mmap: %s", mc_memory_file, strerror(errno));
        return -1;
    }
    mc_slabs_set_region(map_base, map_pages);
    if (saved.reuse) {
        /* The items' times are seconds since the old process started:
         * keep that origin, so the time stopped counts as time passed. */
        mc_process_started = saved.process_started;
        mc_clock_update();
        mc_cas_restore(saved.cas);
        atomic_store(&mc_oldest_cas, saved.oldest_cas);
        atomic_store(&mc_oldest_live, saved.oldest_live);
        mc_watch_gid_restore(saved.gid);
    }
    return 0;
}

static bool in_map(const void *p) { return (const char *)p >= map_base && (const char *)p < map_base + map_len; }

static int by_atime(const void *a, const void *b)
{
    const mc_item *x = *(mc_item *const *)a, *y = *(mc_item *const *)b;
    return (x->atime > y->atime) - (x->atime < y->atime);
}

/* A chunked head's further chunks, at the new address; false when one of
 * them is not a chunk of this item (then the item is dropped). */
static bool fix_chunks(mc_item *it, intptr_t delta)
{
    uint32_t n = mc_item_nchunks(it->nkey, it->nbytes);
    mc_item **ch = mc_item_chunks(it);
    for (uint32_t j = 0; j < n; j++) {
        mc_item *c = (mc_item *)(void *)((char *)ch[j] + delta);
        if (!in_map(c) || (c->state & 0x0f) != MC_ST_CHUNK)
            return false;
    }
    for (uint32_t j = 0; j < n; j++) {
        mc_item *c = (mc_item *)(void *)((char *)ch[j] + delta);
        ch[j] = c;
        c->hnext = it;
        c->state |= RESTORED;
    }
    return true;
}

void mc_restart_restore(void)
{
    if (!saved.reuse)
        return;
    intptr_t delta = (intptr_t)map_base - (intptr_t)saved.old_base;
    for (uint64_t i = 0; i < map_pages; i++)
        if (saved.pages[i] >= 0 && mc_slabs_adopt_page(i, saved.pages[i]) < 0) {
            log_error("[restart] cannot take back page %" PRIu64 "; starting clean", i);
            saved.pages[i] = -1;
        }
    uint32_t now = mc_now();
    mc_item **heads = NULL;
    uint64_t nheads = 0, cap = 0, dropped = 0;
    /* Pass 1: live items whose chunks check out are kept. */
    for (uint64_t i = 0; i < map_pages; i++) {
        int id = saved.pages[i];
        if (id <= 0)
            continue;
        const struct mc_class *c = &mc_classes[id];
        char *page = map_base + i * mc_page_size;
        for (uint32_t k = 0; k < c->perpage; k++) {
            mc_item *it = (mc_item *)(void *)(page + (uint64_t)k * c->size);
            if ((it->state & 0x0f) != MC_ST_LINKED || it->clsid != id || it->nkey == 0 ||
                mc_item_total(it->nkey, it->nbytes) >
                    (mc_item_chunked(it) ? mc_settings.item_size_max + 4096 : c->size))
                continue;
            if (!mc_item_live(it, now) || (mc_item_chunked(it) && !fix_chunks(it, delta))) {
                dropped++;
                continue;
            }
            if (nheads == cap) {
                cap = cap ? cap * 2 : 1024;
                mc_item **n = realloc(heads, cap * sizeof *n);
                if (!n)
                    break;
                heads = n;
            }
            it->state |= RESTORED;
            heads[nheads++] = it;
        }
    }
    /* Pass 2: everything else on the pages is free memory again. */
    for (uint64_t i = 0; i < map_pages; i++) {
        int id = saved.pages[i];
        if (id <= 0)
            continue;
        const struct mc_class *c = &mc_classes[id];
        char *page = map_base + i * mc_page_size;
        for (int64_t k = (int64_t)c->perpage - 1; k >= 0; k--) {
            mc_item *it = (mc_item *)(void *)(page + (uint64_t)k * c->size);
            if (it->state & RESTORED) {
                it->state &= (uint8_t)~RESTORED;
                continue;
            }
            it->clsid = (uint8_t)id;
            mc_slabs_restore_free(it);
        }
    }
    /* Oldest first: each link goes to its LRU's head. */
    if (nheads)
        qsort(heads, nheads, sizeof *heads, by_atime);
    for (uint64_t i = 0; i < nheads; i++)
        mc_item_restore_link(heads[i]);
    log_info("[restart] %" PRIu64 " items restored from %s (%" PRIu64 " expired or flushed dropped)", nheads,
             mc_memory_file, dropped);
    free(heads);
    free(saved.pages);
    saved.pages = NULL;
}

void mc_restart_request_save(void) { save_requested = true; }

static int meta_save(void)
{
    char *path = meta_path();
    if (!path)
        return -1;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    int16_t *pages = calloc(map_pages, sizeof *pages);
    FILE *f = NULL;
    int rc = -1;
    if (!tmp || !pages)
        goto out;
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    f = fopen(tmp, "w");
    if (!f)
        goto out;
    fprintf(f, "%s\n", META_TAG);
    for (size_t i = 0; i < NLAYOUT; i++) {
        char v[4096];
        layout_value(layout_keys[i], v, sizeof v, map_pages);
        fprintf(f, "%s %s\n", layout_keys[i], v);
    }
    fprintf(f, "mmap_oldbase %" PRIxPTR "\n", (uintptr_t)map_base);
    fprintf(f, "process_started %ld\n", mc_process_started);
    fprintf(f, "current_time %u\n", mc_now());
    fprintf(f, "stop_time %lld\n", (long long)time(NULL));
    fprintf(f, "current_cas %" PRIu64 "\n", mc_cas_current());
    fprintf(f, "oldest_cas %" PRIu64 "\n", (uint64_t)atomic_load(&mc_oldest_cas));
    fprintf(f, "oldest_live %u\n", (unsigned)atomic_load(&mc_oldest_live));
    fprintf(f, "logger_gid %" PRIu64 "\n", mc_watch_gid());
    fprintf(f, "hashpower %u\n", mc_assoc_hashpower());
    mc_slabs_region_map(pages);
    fprintf(f, "pages ");
    for (uint64_t i = 0; i < map_pages; i++) {
        if (pages[i] < 0)
            fprintf(f, "%s-", i ? "," : "");
        else
            fprintf(f, "%s%d", i ? "," : "", pages[i]);
    }
    fprintf(f, "\nend\n");
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        goto out;
    if (fclose(f) != 0) {
        f = NULL;
        goto out;
    }
    f = NULL;
    rc = rename(tmp, path);
out:
    if (f)
        fclose(f);
    if (rc != 0 && tmp)
        unlink(tmp);
    free(pages);
    free(tmp);
    free(path);
    return rc;
}

void mc_restart_close(void)
{
    if (!map_base)
        return;
    if (save_requested) {
        /* The items first, then the metadata that makes them usable. */
        if (msync(map_base, map_len, MS_SYNC) != 0 || meta_save() != 0)
            log_error("[restart] failed to save metadata for %s: %s", mc_memory_file, strerror(errno));
        else
            log_info("[restart] memory saved to %s for the next start", mc_memory_file);
    }
    munmap(map_base, map_len);
    map_base = NULL;
    close(map_fd);
    map_fd = -1;
}
