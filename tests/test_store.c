/*
 * test_store.c - the run store (store.c) without the server: a run put in
 * the database comes back from it (evicted from the cache first) with the
 * same run-file bytes, through the compressing and decompressing streams
 * (no temporary files in the data folder); blobs corrupted in the database
 * are refused with a message, never loaded.
 */
#include <dirent.h>
#include <sqlite3.h>

#include "heed.h"
#include "runutil.h"
#include "store.h"
#include "testutil.h"

#define STORE_DIR "test-output/store"

static void put(store *s, const char *id, heed_run *run) {
    char err[256];
    store_row row = {.id = id, .model = "stories260K", .prompt = "p", .params = "{}", .text = "", .kind = "run",
                     .stop = "length", .doc = "{}", .created = 1, .n_prompt = 1, .n_output = 1};
    if (store_put(s, &row, run, err, sizeof err)) fail_msg("store_put %s: %s", id, err);
}

/* Loads id through the cache of one, evicting whatever it held. */
static int acquire_cold(store *s, const char *id, const char *other, heed_run **copy, char *err, size_t n) {
    store_run *r = NULL;
    assert_int_equal(store_acquire(s, other, &r, err, n), HEED_OK); /* evicts id from the cache */
    store_release(s, r);
    int rc = store_acquire(s, id, &r, err, n);
    if (rc == HEED_OK) {
        size_t len;
        char *b = ru_run_bytes(store_run_get(r), &len);
        FILE *f = fmemopen(b, len, "rb");
        assert_int_equal(heed_run_read(f, len, "copy", copy, err, n), HEED_OK);
        fclose(f);
        free(b);
        store_release(s, r);
    }
    return rc;
}

static void sql(const char *stmt) {
    sqlite3 *db;
    assert_int_equal(sqlite3_open(STORE_DIR "/runs.db", &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, stmt, NULL, NULL, &msg) != SQLITE_OK) fail_msg("%s: %s", stmt, msg);
    sqlite3_close(db);
}

/* Nothing but the database in the data folder: no temporary run files. */
static void expect_no_stray_files(void) {
    DIR *d = opendir(STORE_DIR);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (strncmp(e->d_name, "runs.db", 7) != 0) fail_msg("stray file in the data folder: %s", e->d_name);
    }
    closedir(d);
}

static void test_put_and_load_back(void **state) {
    assert_int_equal(system("rm -rf " STORE_DIR " && mkdir -p " STORE_DIR), 0);
    store *s;
    char err[256];
    assert_int_equal(store_open(STORE_DIR, 1, 1 << 20, &s, err, sizeof err), 0);
    heed_run *a = ru_record("Once upon a time", 12, NULL), *b = ru_record("Lily", 3, NULL);
    size_t na;
    char *bytes_a = ru_run_bytes(a, &na);
    put(s, "a", a);
    put(s, "b", b);
    expect_no_stray_files();
    heed_run *copy = NULL;
    assert_int_equal(acquire_cold(s, "a", "b", &copy, err, sizeof err), HEED_OK);
    size_t nc;
    char *bytes_c = ru_run_bytes(copy, &nc);
    assert_int_equal(nc, na);
    assert_memory_equal(bytes_c, bytes_a, na);
    heed_run_free(copy);
    free(bytes_c);
    free(bytes_a);
    store_run *none;
    assert_int_equal(store_acquire(s, "missing", &none, err, sizeof err), HEED_ERR_NOT_FOUND);
    expect_no_stray_files();
    store_close(s);
}

/* Blobs damaged in the database: refused with a message, the store goes on. */
static void test_corrupt_blobs(void **state) {
    assert_int_equal(system("rm -rf " STORE_DIR " && mkdir -p " STORE_DIR), 0);
    store *s;
    char err[256];
    assert_int_equal(store_open(STORE_DIR, 1, 1 << 20, &s, err, sizeof err), 0);
    put(s, "a", ru_record("Once upon a time", 8, NULL));
    put(s, "b", ru_record("Lily", 2, NULL));
    sql("CREATE TABLE keep AS SELECT blob FROM runs WHERE id = 'a'");
    static const struct {
        const char *update, *msg;
    } cases[] = {
        {"UPDATE runs SET blob = substr((SELECT blob FROM keep), 1, length((SELECT blob FROM keep)) / 2)"
         " WHERE id = 'a'", "stored run: the compressed blob is truncated"},
        {"UPDATE runs SET blob = x'00010203' WHERE id = 'a'", "stored run: the compressed blob is corrupt"},
        {"UPDATE runs SET blob = NULL WHERE id = 'a'", "stored run: the compressed blob is corrupt"},
        /* a byte of the compressed data changed: zstd or the run's own checks refuse it */
        {"UPDATE runs SET blob = (SELECT substr(blob, 1, 200) ||"
         " CASE WHEN substr(blob, 201, 1) = x'5a' THEN x'a5' ELSE x'5a' END || substr(blob, 202) FROM keep)"
         " WHERE id = 'a'", "stored run: "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sql(cases[i].update);
        heed_run *copy = NULL;
        err[0] = 0;
        int rc = acquire_cold(s, "a", "b", &copy, err, sizeof err);
        if (rc != HEED_ERR_FORMAT || strncmp(err, cases[i].msg, strlen(cases[i].msg)) != 0)
            fail_msg("case %zu: rc %d: %s", i, rc, err);
        print_message("refused: %s\n", err);
        assert_null(copy);
    }
    sql("UPDATE runs SET blob = (SELECT blob FROM keep) WHERE id = 'a'");
    heed_run *copy = NULL;
    assert_int_equal(acquire_cold(s, "a", "b", &copy, err, sizeof err), HEED_OK);
    heed_run_free(copy);
    store_close(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_and_load_back),
        cmocka_unit_test(test_corrupt_blobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
