/*
 * pull.c - `heed pull ORG/REPO[:FILE]`: a model from a Hugging Face-compatible
 * server into the cache; pull_resolve: `-m ORG/REPO[:FILE]` to the cached copy.
 *
 * The protocol is the Hub's HTTP API, as huggingface_hub speaks it:
 *   GET {base}/api/models/ORG/REPO?blobs=true
 *       {"siblings": [{"rfilename", "size", "lfs": {"sha256", "size"}}, ...]}
 *   GET {base}/api/models/ORG/REPO/tree/main?recursive=true
 *       [{"type": "file", "path", "size", "lfs": {"oid", "size"}}, ...]
 *       (asked only when the first answer has no "siblings": some mirrors serve
 *       only the tree; its first page is read)
 *   GET {base}/ORG/REPO/resolve/main/FILE
 *       the bytes; for a large (LFS) file a redirect to a CDN whose first
 *       answer carries X-Linked-Etag (the file's sha256) and X-Linked-Size;
 *       a simpler server may send the sha256 as the ETag (64 hex digits: a
 *       git blob's 40-digit sha1 ETag is no checksum and is ignored).
 * HF_TOKEN goes as "Authorization: Bearer" to the base URL's host only
 * (libcurl drops it on a redirect to another host); it is never printed.
 *
 * What is fetched: FILE when given; else the repository's one .gguf file
 * (several: the user picks one with :FILE); else, with no GGUF, the files
 * src/hf.c loads from a checkpoint folder: model.safetensors (or
 * model.safetensors.index.json and the shards its weight_map names, when
 * there is no single file: hf.c's order), tokenizer.json,
 * tokenizer_config.json, generation_config.json, and config.json last.
 *
 * A file goes to CACHE/models/ORG/REPO/FILE through FILE.part: a new run
 * resumes a .part with "Range: bytes=N-" (appending on 206, starting over on
 * 200), a dropped transfer is resumed within the run up to PULL_TRIES times
 * in a row without progress, the finished file's size and sha256 are checked
 * against what the server said, and only then is it renamed into place. A
 * mismatch deletes the .part. So a file in place is whole, and a checkpoint
 * folder with its config.json is complete: pull_resolve relies on both.
 * The .part is locked (flock) while a pull writes it.
 *
 * Not done: revisions other than main, dataset and space repositories,
 * parallel downloads, the tree API's further pages.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "heed.h"
#include "pull.h"

#define PULL_NAME_MAX 96                /* an org or repository name (the Hub's limit) */
#define PULL_FILE_MAX 512               /* a file's path inside a repository */
#define PULL_JSON_MAX (64u << 20)       /* an API answer or an index file; real ones are kilobytes */
#define PULL_FILES_MAX 100000           /* files of a repository looked at */
#define PULL_TRIES 5                    /* attempts in a row without a byte of progress */
#define PULL_ATTEMPTS_MAX 100           /* attempts at one file in all */
#define PULL_DEFAULT_BASE "https://huggingface.co"
#define PULL_OFFLINE_HINT "heed pull needs the network \xe2\x80\x94 offline, copy a GGUF file and pass -m PATH"

static const char *pull_usage =
    "usage: heed pull ORG/REPO[:FILE] [--base-url URL]\n"
    "\n"
    "Downloads a model from the Hugging Face Hub (or a server speaking its API) into the cache;\n"
    "then -m ORG/REPO[:FILE] uses it (heed generate, tokenize, info, serve).\n"
    "  ORG/REPO        the repository's one GGUF file, or with no GGUF its checkpoint folder\n"
    "                  (config.json, tokenizer files, safetensors)\n"
    "  ORG/REPO:FILE   that file (a repository with several GGUF files needs it)\n"
    "  --base-url URL  the server (default: $HF_ENDPOINT, else " PULL_DEFAULT_BASE ")\n"
    "\n"
    "HF_TOKEN (environment): the access token for private and gated repositories.\n"
    "Cache: $HEED_CACHE, else $XDG_CACHE_HOME/heed, else ~/.cache/heed; files at models/ORG/REPO/FILE.\n"
    "An interrupted download resumes when heed pull is run again.\n";

/* ---------------------------------------------------------- SHA-256 */

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, int n) { return x >> n | x << (32 - n); }

/* One 64-byte block into the state (FIPS 180-4, 6.2.2). */
static void sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ w[i - 15] >> 3;
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ w[i - 2] >> 10;
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + sha256_k[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

void pull_sha256_init(pull_sha256 *s) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->n_bytes = 0;
}

void pull_sha256_update(pull_sha256 *s, const void *data, size_t n) {
    if (!n) return;
    const uint8_t *p = data;
    size_t have = (size_t)(s->n_bytes % 64);
    s->n_bytes += n;
    if (have) {
        size_t take = 64 - have < n ? 64 - have : n;
        memcpy(s->block + have, p, take);
        p += take, n -= take;
        if (have + take < 64) return;
        sha256_block(s->h, s->block);
    }
    for (; n >= 64; p += 64, n -= 64) sha256_block(s->h, p);
    if (n) memcpy(s->block, p, n);
}

void pull_sha256_final(pull_sha256 *s, uint8_t digest[32]) {
    uint64_t bits = s->n_bytes * 8;
    size_t have = (size_t)(s->n_bytes % 64);
    s->block[have++] = 0x80;
    if (have > 56) {
        memset(s->block + have, 0, 64 - have);
        sha256_block(s->h, s->block);
        have = 0;
    }
    memset(s->block + have, 0, 56 - have);
    for (int i = 0; i < 8; i++) s->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_block(s->h, s->block);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++) digest[4 * i + j] = (uint8_t)(s->h[i] >> (24 - 8 * j));
}

static void hex_of(const uint8_t digest[32], char hex[65]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 15];
    }
    hex[64] = 0;
}

