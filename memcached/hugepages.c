/* hugepages: -L (large memory pages) and -k (lock memory), as memcached
 * 1.6.18 does them on Linux.
 *
 * -L: refused at start unless the kernel has transparent huge pages (the
 * sysfs switch present and not "[never]"). The whole -m is then reserved
 * at start as one block aligned to the huge page size with
 * madvise(MADV_HUGEPAGE), slab pages are carved from it (slabs.c), one
 * page per class is taken at once, and the limit cannot change later
 * (cache_memlimit answers MEMLIMIT_ADJUST_FAILED), as memcached's
 * preallocation. If the block cannot be had, a warning, and pages come
 * one by one as without -L.
 *
 * -k: mlockall(MCL_CURRENT | MCL_FUTURE); when the kernel refuses, the
 * same warning as memcached, and the daemon runs on. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "memcached/mc.h"

int mc_large_pages_check(char *err, size_t errlen)
{
    static const char *const paths[] = { "/sys/kernel/mm/transparent_hugepage/enabled",
                                         "/sys/kernel/mm/redhat_transparent_hugepage/enabled", NULL };
    int fd = -1;
    for (const char *const *p = paths; *p && fd < 0; p++)
        fd = open(*p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "Transparent huge pages support not detected.");
        return -1;
    }
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) {
        snprintf(err, errlen, "Transparent huge pages could not read the configuration.");
        return -1;
    }
    buf[n] = 0;
    if (strstr(buf, "[never]")) {
        snprintf(err, errlen, "Transparent huge pages support disabled.");
        return -1;
    }
    return 0;
}

static size_t huge_page_size(void)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f)
        return 0;
    char line[128];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Hugepagesize:", 13) == 0)
            kb = strtoul(line + 13, NULL, 10);
    fclose(f);
    return kb << 10;
}

void *mc_large_arena(uint64_t bytes)
{
    size_t align = huge_page_size();
    if (!align) {
        log_warn("Failed to get supported huge page size");
        return NULL;
    }
    void *p = NULL;
    if (posix_memalign(&p, align, bytes) != 0) {
        log_warn("Failed to get aligned memory chunk of %llu bytes", (unsigned long long)bytes);
        return NULL;
    }
    if (madvise(p, bytes, MADV_HUGEPAGE) < 0) {
        log_warn("Failed to set transparent hugepage hint: %s", strerror(errno));
        free(p);
        return NULL;
    }
    return p;
}

void mc_lock_memory(void)
{
    if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0)
        log_warn("-k invalid, mlockall() failed: %s", strerror(errno));
}
