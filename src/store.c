/*
 * store.c - the run store of `heed serve` (contract in store.h).
 *
 * A run goes into SQLite as the bytes heed_run_write writes, compressed with
 * zstd as they are written: heed_run_write's stream is a fopencookie stream
 * whose writes go through the compressor into one growing buffer, and a
 * stored run is read back by heed_run_read from a stream that decompresses
 * the blob as it is read. So neither direction holds the uncompressed run
 * file in memory, and no temporary file is made. Each call opens its own
 * connection: SQLite connections are not to be shared across threads
 * without a lock, and with WAL a reader's connection never waits for the
 * writer's transaction.
 */
#define _GNU_SOURCE /* fopencookie */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>
#include <zstd.h>

#include "store.h"

#define STORE_BUSY_MS 5000              /* a writer waits this long for another writer */
#define STORE_MAX_RUN_BYTES (8ull << 30) /* a stored run decompresses to at most this */
#define STORE_ZSTD_LEVEL 3

typedef struct view {
    struct view *next; /* newer first */
    char *key;
    char *body;
    size_t len;
    const char *type;
} view;

struct store_run {
    store_run *prev, *next; /* LRU list, most recent first; under store.mu */
    char id[STORE_ID_MAX];
    int refs;     /* the cache's own reference while listed, plus one per acquire */
    bool listed;
    heed_run *run;
    pthread_mutex_t mu; /* held while a view is computed on run */
    view *views;        /* under store.mu */
    int n_views;
    size_t view_bytes;  /* of its views, under store.mu */
};

struct store {
    char *dir, *db_path;
    int cap;
    pthread_mutex_t mu;
    store_run *head, *tail;
    int n_cached;
    size_t view_bytes, view_budget; /* computed views kept, all runs; under mu */
};

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "CREATE TABLE IF NOT EXISTS runs(id TEXT PRIMARY KEY, created INTEGER, model TEXT, prompt TEXT,"
    " params TEXT, n_prompt INTEGER, n_output INTEGER, text TEXT, blob BLOB, kind TEXT, stop TEXT, doc TEXT);"
    "CREATE INDEX IF NOT EXISTS runs_created ON runs(created);";

static sqlite3 *db_open(const store *s, bool write) {
    sqlite3 *db = NULL;
    int flags = (write ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY) | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(s->db_path, &db, flags, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, STORE_BUSY_MS);
    return db;
}

/* ------------------------------------------------------------ cache */

static void run_unref_locked(store_run *r, store_run **dead) {
    if (--r->refs == 0) {
        r->next = *dead; /* freed outside the lock */
        *dead = r;
    }
}

static size_t view_size(const view *v) { return v->len + strlen(v->key) + sizeof *v; }

static void view_free(view *v) {
    free(v->key);
    free(v->body);
    free(v);
}

/* Drops every view of r (under mu). */
static void views_drop_locked(store *s, store_run *r) {
    for (view *v = r->views, *n; v; v = n) {
        n = v->next;
        view_free(v);
    }
    s->view_bytes -= r->view_bytes;
    r->views = NULL;
    r->n_views = 0;
    r->view_bytes = 0;
}

/* Drops the oldest view of r (under mu). */
static void view_drop_oldest_locked(store *s, store_run *r) {
    view **p = &r->views;
    if (!*p) return;
    while ((*p)->next) p = &(*p)->next;
    view *old = *p;
    *p = NULL;
    size_t n = view_size(old);
    r->n_views--;
    r->view_bytes -= n;
    s->view_bytes -= n;
    view_free(old);
}

