/*
 * assets - the web UI's static files, embedded into the binary at build time
 * (scripts/embed_assets.sh writes the table from web/dist, or from
 * web/fallback until the UI is built), and the rules for serving static
 * paths safely.
 *
 * Part of the HTTP layer: knows nothing of models. Read-only data; threads: any.
 */
#ifndef HEED_ASSETS_H
#define HEED_ASSETS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct asset {
    const char *path; /* "/index.html" */
    const unsigned char *data;
    size_t size;
} asset;

extern const asset heed_assets[];
extern const int heed_n_assets;

/* The embedded file for a URL path ("/" means "/index.html"), or NULL. */
const asset *assets_find(const char *path);

/* Content-Type for a path, by extension (application/octet-stream if unknown). */
const char *assets_mime(const char *path);

/* Whether a decoded URL path may name a file under the asset root: it starts
 * with '/', has no empty, "." or ".." segment, no segment starting with '.',
 * no backslash and no control character. Symlinks are the caller's to check
 * (realpath) when serving from disk. */
bool assets_path_ok(const char *path);

#endif