void pull_sha256_hex(const void *data, size_t n, char hex[65]) {
    pull_sha256 s;
    uint8_t d[32];
    pull_sha256_init(&s);
    pull_sha256_update(&s, data, n);
    pull_sha256_final(&s, d);
    hex_of(d, hex);
}

/* ---------------------------------------------------------- names */

typedef struct spec {
    char org[PULL_NAME_MAX + 1], repo[PULL_NAME_MAX + 1];
    char file[PULL_FILE_MAX + 1]; /* "" when not given */
} spec;

static bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.';
}

/* An org or repository name: the Hub's characters, no leading '.' or '-'. */
static bool name_ok(const char *s, size_t n) {
    if (n == 0 || n > PULL_NAME_MAX || s[0] == '.' || s[0] == '-') return false;
    for (size_t i = 0; i < n; i++)
        if (!name_char(s[i])) return false;
    return true;
}

/* A file's path inside a repository: relative, no empty, "." or ".."
 * component (it becomes a path under the cache), no control character. */
static bool file_ok(const char *f) {
    size_t n = strlen(f);
    if (n == 0 || n > PULL_FILE_MAX || f[0] == '/') return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)f[i] < 0x20 || f[i] == 0x7f || f[i] == '\\') return false;
    for (const char *c = f; *c;) {
        size_t len = strcspn(c, "/");
        if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.')) return false;
        c += len;
        if (*c == '/' && !*++c) return false; /* a trailing '/' */
    }
    return true;
}

/* "ORG/REPO" or "ORG/REPO:FILE". */
static bool spec_parse(const char *s, spec *sp) {
    const char *colon = strchr(s, ':');
    size_t head = colon ? (size_t)(colon - s) : strlen(s);
    const char *slash = memchr(s, '/', head);
    if (!slash) return false;
    size_t n_org = (size_t)(slash - s), n_repo = head - n_org - 1;
    if (!name_ok(s, n_org) || !name_ok(slash + 1, n_repo)) return false;
    if (colon && !file_ok(colon + 1)) return false;
    memcpy(sp->org, s, n_org);
    sp->org[n_org] = 0;
    memcpy(sp->repo, slash + 1, n_repo);
    sp->repo[n_repo] = 0;
    snprintf(sp->file, sizeof sp->file, "%s", colon ? colon + 1 : "");
    return true;
}

static bool ends_with_ci(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcasecmp(s + n - m, suffix);
}

/* CACHE/models/ORG/REPO. */
static bool repo_dir(const spec *sp, char *buf, size_t size) {
    const char *own = getenv("HEED_CACHE"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n = own && own[0]               ? snprintf(buf, size, "%s/models/%s/%s", own, sp->org, sp->repo)
            : xdg && xdg[0] == '/'      ? snprintf(buf, size, "%s/heed/models/%s/%s", xdg, sp->org, sp->repo)
            : home && home[0]           ? snprintf(buf, size, "%s/.cache/heed/models/%s/%s", home, sp->org, sp->repo)
                                        : -1;
    return n > 0 && (size_t)n < size;
}

/* ---------------------------------------------------------- string lists */

typedef struct strs {
    char **v;
    int n, cap;
} strs;

static int strs_add(strs *l, const char *s) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 8;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        l->v = v, l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(s))) return -1;
    l->n++;
    return 0;
}

static void strs_free(strs *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    *l = (strs){0};
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* ---------------------------------------------------------- resolve */

/* The .gguf files under root/rel, a few folders deep, as paths under root. */
static void scan_gguf(const char *root, const char *rel, int depth, strs *out) {
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s%s%s", root, rel[0] ? "/" : "", rel) >= (int)sizeof dir) return;
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) && out->n < PULL_FILES_MAX;) {
        if (e->d_name[0] == '.') continue;
        char r[PATH_MAX], full[PATH_MAX];
        struct stat st;
        if (snprintf(r, sizeof r, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name) >= (int)sizeof r ||
            snprintf(full, sizeof full, "%s/%s", root, r) >= (int)sizeof full || stat(full, &st))
            continue;
        if (S_ISDIR(st.st_mode) && depth < 4) scan_gguf(root, r, depth + 1, out);
        else if (S_ISREG(st.st_mode) && ends_with_ci(e->d_name, ".gguf") && strs_add(out, r)) break;
    }
    closedir(d);
}

static int resolve_fail(char *err, size_t err_size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int resolve_fail(char *err, size_t err_size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && err_size) vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return -1;
}

int pull_resolve(const char *spec_s, char *path, size_t size, char *err, size_t err_size) {
    spec sp;
    struct stat st;
    if (!spec_s || !stat(spec_s, &st) || !spec_parse(spec_s, &sp)) return 0;
    /* a missing "dir/model.gguf" is a mistyped path, not a repository: the
     * loader's "no such file" says it better */
    if (!sp.file[0] && ends_with_ci(sp.repo, ".gguf")) return 0;
    char dir[PATH_MAX];
    if (!repo_dir(&sp, dir, sizeof dir))
        return resolve_fail(err, err_size, "%s: no cache folder (set HEED_CACHE, XDG_CACHE_HOME or HOME)", spec_s);
    if (sp.file[0]) {
        if (snprintf(path, size, "%s/%s", dir, sp.file) >= (int)size)
            return resolve_fail(err, err_size, "%s: the cached path is too long", spec_s);
        if (!stat(path, &st)) return 1;
    } else {
        strs g = {0};
        scan_gguf(dir, "", 0, &g);
        int rc = 0;
        if (g.n == 1) {
            rc = snprintf(path, size, "%s/%s", dir, g.v[0]) < (int)size
                     ? 1
                     : resolve_fail(err, err_size, "%s: the cached path is too long", spec_s);
        } else if (g.n > 1) {
            qsort(g.v, (size_t)g.n, sizeof *g.v, cmp_str);
            char list[512] = "";
            for (int i = 0, len = 0; i < g.n && len < (int)sizeof list; i++)
                len += snprintf(list + len, sizeof list - (size_t)len, "%s%s", i ? ", " : "", g.v[i]);
            rc = resolve_fail(err, err_size, "%s has %d downloaded GGUF files: pick one with -m %s:FILE (%s)", spec_s,
                              g.n, spec_s, list);
        }
        strs_free(&g);
        if (rc) return rc;
        char cfg[PATH_MAX];
        if (snprintf(cfg, sizeof cfg, "%s/config.json", dir) < (int)sizeof cfg && !stat(cfg, &st) &&
            snprintf(path, size, "%s", dir) < (int)size)
            return 1;
    }
    return resolve_fail(err, err_size, "%s is not downloaded: run heed pull %s (no file or folder %s exists here either)",
                        spec_s, spec_s, spec_s);
}

