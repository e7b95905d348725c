/*
 * store.h - the persistent run store of `heed serve`: one SQLite file
 * (runs.db) in the data folder, and an in-memory LRU cache in front of it.
 *
 *   runs(id TEXT PRIMARY KEY, created INTEGER, model TEXT, prompt TEXT,
 *        params TEXT (JSON), n_prompt INTEGER, n_output INTEGER, text TEXT,
 *        blob BLOB, kind TEXT, stop TEXT, doc TEXT)
 *
 * blob is the zstd-compressed run file that heed_run_write writes
 * (docs/RUN_FORMAT.md), so a run comes back with heed_run_read and every
 * view works on it after a restart; doc is the JSON of GET /api/runs/{id},
 * kept beside it so metadata reads never decompress the blob.
 *
 * What it does not do: HTTP, JSON parsing of requests, views. It sees only
 * heed.h, SQLite and zstd.
 *
 * Threads: every call may come from any thread. The database is in WAL mode
 * and each call opens its own connection, so readers never wait for a
 * writer (or for a generation). The cache has one mutex for its lists; a
 * cached run has its own mutex, held while a view is computed on it (a
 * heed_run is used by one thread at a time).
 */
#ifndef HEED_STORE_H
#define HEED_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "heed.h"

#define STORE_ID_MAX 40
#define STORE_VIEWS_PER_RUN 64 /* computed views kept per cached run */

typedef struct store store;
typedef struct store_run store_run;

/* The columns of one run besides the blob (strings borrowed). */
typedef struct store_row {
    const char *id, *model, *prompt, *params, *text, *kind, *stop, *doc;
    long long created;
    int n_prompt, n_output;
} store_row;

/* Opens (creates) DIR/runs.db; cache_runs is the number of runs kept loaded
 * (>= 1), cache_bytes the bytes their computed views may hold in all (the
 * oldest views of the least recently used runs go first; a view larger than
 * a quarter of it is not kept). Returns HEED_OK, or HEED_ERR_IO /
 * HEED_ERR_NOMEM with a message in err. */
int store_open(const char *dir, int cache_runs, size_t cache_bytes, store **out, char *err, size_t err_size);
void store_close(store *s);

/* Saves run (compressed) with its row in one transaction and puts it in the
 * cache, which takes it over (the caller must not free it). Returns HEED_OK,
 * or an error (HEED_ERR_IO: a full or read-only disk, a broken database)
 * with err; the run is freed either way. */
int store_put(store *s, const store_row *row, heed_run *run, char *err, size_t err_size);

/* The doc column of a run: *json malloc'd. Returns HEED_OK, HEED_ERR_NOT_FOUND,
 * HEED_ERR_IO or HEED_ERR_NOMEM. */
int store_get_doc(store *s, const char *id, char **json);

/* The runs newest first as a JSON array text of
 * {"id","kind","created","model","n_prompt","n_output","stop"} (malloc'd).
 * *total gets the number of stored runs. Returns HEED_OK or HEED_ERR_IO. */
int store_list(store *s, int limit, long long offset, char **json, long long *total);

/* Deletes a run from the database and the cache. Returns HEED_OK,
 * HEED_ERR_NOT_FOUND or HEED_ERR_IO. */
int store_delete(store *s, const char *id);

/* A run from the cache, or loaded from the database into it. Returns
 * HEED_OK with *out referenced (store_release), HEED_ERR_NOT_FOUND, or an
 * error (HEED_ERR_IO, HEED_ERR_FORMAT: a damaged blob, HEED_ERR_NOMEM) with
 * err. Every call here returns a heed_status (heed.h). */
int store_acquire(store *s, const char *id, store_run **out, char *err, size_t err_size);
void store_release(store *s, store_run *r);

/* The run of a reference; lock it while using it (views are one thread at a
 * time per run). */
heed_run *store_run_get(store_run *r);
void store_run_lock(store_run *r);
void store_run_unlock(store_run *r);

/* A computed view of run r under key (the normalized request): copies it
 * into *body (malloc'd). Returns true on a hit. */
bool store_view_get(store *s, store_run *r, const char *key, char **body, size_t *len, const char **type);
/* Keeps a copy of a computed view (the oldest goes beyond STORE_VIEWS_PER_RUN,
 * or beyond the byte budget). type must be a static string. */
void store_view_put(store *s, store_run *r, const char *key, const char *body, size_t len, const char *type);

#endif
