/*
 * assets.c - lookup of embedded web assets, content types, and the path rule
 * that keeps static requests inside the asset root (see assets.h).
 */
#include "assets.h"

#include <string.h>

const asset *assets_find(const char *path) {
    if (!path || !strcmp(path, "/")) path = "/index.html";
    for (int i = 0; i < heed_n_assets; i++)
        if (!strcmp(heed_assets[i].path, path)) return &heed_assets[i];
    return NULL;
}

const char *assets_mime(const char *path) {
    static const struct { const char *ext, *mime; } types[] = {
        {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
        {".json", "application/json"}, {".svg", "image/svg+xml"}, {".png", "image/png"},
        {".ico", "image/x-icon"}, {".woff2", "font/woff2"}, {".wasm", "application/wasm"},
        {".txt", "text/plain; charset=utf-8"}, {".map", "application/json"},
    };
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash))
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (!strcmp(dot, types[i].ext)) return types[i].mime;
    return "application/octet-stream";
}

bool assets_path_ok(const char *path) {
    if (!path || path[0] != '/') return false;
    if (!strcmp(path, "/")) return true;
    for (const char *seg = path + 1;;) {
        size_t n = strcspn(seg, "/");
        if (n == 0 || seg[0] == '.') return false; /* "", ".", "..", dotfiles */
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)seg[i] < 0x20 || seg[i] == 0x7f || seg[i] == '\\') return false;
        if (!seg[n]) return true;
        seg += n + 1;
    }
}