static void run_free(store_run *r) {
    for (view *v = r->views, *n; v; v = n) { /* none while it was listed: unlisting drops them */
        n = v->next;
        view_free(v);
    }
    heed_run_free(r->run);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static void free_dead(store_run *dead) {
    for (store_run *n; dead; dead = n) {
        n = dead->next;
        run_free(dead);
    }
}

static void unlist_locked(store *s, store_run *r, store_run **dead) {
    if (!r->listed) return;
    views_drop_locked(s, r);
    if (r->prev) r->prev->next = r->next;
    else s->head = r->next;
    if (r->next) r->next->prev = r->prev;
    else s->tail = r->prev;
    r->prev = r->next = NULL;
    r->listed = false;
    s->n_cached--;
    run_unref_locked(r, dead);
}

static void push_front_locked(store *s, store_run *r) {
    r->prev = NULL;
    r->next = s->head;
    if (s->head) s->head->prev = r;
    else s->tail = r;
    s->head = r;
    r->listed = true;
    s->n_cached++;
}

static store_run *find_locked(store *s, const char *id) {
    for (store_run *r = s->head; r; r = r->next)
        if (!strcmp(r->id, id)) return r;
    return NULL;
}

/* Lists r (taking the caller's reference as the cache's) and evicts the
 * least recently used beyond the capacity. */
static void cache_insert_locked(store *s, store_run *r, store_run **dead) {
    push_front_locked(s, r);
    while (s->n_cached > s->cap) unlist_locked(s, s->tail, dead);
}

static store_run *run_new(const char *id, heed_run *run) {
    store_run *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    snprintf(r->id, sizeof r->id, "%s", id);
    r->run = run;
    r->refs = 1;
    pthread_mutex_init(&r->mu, NULL);
    return r;
}

/* ------------------------------------------------------------ blobs */

/* The write end: a stream whose bytes go through the compressor into buf. */
typedef struct zsink {
    ZSTD_CCtx *cctx;
    unsigned char *buf; /* the compressed frame so far (malloc'd) */
    size_t len, cap;
    size_t zerr;        /* zstd's first error, else 0 */
    bool nomem;
} zsink;

/* Compresses what is left of in (ZSTD_e_continue), or ends the frame
 * (ZSTD_e_end), appending the output to buf. */
static bool zsink_run(zsink *z, ZSTD_inBuffer *in, ZSTD_EndDirective mode) {
    for (;;) {
        if (z->cap - z->len < ZSTD_CStreamOutSize()) {
            size_t cap = z->cap * 2 + ZSTD_CStreamOutSize();
            unsigned char *b = realloc(z->buf, cap);
            if (!b) {
                z->nomem = true;
                return false;
            }
            z->buf = b;
            z->cap = cap;
        }
        ZSTD_outBuffer out = {z->buf + z->len, z->cap - z->len, 0};
        size_t left = ZSTD_compressStream2(z->cctx, &out, in, mode);
        z->len += out.pos;
        if (ZSTD_isError(left)) {
            z->zerr = left;
            return false;
        }
        if (mode == ZSTD_e_continue ? in->pos == in->size : left == 0) return true;
    }
}

static ssize_t zsink_write(void *cookie, const char *data, size_t n) {
    ZSTD_inBuffer in = {data, n, 0};
    return zsink_run(cookie, &in, ZSTD_e_continue) ? (ssize_t)n : 0; /* 0: an error, for stdio */
}

/* The run file's bytes, compressed: one zstd frame that states the run's
 * size (heed_run_file_size), which loading reads back. */
static void *run_compress(const heed_run *run, size_t *len, char *err, size_t err_size) {
    zsink z = {.cctx = ZSTD_createCCtx()};
    cookie_io_functions_t io = {.write = zsink_write};
    FILE *f = NULL;
    if (z.cctx && !ZSTD_isError(ZSTD_CCtx_setParameter(z.cctx, ZSTD_c_compressionLevel, STORE_ZSTD_LEVEL)) &&
        !ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(z.cctx, heed_run_file_size(run))))
        f = fopencookie(&z, "w", io);
    bool ok = f && heed_run_write(run, f, "stored run", err, err_size) == HEED_OK;
    if (f && fclose(f) != 0) ok = false;
    ZSTD_inBuffer end = {NULL, 0, 0};
    if (ok) ok = zsink_run(&z, &end, ZSTD_e_end);
    if (!ok && (!f || z.zerr || z.nomem))
        snprintf(err, err_size, "cannot compress the run: %s", z.zerr ? ZSTD_getErrorName(z.zerr) : "out of memory");
    ZSTD_freeCCtx(z.cctx);
    if (!ok) {
        free(z.buf);
        return NULL;
    }
    *len = z.len;
    return z.buf;
}

/* The read end: a stream of the blob's decompressed bytes. */
typedef struct zsource {
    ZSTD_DCtx *dctx;
    ZSTD_inBuffer in;
    size_t zerr;       /* zstd's first error, else 0 */
    bool done;         /* the frame is complete */
    bool cut;          /* the blob ends inside the frame */
} zsource;

static ssize_t zsource_read(void *cookie, char *buf, size_t n) {
    zsource *z = cookie;
    ZSTD_outBuffer out = {buf, n, 0};
    while (out.pos < out.size && !z->done && !z->cut) {
        size_t left = ZSTD_decompressStream(z->dctx, &out, &z->in);
        if (ZSTD_isError(left)) {
            z->zerr = left;
            return -1;
        }
        if (left == 0) z->done = true;
        else if (z->in.pos == z->in.size && out.pos < out.size) z->cut = true; /* no more input, output wanted */
        if (out.pos) break;
    }
    return (ssize_t)out.pos; /* 0: the end, which heed_run_read reports as a truncated run */
}

