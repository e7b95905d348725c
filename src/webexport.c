/* webexport.c - one self-contained HTML viewer of a run (webexport.h). */
#include "webexport.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "assets.h"

/* Writes data, with every "</script" (any case) as "<\/script" so inlined
 * code or data cannot end its element early. */
static void put_script_safe(FILE *f, const char *d, size_t n) {
    size_t from = 0;
    for (size_t i = 0; i + 8 <= n; i++) {
        if (d[i] == '<' && d[i + 1] == '/' && !strncasecmp(d + i + 2, "script", 6)) {
            fwrite(d + from, 1, i + 1 - from, f);
            fputs("\\", f);
            from = i + 1;
        }
    }
    fwrite(d + from, 1, n - from, f);
}

/* The asset a tag attribute names (src="./assets/x.js"), or NULL. */
static const asset *attr_asset(const char *tag, size_t tag_len, const char *attr) {
    char key[16];
    snprintf(key, sizeof key, " %s=\"", attr);
    const char *a = NULL;
    for (const char *p = tag; p + strlen(key) <= tag + tag_len; p++)
        if (!strncmp(p, key, strlen(key))) {
            a = p + strlen(key);
            break;
        }
    if (!a) return NULL;
    const char *end = memchr(a, '"', (size_t)(tag + tag_len - a));
    if (!end) return NULL;
    char path[512];
    if (a[0] == '.' && a[1] == '/') a++;
    if ((size_t)(end - a) >= sizeof path || a[0] != '/') return NULL;
    snprintf(path, sizeof path, "%.*s", (int)(end - a), a);
    return assets_find(path);
}

static bool has(const char *tag, size_t n, const char *s) {
    size_t k = strlen(s);
    for (size_t i = 0; i + k <= n; i++)
        if (!strncmp(tag + i, s, k)) return true;
    return false;
}

int webexport_html(heed_run *run, heed_model *model, const char *path, size_t budget, char *err, size_t err_size) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        snprintf(err, err_size, "%s: cannot write", path);
        return -1;
    }
    int rc = webexport_html_stream(run, model, f, budget, err, err_size);
    if (fclose(f) && !rc) {
        snprintf(err, err_size, "%s: write failed", path);
        rc = -1;
    }
    return rc;
}

int heed_run_export_html(heed_run *run, heed_model *model, const char *path, char *err, size_t err_size) {
    char tmp[512];
    if (!err) err = tmp, err_size = sizeof tmp;
    if (!run || !path) {
        snprintf(err, err_size, "no run or no path");
        return HEED_ERR_INVALID_ARG;
    }
    if (!assets_find("/index.html") || !assets_find("/export-shim.js")) {
        snprintf(err, err_size, "this heed was built without the web UI (npm was not available), so it cannot "
                                "write an HTML viewer: run `make web` and rebuild");
        return HEED_ERR_UNSUPPORTED;
    }
    return webexport_html(run, model, path, WEBEXPORT_BUDGET, err, err_size) ? HEED_ERR_IO : HEED_OK;
}

int webexport_html_stream(heed_run *run, heed_model *model, FILE *f, size_t budget, char *err, size_t err_size) {
    const asset *index = assets_find("/index.html"), *shim = assets_find("/export-shim.js");
    if (!index || !shim) {
        snprintf(err, err_size, "this heed was built without the web UI (npm was not available), so it cannot write "
                                "an HTML viewer: run `make web` and rebuild");
        return -1;
    }
    char *data = api_snapshot(run, model, budget, err, err_size);
    if (!data) return -1;
    const char *h = (const char *)index->data, *end = h + index->size;
    bool data_done = false;
    while (h < end) {
        const char *lt = memchr(h, '<', (size_t)(end - h));
        if (!lt) lt = end;
        fwrite(h, 1, (size_t)(lt - h), f);
        if (lt == end) break;
        const char *gt = memchr(lt, '>', (size_t)(end - lt));
        size_t tn = gt ? (size_t)(gt - lt + 1) : (size_t)(end - lt);
        bool script = !strncmp(lt, "<script", 7), style = !strncmp(lt, "<link", 5) && has(lt, tn, "stylesheet");
        if ((script || style) && !data_done) {
            /* the data and the shim come before the app's first script or style */
            fputs("<script id=\"heed-data\" type=\"application/json\">", f);
            fputs(data, f); /* escaped slashes: no "</" inside */
            fputs("</script>\n    <script>", f);
            put_script_safe(f, (const char *)shim->data, shim->size);
            fputs("</script>\n    ", f);
            data_done = true;
        }
        const asset *src = script ? attr_asset(lt, tn, "src") : style ? attr_asset(lt, tn, "href") : NULL;
        if (src && script) {
            const char *close = strstr(lt + tn, "</script>"); /* index.html is ours: NUL-terminated by embedding */
            fputs(has(lt, tn, "type=\"module\"") ? "<script type=\"module\">" : "<script>", f);
            put_script_safe(f, (const char *)src->data, src->size);
            fputs("</script>", f);
            h = close ? close + 9 : lt + tn;
        } else if (src) {
            fputs("<style>", f);
            fwrite(src->data, 1, src->size, f);
            fputs("</style>", f);
            h = lt + tn;
        } else {
            fwrite(lt, 1, tn, f);
            h = lt + tn;
        }
    }
    free(data);
    if (ferror(f)) {
        snprintf(err, err_size, "write failed");
        return -1;
    }
    return 0;
}
