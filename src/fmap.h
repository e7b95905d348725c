/*
 * fmap - read-only memory mapping of a whole file, shared by the GGUF and
 * safetensors readers; and the paging advice for large arrays.
 *
 * Errors name the file ("model.gguf: is a directory"). An empty file maps to
 * NULL with size 0 (mmap refuses zero bytes); the parsers then report it as
 * truncated. Threads: any; the mapping is the caller's (fmap_close).
 */
#ifndef HEED_FMAP_H
#define HEED_FMAP_H

#include <stddef.h>

/* Returns HEED_OK, or HEED_ERR_IO with a message in err. */
int fmap_open(const char *path, const void **map, size_t *size, char *err, size_t err_size);
void fmap_close(const void *map, size_t size);

/* Large arrays (the KV cache, the attention store's tiers) are filled while
 * the model runs, a page at a time, and read back on every token: asking for
 * transparent huge pages, where the system gives them on request, makes that
 * one fault per 2 MB instead of per 4 KB and spares the TLB misses of a
 * strided walk (decode after 1900 tokens of a 135M model: about +8%). Only
 * advice: nothing changes where it is refused, or for arrays under 4 MB. */
void fmap_advise_huge(void *p, size_t bytes);

#endif