/* Decompresses a blob into a run as heed_run_read reads it. */
static int run_decompress(const void *blob, size_t n, heed_run **out, char *err, size_t err_size) {
    unsigned long long size = ZSTD_getFrameContentSize(blob, n);
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > STORE_MAX_RUN_BYTES) {
        snprintf(err, err_size, "stored run: the compressed blob is corrupt or too large");
        return -1;
    }
    zsource z = {.dctx = ZSTD_createDCtx(), .in = {blob, n, 0}};
    cookie_io_functions_t io = {.read = zsource_read};
    FILE *f = z.dctx ? fopencookie(&z, "r", io) : NULL;
    int rc = -1;
    if (!f) snprintf(err, err_size, "stored run: out of memory");
    else rc = heed_run_read(f, size, "stored run", out, err, err_size) == HEED_OK ? 0 : -1;
    if (f) fclose(f);
    if (rc && z.zerr) snprintf(err, err_size, "stored run: cannot decompress: %s", ZSTD_getErrorName(z.zerr));
    else if (rc && z.cut) snprintf(err, err_size, "stored run: the compressed blob is truncated");
    ZSTD_freeDCtx(z.dctx);
    return rc;
}

/* ------------------------------------------------------------ API */

int store_open(const char *dir, int cache_runs, size_t cache_bytes, store **out, char *err, size_t err_size) {
    *out = NULL;
    store *s = calloc(1, sizeof *s);
    size_t n = strlen(dir) + sizeof "/runs.db";
    if (!s || !(s->dir = strdup(dir)) || !(s->db_path = malloc(n))) {
        snprintf(err, err_size, "out of memory");
        store_close(s);
        return HEED_ERR_NOMEM;
    }
    snprintf(s->db_path, n, "%s/runs.db", dir);
    s->cap = cache_runs > 0 ? cache_runs : 1;
    s->view_budget = cache_bytes;
    pthread_mutex_init(&s->mu, NULL);
    sqlite3 *db = db_open(s, true);
    char *msg = NULL;
    if (!db || sqlite3_exec(db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, err_size, "%s: %s", s->db_path, msg ? msg : db ? sqlite3_errmsg(db) : "cannot open");
        sqlite3_free(msg);
        sqlite3_close(db);
        store_close(s);
        return HEED_ERR_IO;
    }
    sqlite3_close(db);
    *out = s;
    return HEED_OK;
}

void store_close(store *s) {
    if (!s) return;
    store_run *dead = NULL;
    while (s->head) unlist_locked(s, s->head, &dead);
    free_dead(dead);
    pthread_mutex_destroy(&s->mu);
    free(s->dir);
    free(s->db_path);
    free(s);
}

static void bind_text(sqlite3_stmt *st, int i, const char *v) {
    if (v) sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, i);
}

