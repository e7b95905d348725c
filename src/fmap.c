/*
 * fmap.c - whole-file read-only mappings and huge-page advice (see fmap.h).
 */
#include "fmap.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "heed.h"

int fmap_open(const char *path, const void **map, size_t *size, char *err, size_t err_size) {
    struct stat st;
    int rc = HEED_OK;
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (err && err_size) snprintf(err, err_size, "%s: cannot open: %s", path, strerror(errno));
        return HEED_ERR_IO;
    }
    const char *why = NULL, *what = "";
    if (fstat(fd, &st) != 0) why = strerror(errno), what = "cannot stat: ";
    else if (S_ISDIR(st.st_mode)) why = "is a directory";
    else if (!S_ISREG(st.st_mode)) why = "not a regular file";
    else if ((uintmax_t)st.st_size > SIZE_MAX) why = "too large to map";
    if (!why && st.st_size > 0) {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) why = strerror(errno), what = "cannot mmap: ";
        else {
            *map = m;
            *size = (size_t)st.st_size;
        }
    }
    if (why) {
        if (err && err_size) snprintf(err, err_size, "%s: %s%s", path, what, why);
        rc = HEED_ERR_IO;
    }
    close(fd);
    return rc;
}

void fmap_close(const void *map, size_t size) {
    if (map && size) munmap((void *)map, size);
}

void fmap_advise_huge(void *p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)2 << 20;
    if (!p || bytes < 2 * huge) return;
    uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1), e = ((uintptr_t)p + bytes) & ~(huge - 1);
    if (e > a) (void)madvise((void *)a, e - a, MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
}