/* ---------------------------------------------------------- HTTP */

typedef struct pull_ctx {
    CURL *curl;
    char base[1024]; /* no trailing '/' */
    char host[256];  /* for messages */
    struct curl_slist *headers; /* the Authorization header, when HF_TOKEN is set */
    bool token, tty;
    char curl_err[CURL_ERROR_SIZE];
} pull_ctx;

/* What the answers of one request (its redirects included) said. */
typedef struct resp_hdrs {
    char linked_sha[65];   /* X-Linked-Etag as a sha256, any answer of the chain; "" when none */
    long long linked_size; /* X-Linked-Size, -1 */
    /* of the last answer: */
    char etag_sha[65];     /* ETag as a sha256 */
    long long range_start, range_total; /* Content-Range, -1 */
    char error_code[64];   /* X-Error-Code: RepoNotFound, EntryNotFound, GatedRepo, ... */
} resp_hdrs;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("heed: pull: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static const char *human(long long n, char *buf, size_t size) {
    if (n < 0) snprintf(buf, size, "?");
    else if (n < 1000) snprintf(buf, size, "%lld B", n);
    else if (n < 1000000) snprintf(buf, size, "%.1f kB", (double)n / 1e3);
    else if (n < 1000000000) snprintf(buf, size, "%.1f MB", (double)n / 1e6);
    else snprintf(buf, size, "%.2f GB", (double)n / 1e9);
    return buf;
}

/* An ETag value ("...", W/"...") as a sha256 in lower case, or "". */
static void etag_sha256(const char *v, char out[65]) {
    out[0] = 0;
    if (!strncmp(v, "W/", 2)) v += 2;
    if (*v == '"') v++;
    char h[65];
    for (int i = 0; i < 64; i++) {
        char c = v[i];
        if (c >= 'A' && c <= 'F') c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return;
        h[i] = c;
    }
    if (v[64] && v[64] != '"') return;
    h[64] = 0;
    memcpy(out, h, 65);
}

static long long parse_ll(const char *s) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    return errno || end == s || v < 0 ? -1 : v;
}

static size_t on_header(char *d, size_t sz, size_t nm, void *u) {
    resp_hdrs *h = u;
    size_t n = sz * nm;
    char line[512];
    if (n >= sizeof line) return n; /* no header read here is that long */
    memcpy(line, d, n);
    line[n] = 0;
    line[strcspn(line, "\r\n")] = 0;
    if (!strncmp(line, "HTTP/", 5)) { /* a new answer (after a redirect or a 100) */
        h->etag_sha[0] = 0;
        h->range_start = h->range_total = -1;
        h->error_code[0] = 0;
        return n;
    }
    char *colon = strchr(line, ':');
    if (!colon) return n;
    *colon = 0;
    const char *v = colon + 1 + strspn(colon + 1, " \t");
    if (!strcasecmp(line, "X-Linked-Etag")) etag_sha256(v, h->linked_sha);
    else if (!strcasecmp(line, "ETag")) etag_sha256(v, h->etag_sha);
    else if (!strcasecmp(line, "X-Linked-Size")) h->linked_size = parse_ll(v);
    else if (!strcasecmp(line, "X-Error-Code")) snprintf(h->error_code, sizeof h->error_code, "%s", v);
    else if (!strcasecmp(line, "Content-Range") && !strncasecmp(v, "bytes ", 6)) {
        v += 6;
        h->range_start = *v == '*' ? -1 : parse_ll(v);
        const char *slash = strchr(v, '/');
        h->range_total = slash && slash[1] != '*' ? parse_ll(slash + 1) : -1;
    }
    return n;
}

static void resp_hdrs_init(resp_hdrs *h) { *h = (resp_hdrs){.linked_size = -1, .range_start = -1, .range_total = -1}; }

/* The options every request shares; the handle is reset first (its
 * connections stay open for the next request). */
static void request_setup(pull_ctx *P, const char *url, resp_hdrs *h) {
    CURL *c = P->curl;
    curl_easy_reset(c);
    P->curl_err[0] = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "heed/" HEED_VERSION);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, P->headers);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, P->curl_err);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    /* a transfer slower than 1 kB/s for a minute has stalled: retried */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
}

static const char *curl_msg(const pull_ctx *P, CURLcode cc) { return P->curl_err[0] ? P->curl_err : curl_easy_strerror(cc); }

/* The host could not be talked to at all (as opposed to a transfer that broke). */
static bool unreachable(CURLcode cc) {
    return cc == CURLE_COULDNT_RESOLVE_HOST || cc == CURLE_COULDNT_RESOLVE_PROXY || cc == CURLE_COULDNT_CONNECT ||
           cc == CURLE_OPERATION_TIMEDOUT || cc == CURLE_SSL_CONNECT_ERROR;
}

static int fail_unreachable(const pull_ctx *P, CURLcode cc) {
    return fail("cannot reach %s: %s; " PULL_OFFLINE_HINT, P->host, curl_msg(P, cc));
}

