/*
 * fmap - read-only memory mapping of a whole file, shared by the GGUF and
 * safetensors readers; opening any file heed reads by path (models, their
 * JSON files, run files) so that only regular files are read; and the paging
 * advice for large arrays.
 *
 * Errors name the file ("model.gguf: is a directory", "m.gguf: not a regular
 * file (a FIFO)"). An empty file maps to NULL with size 0 (mmap refuses zero
 * bytes); the parsers then report it as truncated. Threads: any; the mapping
 * and the descriptor are the caller's (fmap_close, close).
 */
#ifndef HEED_FMAP_H
#define HEED_FMAP_H

#include <stddef.h>
#include <stdint.h>

/* Opens path for reading (close-on-exec, blocking) if it is a regular file,
 * and gives its size. Anything else is refused without waiting: open() of a
 * FIFO blocks until a writer comes, a device such as /dev/zero never ends, a
 * directory is no file (a Hugging Face folder is told apart by the caller,
 * before). The path is checked with stat() first, so a FIFO or a device is
 * never opened, and the descriptor again with fstat() (it is opened with
 * O_NONBLOCK, cleared after the check) in case the path changed in between.
 * Returns the descriptor, or -1 with a message naming the path in err and
 * errno set (ENOENT for a missing file, EINVAL for one that is not regular). */
int fmap_open_fd(const char *path, uint64_t *size, char *err, size_t err_size);

/* Maps a regular file whole (fmap_open_fd's checks). Returns HEED_OK, or HEED_ERR_IO with a message in err. */
int fmap_open(const char *path, const void **map, size_t *size, char *err, size_t err_size);
void fmap_close(const void *map, size_t size);

/* Large arrays (the KV cache, the attention store's tiers) are filled while
 * the model runs, a page at a time, and read back on every token: asking for
 * transparent huge pages, where the system gives them on request, makes that
 * one fault per 2 MB instead of per 4 KB and spares the TLB misses of a
 * strided walk (decode after 1900 tokens of a 135M model: about +8%). Only
 * advice: nothing changes where it is refused, or for arrays under 4 MB. */
void fmap_advise_huge(void *p, size_t bytes);

/* A zeroed array of `bytes` backed by a file in dir that no name reaches
 * (O_TMPFILE, or a temporary file unlinked at once; sparse, so disk blocks
 * only for what is written): its pages are file cache, not the process's
 * anonymous memory, and the kernel writes them out under memory pressure
 * instead of failing. For the recording of a long run (its q/k store).
 * Returns the mapping, or NULL (dir missing or not writable, disk full,
 * out of address space). Free with fmap_spill_free(p, bytes). */
void *fmap_spill(const char *dir, size_t bytes);
void fmap_spill_free(void *p, size_t bytes);

#endif
