/*
 * fmap - read-only memory mapping of a whole file, shared by the GGUF and
 * safetensors readers.
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

#endif