/* An HTTP error answer about `what` (ORG/REPO or ORG/REPO:FILE). */
static int fail_http(const pull_ctx *P, long status, const resp_hdrs *h, const char *what) {
    const char *code = h->error_code;
    if (!strcmp(code, "GatedRepo"))
        return P->token ? fail("%s is gated and HF_TOKEN has no access to it: accept its conditions on its page "
                               "with the token's account (HTTP %ld)", what, status)
                        : fail("%s is gated: it needs a token: set HF_TOKEN (and accept its conditions on its page) "
                               "(HTTP %ld)", what, status);
    if (status == 404 || !strcmp(code, "RepoNotFound") || !strcmp(code, "EntryNotFound") ||
        !strcmp(code, "RevisionNotFound"))
        return fail("no such repository or file: %s on %s (HTTP %ld)%s", what, P->host, status,
                    P->token ? "" : "; a private repository needs a token: set HF_TOKEN");
    if (status == 401 || status == 403)
        return P->token ? fail("token refused: %s does not let HF_TOKEN read %s (HTTP %ld)", P->host, what, status)
                        : fail("%s needs a token: set HF_TOKEN (the repository is private or gated) (HTTP %ld)",
                               what, status);
    if (status == 429) return fail("%s: too many requests to %s (HTTP 429): wait and run heed pull again", what, P->host);
    return fail("%s: %s answered HTTP %ld", what, P->host, status);
}

/* ---------------------------------------------------------- listing */

typedef struct rfile {
    char *name;
    long long size; /* -1: not said */
    char sha[65];   /* the sha256 of an LFS file; "" */
} rfile;

typedef struct listing {
    rfile *v;
    int n, cap;
} listing;

static void listing_free(listing *L) {
    for (int i = 0; i < L->n; i++) free(L->v[i].name);
    free(L->v);
    *L = (listing){0};
}

static const rfile *listing_find(const listing *L, const char *name) {
    for (int i = 0; i < L->n; i++)
        if (!strcmp(L->v[i].name, name)) return &L->v[i];
    return NULL;
}

static long long json_size(json_t *v) { return json_is_integer(v) && json_integer_value(v) >= 0 ? json_integer_value(v) : -1; }

/* One entry of "siblings" or of the tree; names that are no safe path are skipped. */
static int listing_add(listing *L, const char *name, json_t *size, json_t *lfs, const char *sha_key) {
    if (!name || !file_ok(name) || L->n >= PULL_FILES_MAX) return 0;
    if (L->n == L->cap) {
        int cap = L->cap ? 2 * L->cap : 16;
        rfile *v = realloc(L->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        L->v = v, L->cap = cap;
    }
    rfile *f = &L->v[L->n];
    if (!(f->name = strdup(name))) return -1;
    f->size = json_size(size);
    if (f->size < 0) f->size = json_size(json_object_get(lfs, "size"));
    f->sha[0] = 0;
    const char *sha = json_string_value(json_object_get(lfs, sha_key));
    if (sha) etag_sha256(sha, f->sha);
    L->n++;
    return 0;
}

typedef struct membuf {
    char *p;
    size_t n;
} membuf;

static size_t on_mem(char *d, size_t sz, size_t nm, void *u) {
    membuf *m = u;
    size_t n = sz * nm;
    if (m->n + n > PULL_JSON_MAX) return 0;
    char *p = realloc(m->p, m->n + n + 1);
    if (!p) return 0;
    memcpy(p + m->n, d, n);
    m->p = p;
    m->n += n;
    p[m->n] = 0;
    return n;
}

/* GET url as JSON. 0 with *out (NULL when the answer is no JSON), or 1 after a message. */
static int api_get(pull_ctx *P, const char *url, const char *what, json_t **out) {
    resp_hdrs h;
    resp_hdrs_init(&h);
    membuf m = {0};
    request_setup(P, url, &h);
    curl_easy_setopt(P->curl, CURLOPT_WRITEFUNCTION, on_mem);
    curl_easy_setopt(P->curl, CURLOPT_WRITEDATA, &m);
    curl_easy_setopt(P->curl, CURLOPT_TIMEOUT, 120L);
    CURLcode cc = curl_easy_perform(P->curl);
    long status = 0;
    curl_easy_getinfo(P->curl, CURLINFO_RESPONSE_CODE, &status);
    int rc = 0;
    *out = NULL;
    if (cc == CURLE_WRITE_ERROR) rc = fail("%s: the file list from %s is over %u MB", what, P->host, PULL_JSON_MAX >> 20);
    else if (cc != CURLE_OK)
        rc = unreachable(cc) ? fail_unreachable(P, cc) : fail("%s: listing its files on %s: %s", what, P->host, curl_msg(P, cc));
    else if (status != 200) rc = fail_http(P, status, &h, what);
    else if (m.p) *out = json_loadb(m.p, m.n, 0, NULL);
    free(m.p);
    return rc;
}

/* The repository's files: the model info's siblings, else the tree of main. */
static int list_files(pull_ctx *P, const spec *sp, const char *what, listing *L) {
    char url[2048];
    snprintf(url, sizeof url, "%s/api/models/%s/%s?blobs=true", P->base, sp->org, sp->repo);
    json_t *j;
    if (api_get(P, url, what, &j)) return 1;
    json_t *sib = json_object_get(j, "siblings");
    int rc = 0;
    if (json_is_array(sib)) {
        for (size_t i = 0; !rc && i < json_array_size(sib); i++) {
            json_t *e = json_array_get(sib, i);
            rc = listing_add(L, json_string_value(json_object_get(e, "rfilename")), json_object_get(e, "size"),
                             json_object_get(e, "lfs"), "sha256");
        }
    } else {
        json_decref(j);
        snprintf(url, sizeof url, "%s/api/models/%s/%s/tree/main?recursive=true", P->base, sp->org, sp->repo);
        if (api_get(P, url, what, &j)) return 1;
        if (!json_is_array(j)) {
            json_decref(j);
            return fail("%s: %s gave no file list (neither /api/models/%s/%s nor its tree/main)", what, P->host,
                        sp->org, sp->repo);
        }
        for (size_t i = 0; !rc && i < json_array_size(j); i++) {
            json_t *e = json_array_get(j, i);
            const char *type = json_string_value(json_object_get(e, "type"));
            if (type && strcmp(type, "file")) continue;
            rc = listing_add(L, json_string_value(json_object_get(e, "path")), json_object_get(e, "size"),
                             json_object_get(e, "lfs"), "oid");
        }
    }
    json_decref(j);
    return rc ? fail("out of memory") : 0;
}

/* ---------------------------------------------------------- download */

/* Progress of one file over all its attempts. */
typedef struct progress {
    const char *name;
    double t0, t_shown;
    long long total;  /* -1 until known */
    long long first;  /* bytes already there when the run began */
    int quarter;      /* plain lines printed: 25%, 50%, 75% */
    bool shown;       /* a live bar is on the terminal's line */
} progress;

/* One attempt. */
typedef struct dl {
    pull_ctx *P;
    progress *pg;
    int fd;            /* FILE.part, O_APPEND */
    long long offset;  /* the .part's bytes when the attempt began (0 after a restart) */
    long long got;     /* bytes this attempt wrote */
    long long list_size;
    bool started, to_file, bad_range;
    int write_errno;
    resp_hdrs h;
} dl;

static void progress_show(pull_ctx *P, progress *pg, long long done, bool last) {
    double t = now_s(), el = t - pg->t0;
    char a[32], b[32], r[48] = "";
    if (el > 0.05) {
        char h[32];
        snprintf(r, sizeof r, ", %s/s", human((long long)((double)(done - pg->first) / el), h, sizeof h));
    }
    if (P->tty) {
        if (!last && t - pg->t_shown < 0.1) return;
        pg->t_shown = t;
        char bar[31];
        int pct = pg->total > 0 ? (int)(done * 100 / pg->total) : -1, fill = pct < 0 ? 0 : pct * 30 / 100;
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = 0;
        fprintf(stderr, "\r%-28.28s [%s] %3d%%  %s / %s%s\x1b[K", pg->name, bar, pct < 0 ? 0 : pct,
                human(done, a, sizeof a), human(pg->total, b, sizeof b), r);
        pg->shown = true;
        if (last) {
            fputc('\n', stderr);
            pg->shown = false;
        }
    } else if (last || (pg->total > 0 && (int)(done * 4 / pg->total) > pg->quarter && done < pg->total)) {
        if (!last) pg->quarter = (int)(done * 4 / pg->total);
        fprintf(stderr, "heed: pull: %s: %s%s of %s%s\n", pg->name, last ? "done, " : "", human(done, a, sizeof a),
                human(pg->total, b, sizeof b), r);
    }
}

/* The end of a live bar's line before another message. */
static void progress_break(progress *pg) {
    if (pg->shown) fputc('\n', stderr);
    pg->shown = false;
}

static size_t on_file_body(char *d, size_t sz, size_t nm, void *u) {
    dl *D = u;
    size_t n = sz * nm;
    if (!D->started) {
        D->started = true;
        long status = 0;
        curl_easy_getinfo(D->P->curl, CURLINFO_RESPONSE_CODE, &status);
        D->to_file = status == 200 || status == 206;
        if (status == 206 && D->h.range_start != D->offset) {
            D->bad_range = true;
            return 0;
        }
        if (status == 200 && D->offset > 0) { /* the server ignored the Range: start over */
            if (ftruncate(D->fd, 0)) {
                D->write_errno = errno;
                return 0;
            }
            D->offset = 0;
            D->pg->first = 0;
        }
    }
    if (!D->to_file) return n; /* an error page: the status says it all */
    for (const char *p = d; p < d + n;) {
        ssize_t w = write(D->fd, p, (size_t)(d + n - p));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            D->write_errno = w < 0 ? errno : EIO;
            return 0;
        }
        p += w;
    }
    D->got += (long long)n;
    return n;
}

