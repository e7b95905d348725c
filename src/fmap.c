/*
 * fmap.c - whole-file read-only mappings and huge-page advice (see fmap.h).
 */
#define _GNU_SOURCE /* O_TMPFILE, mkostemp */
#include "fmap.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"

#include "heed.h"

/* What a file that is not a regular one is, for messages. */
static const char *file_kind(mode_t mode) {
    if (S_ISDIR(mode)) return "is a directory";
    if (S_ISFIFO(mode)) return "not a regular file (a FIFO)";
    if (S_ISCHR(mode)) return "not a regular file (a character device)";
    if (S_ISBLK(mode)) return "not a regular file (a block device)";
    if (S_ISSOCK(mode)) return "not a regular file (a socket)";
    return "not a regular file";
}

__attribute__((format(printf, 4, 5))) static void say(char *err, size_t err_size, const char *path,
                                                      const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_vat(err, err_size, 0, path, fmt, ap);
    va_end(ap);
}

int fmap_open_fd(const char *path, uint64_t *size, char *err, size_t err_size) {
    struct stat st;
    *size = 0;
    /* stat first, so that a FIFO or a device is refused without being opened */
    if (stat(path, &st) != 0) {
        int e = errno;
        say(err, err_size, path, "cannot open: %s", strerror(e));
        errno = e;
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        say(err, err_size, path, "%s", file_kind(st.st_mode));
        errno = EINVAL;
        return -1;
    }
    /* the path may have changed since: O_NONBLOCK keeps open() of a FIFO from
     * waiting for a writer, fstat checks what was opened */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        say(err, err_size, path, "cannot open: %s", strerror(e));
        errno = e;
        return -1;
    }
    const char *why = NULL, *what = "";
    int e = EINVAL;
    int fl;
    if (fstat(fd, &st) != 0) e = errno, why = strerror(e), what = "cannot stat: ";
    else if (!S_ISREG(st.st_mode)) why = file_kind(st.st_mode);
    else if (st.st_size < 0) why = "negative size";
    else if ((fl = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
        e = errno, why = strerror(e), what = "cannot open: ";
    if (why) {
        say(err, err_size, path, "%s%s", what, why);
        close(fd);
        errno = e;
        return -1;
    }
    *size = (uint64_t)st.st_size;
    return fd;
}

int fmap_open(const char *path, const void **map, size_t *size, char *err, size_t err_size) {
    *map = NULL;
    *size = 0;
    uint64_t n;
    int fd = fmap_open_fd(path, &n, err, err_size);
    if (fd < 0) return HEED_ERR_IO;
    int rc = HEED_OK;
    if ((uintmax_t)n > SIZE_MAX) {
        say(err, err_size, path, "too large to map");
        rc = HEED_ERR_IO;
    } else if (n > 0) {
        void *m = mmap(NULL, (size_t)n, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            say(err, err_size, path, "cannot mmap: %s", strerror(errno));
            rc = HEED_ERR_IO;
        } else {
            *map = m;
            *size = (size_t)n;
        }
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

void *fmap_spill(const char *dir, size_t bytes) {
    if (!dir || !bytes) return NULL;
    int fd = -1;
#ifdef O_TMPFILE
    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
#endif
    if (fd < 0) { /* no O_TMPFILE here: a named file, unlinked at once */
        char path[4096];
        if (snprintf(path, sizeof path, "%s/.heed-spill-XXXXXX", dir) >= (int)sizeof path) return NULL;
        fd = mkostemp(path, O_CLOEXEC);
        if (fd < 0) return NULL;
        unlink(path);
    }
    void *p = MAP_FAILED;
    if (ftruncate(fd, (off_t)bytes) == 0) p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd); /* the mapping keeps the file */
    return p == MAP_FAILED ? NULL : p;
}

void fmap_spill_free(void *p, size_t bytes) {
    if (p && bytes) munmap(p, bytes);
}