int store_put(store *s, const store_row *row, heed_run *run, char *err, size_t err_size) {
    size_t zn = 0;
    void *z = run_compress(run, &zn, err, err_size);
    sqlite3 *db = z ? db_open(s, true) : NULL;
    sqlite3_stmt *st = NULL;
    int rc = HEED_ERR_IO;
    if (db &&
        sqlite3_prepare_v2(db,
                           "INSERT OR REPLACE INTO runs(id, created, model, prompt, params, n_prompt, n_output, text,"
                           " blob, kind, stop, doc) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                           -1, &st, NULL) == SQLITE_OK) {
        bind_text(st, 1, row->id);
        sqlite3_bind_int64(st, 2, row->created);
        bind_text(st, 3, row->model);
        bind_text(st, 4, row->prompt);
        bind_text(st, 5, row->params);
        sqlite3_bind_int(st, 6, row->n_prompt);
        sqlite3_bind_int(st, 7, row->n_output);
        bind_text(st, 8, row->text);
        sqlite3_bind_blob64(st, 9, z, zn, SQLITE_STATIC);
        bind_text(st, 10, row->kind);
        bind_text(st, 11, row->stop);
        bind_text(st, 12, row->doc);
        /* one statement is one transaction: the row and its blob land together */
        rc = sqlite3_step(st) == SQLITE_DONE ? HEED_OK : HEED_ERR_IO;
    }
    if (rc && z) snprintf(err, err_size, "%s: %s", s->db_path, db ? sqlite3_errmsg(db) : "cannot open");
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(z);
    store_run *r = rc ? NULL : run_new(row->id, run);
    if (!r) {
        heed_run_free(run);
        return rc;
    }
    store_run *dead = NULL;
    pthread_mutex_lock(&s->mu);
    store_run *old = find_locked(s, row->id);
    if (old) unlist_locked(s, old, &dead);
    cache_insert_locked(s, r, &dead);
    pthread_mutex_unlock(&s->mu);
    free_dead(dead);
    return HEED_OK;
}

int store_get_doc(store *s, const char *id, char **json) {
    *json = NULL;
    sqlite3 *db = db_open(s, false);
    sqlite3_stmt *st = NULL;
    int rc = HEED_ERR_IO;
    if (db && sqlite3_prepare_v2(db, "SELECT doc FROM runs WHERE id = ?", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        int r = sqlite3_step(st);
        if (r == SQLITE_DONE) rc = HEED_ERR_NOT_FOUND;
        else if (r == SQLITE_ROW) {
            const char *doc = (const char *)sqlite3_column_text(st, 0);
            *json = strdup(doc ? doc : "{}");
            rc = *json ? HEED_OK : HEED_ERR_NOMEM;
        }
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

/* Appends to a growing text; false when out of memory. */
static bool cat(char **buf, size_t *len, size_t *cap, const char *s) {
    size_t n = strlen(s);
    if (*len + n + 1 > *cap) {
        size_t c = *cap * 2 + n + 256;
        char *b = realloc(*buf, c);
        if (!b) return false;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, s, n + 1);
    *len += n;
    return true;
}

int store_list(store *s, int limit, long long offset, char **json, long long *total) {
    *json = NULL;
    *total = 0;
    sqlite3 *db = db_open(s, false);
    sqlite3_stmt *st = NULL;
    /* json_object() builds each entry in SQLite, so no text needs escaping here */
    static const char sql[] = "SELECT json_object('id', id, 'kind', kind, 'created', created, 'model', model,"
                              " 'n_prompt', n_prompt, 'n_output', n_output, 'stop', stop, 'preview',"
                              " substr(coalesce(prompt, json_extract(doc, '$.messages[#-1].content')), 1, 80),"
                              " 'parent', json_extract(doc, '$.branch.run'), 'step', json_extract(doc, '$.branch.step')),"
                              " (SELECT count(*) FROM runs)"
                              " FROM runs ORDER BY created DESC, rowid DESC LIMIT ? OFFSET ?";
    char *buf = NULL;
    size_t len = 0, cap = 0;
    bool ok = db && sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && cat(&buf, &len, &cap, "[");
    if (ok) {
        sqlite3_bind_int(st, 1, limit);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)offset);
    }
    int r, n = 0;
    while (ok && (r = sqlite3_step(st)) == SQLITE_ROW) {
        *total = sqlite3_column_int64(st, 1);
        ok = (!n++ || cat(&buf, &len, &cap, ",")) && cat(&buf, &len, &cap, (const char *)sqlite3_column_text(st, 0));
    }
    ok = ok && r == SQLITE_DONE && cat(&buf, &len, &cap, "]");
    sqlite3_finalize(st);
    if (ok && n == 0) { /* past the end: the count still tells the client how many there are */
        ok = sqlite3_prepare_v2(db, "SELECT count(*) FROM runs", -1, &st, NULL) == SQLITE_OK &&
             sqlite3_step(st) == SQLITE_ROW;
        if (ok) *total = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    if (!ok) {
        free(buf);
        return HEED_ERR_IO;
    }
    *json = buf;
    return HEED_OK;
}

int store_delete(store *s, const char *id) {
    sqlite3 *db = db_open(s, true);
    sqlite3_stmt *st = NULL;
    int rc = HEED_ERR_IO;
    if (db && sqlite3_prepare_v2(db, "DELETE FROM runs WHERE id = ?", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_DONE) rc = sqlite3_changes(db) > 0 ? HEED_OK : HEED_ERR_NOT_FOUND;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    store_run *dead = NULL;
    pthread_mutex_lock(&s->mu);
    store_run *r = find_locked(s, id);
    if (r) unlist_locked(s, r, &dead);
    pthread_mutex_unlock(&s->mu);
    free_dead(dead);
    return rc;
}

/* Loads a run's blob from the database. HEED_OK, HEED_ERR_NOT_FOUND, or
 * an error with err. */
static int load_run(store *s, const char *id, heed_run **out, char *err, size_t err_size) {
    sqlite3 *db = db_open(s, false);
    sqlite3_stmt *st = NULL;
    int rc = HEED_ERR_IO;
    snprintf(err, err_size, "%s: cannot read", s->db_path);
    if (db && sqlite3_prepare_v2(db, "SELECT blob FROM runs WHERE id = ?", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        int r = sqlite3_step(st);
        if (r == SQLITE_DONE) rc = HEED_ERR_NOT_FOUND;
        else if (r == SQLITE_ROW)
            rc = run_decompress(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), out, err, err_size)
                     ? HEED_ERR_FORMAT
                     : HEED_OK;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

int store_acquire(store *s, const char *id, store_run **out, char *err, size_t err_size) {
    *out = NULL;
    store_run *dead = NULL, *r;
    pthread_mutex_lock(&s->mu);
    if ((r = find_locked(s, id))) {
        r->refs++;
        unlist_locked(s, r, &dead); /* cannot free: we hold a reference */
        r->refs++;
        push_front_locked(s, r);
    }
    pthread_mutex_unlock(&s->mu);
    if (r) {
        *out = r;
        return HEED_OK;
    }
    /* loaded outside the lock: other runs stay readable meanwhile */
    heed_run *run = NULL;
    int rc = load_run(s, id, &run, err, err_size);
    if (rc) return rc;
    if (!(r = run_new(id, run))) {
        heed_run_free(run);
        snprintf(err, err_size, "out of memory");
        return HEED_ERR_NOMEM;
    }
    pthread_mutex_lock(&s->mu);
    store_run *other = find_locked(s, id);
    if (other) { /* another request loaded it first: use that one */
        other->refs++;
        dead = r;
        r->next = NULL;
        r = other;
    } else {
        r->refs++;
        cache_insert_locked(s, r, &dead);
    }
    pthread_mutex_unlock(&s->mu);
    free_dead(dead);
    *out = r;
    return HEED_OK;
}

void store_release(store *s, store_run *r) {
    if (!r) return;
    store_run *dead = NULL;
    pthread_mutex_lock(&s->mu);
    run_unref_locked(r, &dead);
    pthread_mutex_unlock(&s->mu);
    free_dead(dead);
}

heed_run *store_run_get(store_run *r) { return r->run; }
void store_run_lock(store_run *r) { pthread_mutex_lock(&r->mu); }
void store_run_unlock(store_run *r) { pthread_mutex_unlock(&r->mu); }

bool store_view_get(store *s, store_run *r, const char *key, char **body, size_t *len, const char **type) {
    bool hit = false;
    pthread_mutex_lock(&s->mu);
    for (view *v = r->views; v && !hit; v = v->next) {
        if (strcmp(v->key, key)) continue;
        if ((*body = malloc(v->len + 1))) {
            memcpy(*body, v->body, v->len);
            (*body)[v->len] = 0;
            *len = v->len;
            *type = v->type;
            hit = true;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return hit;
}

void store_view_put(store *s, store_run *r, const char *key, const char *body, size_t len, const char *type) {
    /* a view larger than a quarter of the budget is computed each time */
    if (len + strlen(key) + sizeof(view) > s->view_budget / 4) return;
    view *v = calloc(1, sizeof *v);
    if (!v || !(v->key = strdup(key)) || !(v->body = malloc(len ? len : 1))) {
        if (v) free(v->key);
        free(v);
        return;
    }
    memcpy(v->body, body, len);
    v->len = len;
    v->type = type;
    pthread_mutex_lock(&s->mu);
    if (!r->listed) { /* evicted meanwhile: its views would outlive the count */
        pthread_mutex_unlock(&s->mu);
        view_free(v);
        return;
    }
    for (view *o = r->views; o; o = o->next)
        if (!strcmp(o->key, key)) { /* computed twice at once: keep one */
            pthread_mutex_unlock(&s->mu);
            view_free(v);
            return;
        }
    v->next = r->views;
    r->views = v;
    r->n_views++;
    r->view_bytes += view_size(v);
    s->view_bytes += view_size(v);
    if (r->n_views > STORE_VIEWS_PER_RUN) view_drop_oldest_locked(s, r);
    /* over the budget: the oldest views of the least recently used runs go first */
    for (store_run *t = s->tail; t && s->view_bytes > s->view_budget;) {
        if (t->views) view_drop_oldest_locked(s, t);
        else t = t->prev;
    }
    pthread_mutex_unlock(&s->mu);
}