static int on_xfer(void *u, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    dl *D = u;
    if (!D->to_file) return 0;
    progress *pg = D->pg;
    if (D->h.linked_size >= 0) pg->total = D->h.linked_size;
    else if (dltotal > 0) pg->total = D->offset + (long long)dltotal;
    else if (pg->total < 0) pg->total = D->list_size;
    progress_show(D->P, pg, D->offset + D->got, false);
    return 0;
}

static int hash_file(int fd, char hex[65]) {
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = malloc(CHUNK);
    if (!buf) return -1;
    pull_sha256 s;
    pull_sha256_init(&s);
    off_t at = 0;
    int rc = 0;
    for (;;) {
        ssize_t r = pread(fd, buf, CHUNK, at);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) rc = -1;
        if (r <= 0) break;
        pull_sha256_update(&s, buf, (size_t)r);
        at += r;
    }
    free(buf);
    uint8_t d[32];
    pull_sha256_final(&s, d);
    hex_of(d, hex);
    return rc;
}

static int make_parents(const char *path) {
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p) return -1;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        int bad = mkdir(p, 0755) && errno != EEXIST;
        *s = '/';
        if (bad) return -1;
    }
    return 0;
}

static void pause_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

/* The size the server gave for the whole file after an attempt, or -1. */
static long long told_size(const pull_ctx *P, const dl *D, long status) {
    if (D->h.linked_size >= 0) return D->h.linked_size;
    if (status == 206 && D->h.range_total >= 0) return D->h.range_total;
    curl_off_t cl = -1;
    if (status == 200 && !curl_easy_getinfo(P->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) && cl >= 0)
        return (long long)cl;
    return -1;
}

/* Downloads url into final through final.part; f: what the listing said of
 * it (size, sha256). 0, or 1 after a message. */
static int download(pull_ctx *P, const char *what, const char *url, const char *final, const rfile *f) {
    char part[PATH_MAX + 8], a[32];
    struct stat st;
    if (snprintf(part, sizeof part, "%s.part", final) >= (int)sizeof part) return fail("%s: path too long", final);
    if (!stat(final, &st) && S_ISREG(st.st_mode) && (f->size < 0 || st.st_size == f->size)) {
        fprintf(stderr, "heed: pull: %s: already downloaded\n", f->name);
        return 0;
    }
    if (make_parents(final)) return fail("cannot create the folders of %s: %s", final, strerror(errno));
    int fd = open(part, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644); /* read back for the sha256 */
    if (fd < 0) return fail("cannot write %s: %s", part, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        close(fd);
        return fail("%s: another heed pull is downloading it (%s is locked)", what, part);
    }
    progress pg = {.name = f->name, .t0 = now_s(), .total = f->size};
    if (!fstat(fd, &st)) pg.first = st.st_size;
    if (f->size > 0) pg.quarter = (int)(pg.first * 4 / f->size); /* the plain lines still to print */
    if (pg.first > 0)
        fprintf(stderr, "heed: pull: %s: resuming at %s\n", f->name, human(pg.first, a, sizeof a));
    else if (!P->tty)
        fprintf(stderr, "heed: pull: %s: downloading%s%s\n", f->name, f->size >= 0 ? " " : "",
                f->size >= 0 ? human(f->size, a, sizeof a) : "");
    char sha_linked[65] = "", sha_etag[65] = "";
    long long total = -1;
    int rc = 1, stalls = 0;
    bool finished = false;
    for (int attempt = 0; attempt < PULL_ATTEMPTS_MAX && !finished; attempt++) {
        dl D = {.P = P, .pg = &pg, .fd = fd, .list_size = f->size};
        resp_hdrs_init(&D.h);
        if (fstat(fd, &st)) {
            fail("%s: %s", part, strerror(errno));
            goto done;
        }
        D.offset = st.st_size;
        char range[32];
        request_setup(P, url, &D.h);
        curl_easy_setopt(P->curl, CURLOPT_WRITEFUNCTION, on_file_body);
        curl_easy_setopt(P->curl, CURLOPT_WRITEDATA, &D);
        curl_easy_setopt(P->curl, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(P->curl, CURLOPT_XFERINFOFUNCTION, on_xfer);
        curl_easy_setopt(P->curl, CURLOPT_XFERINFODATA, &D);
        if (D.offset > 0) {
            snprintf(range, sizeof range, "%lld-", D.offset); /* Range: bytes=N- */
            curl_easy_setopt(P->curl, CURLOPT_RANGE, range);
        }
        CURLcode cc = curl_easy_perform(P->curl);
        long status = 0;
        curl_easy_getinfo(P->curl, CURLINFO_RESPONSE_CODE, &status);
        if (D.h.linked_sha[0]) memcpy(sha_linked, D.h.linked_sha, 65);
        if (D.h.etag_sha[0]) memcpy(sha_etag, D.h.etag_sha, 65);
        long long told = told_size(P, &D, status);
        if (told >= 0) total = told;
        if (D.write_errno) {
            progress_break(&pg);
            int e = D.write_errno;
            fail("writing %s: %s%s", part, strerror(e),
                 e == ENOSPC || e == EDQUOT || e == EFBIG ? "; free some space, then run heed pull again to resume" : "");
            goto done;
        }
        bool retry = false;
        if (D.bad_range) {
            progress_break(&pg);
            fprintf(stderr, "heed: pull: %s: the server answered another range than asked: starting over\n", f->name);
            if (ftruncate(fd, 0)) {
                fail("%s: %s", part, strerror(errno));
                goto done;
            }
            pg.first = 0;
            retry = true;
        } else if (cc == CURLE_OK && (status == 200 || status == 206)) {
            if (status == 200 && !D.started && D.offset > 0 && ftruncate(fd, 0)) { /* an empty 200 to a Range */
                fail("%s: %s", part, strerror(errno));
                goto done;
            }
            finished = true;
        } else if (cc == CURLE_OK && status == 416 && D.offset > 0) {
            /* nothing past the .part's end: it is whole, or it is longer
             * than the file now is and is started over */
            long long t = D.h.range_total >= 0 ? D.h.range_total : total >= 0 ? total : f->size;
            if (t == D.offset) {
                total = t;
                finished = true;
            } else if (ftruncate(fd, 0)) {
                fail("%s: %s", part, strerror(errno));
                goto done;
            } else {
                pg.first = 0;
                retry = true;
            }
        } else if (cc == CURLE_OK) {
            progress_break(&pg);
            if (status != 429 && status < 500) {
                fail_http(P, status, &D.h, what);
                goto done;
            }
            retry = true;
        } else if (cc == CURLE_COULDNT_RESOLVE_HOST || cc == CURLE_COULDNT_RESOLVE_PROXY) {
            progress_break(&pg);
            fail_unreachable(P, cc);
            goto done;
        } else if (cc == CURLE_TOO_MANY_REDIRECTS || cc == CURLE_UNSUPPORTED_PROTOCOL || cc == CURLE_URL_MALFORMAT ||
                   cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_OUT_OF_MEMORY) {
            progress_break(&pg);
            fail("%s: %s", what, curl_msg(P, cc));
            goto done;
        } else {
            retry = true; /* the connection broke, stalled or was refused: resume */
        }
        if (finished || !retry) continue;
        stalls = D.got > 0 ? 0 : stalls + 1;
        progress_break(&pg);
        if (stalls >= PULL_TRIES || attempt + 1 == PULL_ATTEMPTS_MAX) {
            if (cc != CURLE_OK && unreachable(cc) && pg.first == 0 && !fstat(fd, &st) && st.st_size == 0)
                fail_unreachable(P, cc);
            else
                fail("%s: the download broke off (%s) %d times in a row; run heed pull again to resume from %s", what,
                     cc != CURLE_OK ? curl_msg(P, cc) : "HTTP error", stalls,
                     human(fstat(fd, &st) ? 0 : (long long)st.st_size, a, sizeof a));
            goto done;
        }
        char why[CURL_ERROR_SIZE + 32];
        if (cc != CURLE_OK) snprintf(why, sizeof why, "%s", curl_msg(P, cc));
        else snprintf(why, sizeof why, "HTTP %ld", status);
        fprintf(stderr, "heed: pull: %s: transfer interrupted (%s); resuming (%d)\n", f->name, why, attempt + 1);
        double wait = 0.25 * (1 << (stalls < 5 ? stalls : 5));
        pause_s(wait < 8 ? wait : 8);
    }
    if (!finished) {
        fail("%s: the download did not finish in %d attempts; run heed pull again to resume", what, PULL_ATTEMPTS_MAX);
        goto done;
    }
    if (fstat(fd, &st)) {
        fail("%s: %s", part, strerror(errno));
        goto done;
    }
    if (total < 0) total = f->size;
    pg.total = total >= 0 ? total : st.st_size;
    progress_show(P, &pg, st.st_size, true);
    if (total >= 0 && st.st_size != total) {
        unlink(part);
        fail("%s: the server gave its size as %lld bytes, but %lld arrived; the download was deleted: run heed pull "
             "again", what, total, (long long)st.st_size);
        goto done;
    }
    /* the sha256 the server sent with the file, else the listing's, else an ETag that is one */
    const char *want = sha_linked[0] ? sha_linked : f->sha[0] ? f->sha : sha_etag;
    if (want[0]) {
        char got[65];
        if (hash_file(fd, got)) {
            fail("reading %s: %s", part, strerror(errno));
            goto done;
        }
        if (strcmp(got, want)) {
            unlink(part);
            fail("%s: sha256 mismatch: the server gave %s, the downloaded file has %s; the download was deleted: run "
                 "heed pull again", what, want, got);
            goto done;
        }
        fprintf(stderr, "heed: pull: %s: sha256 %s verified\n", f->name, got);
    }
    if (fsync(fd) && errno != EINVAL) {
        fail("writing %s: %s", part, strerror(errno));
        goto done;
    }
    if (rename(part, final)) {
        fail("cannot move %s into place: %s", part, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    progress_break(&pg);
    if (rc && !fstat(fd, &st) && st.st_size == 0) unlink(part); /* nothing worth resuming */
    close(fd);
    return rc;
}

/* ---------------------------------------------------------- pull */

/* Percent-encodes a repository path for a URL, keeping its '/'. */
static bool url_path(const char *s, char *out, size_t size) {
    static const char hexd[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool keep = name_char((char)c) || c == '/' || c == '~';
        if (n + 4 > size) return false;
        if (keep) out[n++] = (char)c;
        else out[n++] = '%', out[n++] = hexd[c >> 4], out[n++] = hexd[c & 15];
    }
    out[n] = 0;
    return true;
}

static int fetch(pull_ctx *P, const spec *sp, const char *dir, const rfile *f) {
    char esc[3 * PULL_FILE_MAX + 1], url[4096], final[PATH_MAX], what[PULL_FILE_MAX + 2 * PULL_NAME_MAX + 4];
    snprintf(what, sizeof what, "%s/%s:%s", sp->org, sp->repo, f->name);
    if (!url_path(f->name, esc, sizeof esc) ||
        snprintf(url, sizeof url, "%s/%s/%s/resolve/main/%s", P->base, sp->org, sp->repo, esc) >= (int)sizeof url ||
        snprintf(final, sizeof final, "%s/%s", dir, f->name) >= (int)sizeof final)
        return fail("%s: the name is too long", what);
    return download(P, what, url, final, f);
}

/* The shards an index's weight_map names, sorted and distinct. */
static int index_shards(const char *path, strs *out) {
    struct stat st;
    if (stat(path, &st) || st.st_size > (off_t)PULL_JSON_MAX) return fail("%s: missing or over %u MB", path, PULL_JSON_MAX >> 20);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    json_t *map = json_object_get(j, "weight_map");
    if (!json_is_object(map)) {
        json_decref(j);
        return fail("%s: no weight_map object (%s)", path, j ? "" : je.text);
    }
    const char *key;
    json_t *v;
    int rc = 0;
    json_object_foreach(map, key, v) {
        const char *s = json_string_value(v);
        if (!s || !file_ok(s)) {
            rc = fail("%s: weight_map['%s'] is no file name", path, key);
            break;
        }
        bool seen = false;
        for (int i = 0; i < out->n && !seen; i++) seen = !strcmp(out->v[i], s);
        if (!seen && strs_add(out, s)) {
            rc = fail("out of memory");
            break;
        }
    }
    json_decref(j);
    if (!rc && out->n) qsort(out->v, (size_t)out->n, sizeof *out->v, cmp_str);
    return rc;
}

/* The checkpoint folder src/hf.c loads: weights, tokenizer files, config.json last. */
static int pull_folder(pull_ctx *P, const spec *sp, const char *dir, const listing *L) {
    const rfile *cfg = listing_find(L, "config.json"), *single = listing_find(L, "model.safetensors"),
                *index = listing_find(L, "model.safetensors.index.json");
    if (!cfg || (!single && !index)) {
        fail("%s/%s has no GGUF file and no checkpoint heed can load (config.json with model.safetensors or "
             "model.safetensors.index.json); its files:", sp->org, sp->repo);
        for (int i = 0; i < L->n && i < 40; i++) fprintf(stderr, "  %s\n", L->v[i].name);
        if (L->n > 40) fprintf(stderr, "  ... and %d more\n", L->n - 40);
        return 1;
    }
    if (single) {
        if (fetch(P, sp, dir, single)) return 1;
    } else {
        if (fetch(P, sp, dir, index)) return 1;
        char ipath[PATH_MAX];
        strs shards = {0};
        if (snprintf(ipath, sizeof ipath, "%s/%s", dir, index->name) >= (int)sizeof ipath ||
            index_shards(ipath, &shards)) {
            strs_free(&shards);
            return 1;
        }
        int rc = 0;
        for (int i = 0; !rc && i < shards.n; i++) {
            const rfile *s = listing_find(L, shards.v[i]);
            rfile unlisted = {.name = shards.v[i], .size = -1};
            rc = fetch(P, sp, dir, s ? s : &unlisted);
        }
        strs_free(&shards);
        if (rc) return 1;
    }
    static const char *const extra[] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json"};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        const rfile *e = listing_find(L, extra[i]);
        if (e && fetch(P, sp, dir, e)) return 1;
    }
    return fetch(P, sp, dir, cfg); /* last: a folder with its config.json is complete */
}

static int pull_repo(pull_ctx *P, const spec *sp, const char *dir) {
    char what[2 * PULL_NAME_MAX + 2], full[PATH_MAX], a[32];
    snprintf(what, sizeof what, "%s/%s", sp->org, sp->repo);
    listing L = {0};
    int rc = list_files(P, sp, what, &L);
    if (rc) goto done;
    strs g = {0};
    for (int i = 0; i < L.n; i++)
        if (ends_with_ci(L.v[i].name, ".gguf") && strs_add(&g, L.v[i].name)) {
            strs_free(&g);
            rc = fail("out of memory");
            goto done;
        }
    if (g.n) qsort(g.v, (size_t)g.n, sizeof *g.v, cmp_str);
    const rfile *one = sp->file[0] ? listing_find(&L, sp->file) : g.n == 1 ? listing_find(&L, g.v[0]) : NULL;
    if (sp->file[0] && !one) {
        rc = fail("no such repository or file: %s has no file '%s'%s", what, sp->file, g.n ? "; its GGUF files:" : "");
        for (int i = 0; i < g.n && i < 40; i++) fprintf(stderr, "  %s\n", g.v[i]);
    } else if (!one && g.n > 1) {
        fail("%s has %d GGUF files: pick one with heed pull %s:FILE", what, g.n, what);
        for (int i = 0; i < g.n; i++) {
            const rfile *f = listing_find(&L, g.v[i]);
            fprintf(stderr, "  %s:%s  (%s)\n", what, g.v[i], human(f->size, a, sizeof a));
        }
        rc = 2;
    } else if (one) {
        rc = fetch(P, sp, dir, one);
        if (!rc && snprintf(full, sizeof full, "%s/%s", dir, one->name) < (int)sizeof full) {
            fprintf(stderr, "heed: pull: ready: -m %s%s%s\n", what, sp->file[0] ? ":" : "", sp->file);
            printf("%s\n", full);
        }
    } else {
        rc = pull_folder(P, sp, dir, &L);
        if (!rc) {
            fprintf(stderr, "heed: pull: ready: -m %s\n", what);
            printf("%s\n", dir);
        }
    }
    strs_free(&g);
done:
    listing_free(&L);
    return rc;
}

int pull_main(int argc, char **argv) {
    const char *spec_s = NULL, *base = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(pull_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--base-url")) {
            if (i + 1 == argc) return fail("--base-url needs a value") + 1;
            base = argv[++i];
        } else if (a[0] == '-') {
            fprintf(stderr, "heed: pull: unknown option '%s'\n%s", a, pull_usage);
            return 2;
        } else if (spec_s) {
            return fail("one repository at a time ('%s' and '%s')", spec_s, a) + 1;
        } else {
            spec_s = a;
        }
    }
    spec sp;
    if (!spec_s) return fail("expected ORG/REPO or ORG/REPO:FILE (heed pull --help)") + 1;
    if (!spec_parse(spec_s, &sp))
        return fail("'%s': expected ORG/REPO or ORG/REPO:FILE (a repository such as "
                    "HuggingFaceTB/SmolLM2-135M-Instruct, a file inside it after ':')", spec_s) + 1;
    if (!base) base = getenv("HF_ENDPOINT");
    if (!base || !base[0]) base = PULL_DEFAULT_BASE;
    pull_ctx P = {.tty = isatty(STDERR_FILENO) == 1};
    size_t n_base = strlen(base);
    while (n_base && base[n_base - 1] == '/') n_base--;
    if ((strncasecmp(base, "http://", 7) && strncasecmp(base, "https://", 8)) || n_base >= sizeof P.base)
        return fail("'%s' is no http:// or https:// URL (--base-url, HF_ENDPOINT)", base) + 1;
    memcpy(P.base, base, n_base);
    P.base[n_base] = 0;
    char dir[PATH_MAX];
    if (!repo_dir(&sp, dir, sizeof dir)) return fail("no cache folder: set HEED_CACHE, XDG_CACHE_HOME or HOME");

    const char *token = getenv("HF_TOKEN");
    char auth[4200];
    if (token && token[0]) {
        for (const char *t = token; *t; t++)
            if ((unsigned char)*t < 0x21 || *t == 0x7f) return fail("HF_TOKEN holds a space or control character");
        if (snprintf(auth, sizeof auth, "Authorization: Bearer %s", token) >= (int)sizeof auth)
            return fail("HF_TOKEN is too long");
        P.token = true;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) return fail("libcurl failed to initialize");
    int rc = 1;
    CURLU *u = curl_url();
    char *host = NULL;
    if (u && !curl_url_set(u, CURLUPART_URL, P.base, 0) && !curl_url_get(u, CURLUPART_HOST, &host, 0))
        snprintf(P.host, sizeof P.host, "%s", host);
    else
        snprintf(P.host, sizeof P.host, "%.255s", P.base);
    curl_free(host);
    curl_url_cleanup(u);
    P.curl = curl_easy_init();
    if (P.token) P.headers = curl_slist_append(NULL, auth);
    memset(auth, 0, sizeof auth);
    if (!P.curl || (P.token && !P.headers)) fail("libcurl failed to initialize");
    else rc = pull_repo(&P, &sp, dir);
    curl_slist_free_all(P.headers);
    if (P.curl) curl_easy_cleanup(P.curl);
    curl_global_cleanup();
    return rc;
}
