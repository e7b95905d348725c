/*
 * test_install.c - make install and make uninstall, as a user of the
 * library would meet them.
 *
 * Installs the build directory this test was built in (build/, build-asan/,
 * found from /proc/self/exe) into temporary folders, once with PREFIX=<tmp>
 * and once with DESTDIR=<tmp> PREFIX=/usr, and checks that exactly the
 * eight files land: bin/heed, include/heed.h, lib/libheed.a,
 * lib/libheed.so.VERSION with its soname's link and libheed.so,
 * lib/pkgconfig/heed.pc and share/man/man1/heed.1. Through heed.pc it
 * builds a small program that loads the bundled model and prints its layer
 * count, linked once with libheed.so and once with libheed.a
 * (pkg-config --static), and runs both. make uninstall must then leave
 * nothing but empty folders. docs/heed.1 must name every long option of
 * the usage texts, and render without a warning where groff is installed.
 *
 * It never rebuilds the project: its installs name the built files with
 * make -o, so that a source a colleague edits while the suite runs is not
 * rebuilt under it; that install depends on the built files and, after
 * make, only copies is checked with make -n. Needs no root, no network and
 * no ../shared; the ASan build links the programs with the sanitizers, as
 * its objects need them, and says so.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "heed.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define SAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SAN_BUILD 1
#endif
#endif
#ifndef SAN_BUILD
#define SAN_BUILD 0
#endif

static char root[PATH_MAX];     /* the repository: where the Makefile is */
static char build[PATH_MAX];    /* BUILD= for make: relative to root where it lies inside */
static char tmp[PATH_MAX];      /* mkdtemp: every prefix, program and log lies in it */
static char log_path[PATH_MAX + 16];
static char make_vars[3 * PATH_MAX + 256]; /* -C ROOT BUILD=... [SAN=1] -o ...: never rebuilds */
static char san[8];             /* " SAN=1" for the ASan build */
static int n_layer_bundled;     /* the oracle for the programs' output */
static const char *san_flags = SAN_BUILD ? "-fsanitize=address,undefined" : "";

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = 2 * cap + 8192;
            char *nb = realloc(b, cap);
            assert_non_null(nb);
            b = nb;
        }
        size_t got = fread(b + n, 1, 4096, f);
        n += got;
        if (got < 4096) break;
    }
    fclose(f);
    b[n] = 0;
    return b;
}

/* Runs a shell command with its output in log_path and returns its exit
 * status; prints the command, and with show the log when it failed. */
static int vsh(bool show, const char *fmt, va_list ap) {
    char cmd[16384];
    int n = vsnprintf(cmd, sizeof cmd - PATH_MAX - 32, fmt, ap);
    assert_true(n > 0 && (size_t)n < sizeof cmd - PATH_MAX - 32);
    snprintf(cmd + n, sizeof cmd - (size_t)n, " >%s 2>&1 </dev/null", log_path);
    printf("$ %.*s\n", n, cmd);
    int st = system(cmd);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    if (rc && show) {
        char *log = slurp(log_path);
        printf("(exit %d)\n%s\n", rc, log ? log : "");
        free(log);
    }
    return rc;
}

__attribute__((format(printf, 1, 2))) static int shf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = vsh(true, fmt, ap);
    va_end(ap);
    return rc;
}

/* shf for a command whose failure is an answer: its log is not printed. */
__attribute__((format(printf, 1, 2))) static int shq(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = vsh(false, fmt, ap);
    va_end(ap);
    return rc;
}

/* shf that must succeed. */
#define SH(...) assert_int_equal(shf(__VA_ARGS__), 0)

static bool log_has(const char *needle) {
    char *log = slurp(log_path);
    assert_non_null(log);
    bool has = strstr(log, needle) != NULL;
    free(log);
    return has;
}

static void assert_same_file(const char *a, const char *b) {
    char *x = slurp(a), *y = slurp(b);
    if (!x || !y || strcmp(x, y)) fail_msg("%s differs from %s", a, b);
    free(x);
    free(y);
}

/* ------------------------------------------------------------ tree walk */

/* Files and links below dir, counted (folders not; links not followed);
 * the first one met goes into first (size PATH_MAX) if it is not NULL. */
static int count_files_in(const char *dir, char *first) {
    DIR *d = opendir(dir);
    if (!d) fail_msg("%s: %s", dir, strerror(errno));
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[PATH_MAX];
        assert_true(snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p);
        struct stat st;
        assert_int_equal(lstat(p, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            n += count_files_in(p, n ? NULL : first);
        } else {
            if (!n && first) snprintf(first, PATH_MAX, "%s", p);
            n++;
        }
    }
    closedir(d);
    return n;
}

static int count_files(const char *dir) { return count_files_in(dir, NULL); }

/* -------------------------------------------------------------- checks */

static void path_in(char *out, size_t size, const char *dir, const char *rel) {
    int n = snprintf(out, size, "%s/%s", dir, rel);
    assert_true(n > 0 && (size_t)n < size);
}

static void assert_regular(const char *dir, const char *rel, mode_t mode) {
    char p[PATH_MAX];
    path_in(p, sizeof p, dir, rel);
    struct stat st;
    if (lstat(p, &st)) fail_msg("%s was not installed (%s)", p, strerror(errno));
    if (!S_ISREG(st.st_mode)) fail_msg("%s is not a regular file", p);
    if ((st.st_mode & 0777) != mode) fail_msg("%s has mode %o, not %o", p, (unsigned)(st.st_mode & 0777), (unsigned)mode);
}

static void assert_link(const char *dir, const char *rel, const char *target) {
    char p[PATH_MAX], t[PATH_MAX];
    path_in(p, sizeof p, dir, rel);
    ssize_t n = readlink(p, t, sizeof t - 1);
    if (n < 0) fail_msg("%s is not a symbolic link (%s)", p, strerror(errno));
    t[n] = 0;
    if (strcmp(t, target)) fail_msg("%s points to '%s', not '%s'", p, t, target);
}

/* The eight files of an installation under dir (PREFIX, or DESTDIR/PREFIX),
 * whose heed.pc names `prefix`. */
static void check_installed(const char *dir, const char *prefix) {
    char p[PATH_MAX], q[PATH_MAX];
    assert_regular(dir, "bin/heed", 0755);
    assert_regular(dir, "include/heed.h", 0644);
    assert_regular(dir, "lib/libheed.a", 0644);
    assert_regular(dir, "lib/libheed.so." HEED_VERSION, 0755);
    assert_regular(dir, "lib/pkgconfig/heed.pc", 0644);
    assert_regular(dir, "share/man/man1/heed.1", 0644);
    assert_link(dir, "lib/libheed.so", "libheed.so." HEED_VERSION);

    /* the soname (libheed.so.SOVERSION) is a link to the library, and not
     * the library's own name */
    path_in(p, sizeof p, dir, "lib/libheed.so." HEED_VERSION);
    SH("readelf -d %s", p);
    char *log = slurp(log_path);
    assert_non_null(log);
    const char *s = strstr(log, "Library soname: [");
    if (!s) fail_msg("%s has no soname:\n%s", p, log);
    char soname[128];
    assert_int_equal(sscanf(s, "Library soname: [%127[^]]", soname), 1);
    free(log);
    printf("soname %s\n", soname);
    assert_int_equal(strncmp(soname, "libheed.so.", 11), 0);
    assert_string_not_equal(soname, "libheed.so." HEED_VERSION);
    snprintf(q, sizeof q, "lib/%s", soname);
    assert_link(dir, q, "libheed.so." HEED_VERSION);

    /* the header and the man page are the repository's */
    path_in(p, sizeof p, dir, "include/heed.h");
    path_in(q, sizeof q, root, "include/heed.h");
    assert_same_file(p, q);
    path_in(p, sizeof p, dir, "share/man/man1/heed.1");
    path_in(q, sizeof q, root, "docs/heed.1");
    assert_same_file(p, q);

    /* heed.pc: the prefix and version filled in, nothing left unfilled */
    path_in(p, sizeof p, dir, "lib/pkgconfig/heed.pc");
    char *pc = slurp(p);
    assert_non_null(pc);
    snprintf(q, sizeof q, "\nprefix=%s\n", prefix);
    if (!strstr(pc, q)) fail_msg("%s lacks 'prefix=%s':\n%s", p, prefix, pc);
    if (!strstr(pc, "\nVersion: " HEED_VERSION "\n")) fail_msg("%s lacks 'Version: " HEED_VERSION "'", p);
    if (strchr(pc, '@')) fail_msg("%s has an unfilled @...@:\n%s", p, pc);
    free(pc);

    /* the binary runs */
    path_in(p, sizeof p, dir, "bin/heed");
    SH("%s --version", p);
    assert_true(log_has("heed " HEED_VERSION "\n"));

    /* and nothing else was installed */
    int n = count_files(dir);
    if (n != 8) fail_msg("%s holds %d files and links, not the 8 installed", dir, n);
}

/* After make uninstall: nothing but (empty) folders below dir. */
static void check_uninstalled(const char *dir) {
    char first[PATH_MAX] = "";
    int n = count_files_in(dir, first);
    if (n) fail_msg("make uninstall left %d files under %s (the first: %s)", n, dir, first);
}

/* make ... VARS TARGET in the repository, for this build directory. */
__attribute__((format(printf, 1, 2))) static void make(const char *fmt, ...) {
    char args[4 * PATH_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof args);
    SH("make --no-print-directory %s %s", make_vars, args);
}

/* ------------------------------------------------------------- programs */

static const char app_c[] =
    "#include <heed.h>\n"
    "#include <stdio.h>\n"
    "int main(void) {\n"
    "    heed_model *m = NULL;\n"
    "    char err[256];\n"
    "    if (heed_model_load(NULL, NULL, &m, err, sizeof err)) { fprintf(stderr, \"%s\\n\", err); return 1; }\n"
    "    heed_model_info info;\n"
    "    heed_model_get_info(m, &info);\n"
    "    printf(\"heed %s n_layer %d\\n\", HEED_VERSION, info.n_layer);\n"
    "    heed_model_free(m);\n"
    "    return 0;\n"
    "}\n";

static void check_app_output(void) {
    char want[64];
    snprintf(want, sizeof want, "heed " HEED_VERSION " n_layer %d\n", n_layer_bundled);
    char *out = slurp(log_path);
    assert_non_null(out);
    if (strcmp(out, want)) fail_msg("the program printed '%s', not '%s'", out, want);
    free(out);
}

/* Builds app.c against the installation under prefix through its heed.pc:
 * with libheed.so (run with LD_LIBRARY_PATH) and with libheed.a (pkg-config
 * --static; runs without it). */
static void build_programs(const char *prefix) {
    char w[PATH_MAX], app[PATH_MAX], pcp[PATH_MAX];
    path_in(w, sizeof w, tmp, "work");
    path_in(app, sizeof app, w, "app.c");
    path_in(pcp, sizeof pcp, prefix, "lib/pkgconfig");
    assert_int_equal(mkdir(w, 0755), 0);
    FILE *f = fopen(app, "w");
    assert_non_null(f);
    fputs(app_c, f);
    assert_int_equal(fclose(f), 0);
    if (SAN_BUILD)
        printf("NOTE: the ASan+UBSan build: its library's objects are instrumented, so the programs are "
               "linked with %s as well\n", san_flags);

    SH("PKG_CONFIG_PATH=%s pkg-config --modversion heed", pcp);
    assert_true(log_has(HEED_VERSION "\n"));

    /* libheed.so: the program needs the soname, found with LD_LIBRARY_PATH */
    SH("cd %s && PKG_CONFIG_PATH=%s sh -c '${CC:-cc} %s app.c -o app_shared $(pkg-config --cflags --libs heed)'", w,
       pcp, san_flags);
    SH("readelf -d %s/app_shared", w);
    assert_true(log_has("Shared library: [libheed.so."));
    SH("LD_LIBRARY_PATH=%s/lib %s/app_shared", prefix, w);
    check_app_output();

    /* libheed.a: -lheed would take the .so beside it, so -l:libheed.a */
    SH("cd %s && PKG_CONFIG_PATH=%s sh -c '${CC:-cc} %s app.c -o app_static $(pkg-config --cflags heed) "
       "$(pkg-config --static --libs heed | sed \"s/-lheed\\( \\|$\\)/-l:libheed.a /\")'",
       w, pcp, san_flags);
    SH("readelf -d %s/app_static", w);
    assert_false(log_has("libheed"));
    SH("%s/app_static", w);
    check_app_output();
}

/* ---------------------------------------------------------------- tests */

/* Whether make holds the build up to date (make -q). */
static bool build_up_to_date(void) {
    return shq("make --no-print-directory -q -C %s BUILD=%s%s %s/heed %s/libheed.a %s/libheed.so", root, build, san,
               build, build, build) == 0;
}

/* The install target depends on the built files: were heed.h newer, make
 * install would rebuild the library and relink the binary first; after
 * make it only copies. Both with -n: printed, not run. (The installs of
 * the tests below pass -o for the built files, so that a source edited
 * while the suite runs is not rebuilt under it.) */
static void test_install_only_copies_after_make(void **state) {
    SH("make --no-print-directory -C %s BUILD=%s%s -n -W include/heed.h PREFIX=%s/unused install", root, build, san,
       tmp);
    assert_true(log_has("ar rcs"));
    assert_true(log_has("-shared"));
    assert_true(log_has("/heed.h"));

    if (!build_up_to_date()) {
        printf("NOTE: %s is older than its sources (edited since it was built): that make install only copies "
               "after make is not checked\n", build);
        return;
    }
    SH("make --no-print-directory -C %s BUILD=%s%s -n PREFIX=%s/unused install", root, build, san, tmp);
    bool rebuilds = log_has(" -c src/") || log_has("ar rcs") || log_has("-shared");
    if (rebuilds && !build_up_to_date()) {
        printf("NOTE: a source of %s changed during the check: that make install only copies is not checked\n",
               build);
        return;
    }
    if (rebuilds) fail_msg("make install would rebuild the library, where the build is up to date");
    assert_true(log_has("install -m 644 include/heed.h"));
}

/* PREFIX=<tmp>/prefix: the files, programs built through heed.pc, uninstall. */
static void test_install_prefix(void **state) {
    char prefix[PATH_MAX];
    path_in(prefix, sizeof prefix, tmp, "prefix");
    make("PREFIX=%s install", prefix);
    check_installed(prefix, prefix);
    build_programs(prefix);
    make("PREFIX=%s uninstall", prefix);
    check_uninstalled(prefix);
}

/* DESTDIR=<tmp>/stage PREFIX=/usr: the files under stage/usr, heed.pc
 * naming /usr, uninstall with the same variables. */
static void test_install_destdir(void **state) {
    char stage[PATH_MAX], usr[PATH_MAX];
    path_in(stage, sizeof stage, tmp, "stage");
    path_in(usr, sizeof usr, stage, "usr");
    make("DESTDIR=%s PREFIX=/usr install", stage);
    check_installed(usr, "/usr");
    assert_int_equal(count_files(stage), 8); /* nothing outside stage/usr */
    make("DESTDIR=%s PREFIX=/usr uninstall", stage);
    check_uninstalled(stage);
}

/* Whether the roff source names the long option opt ("--no-bos") as a
 * whole word: \-\-no\-bos, not followed by more of a name. */
static bool man_has_option(const char *man, const char *opt) {
    char roff[256];
    size_t n = 0;
    for (const char *c = opt; *c && n + 3 < sizeof roff; c++) {
        if (*c == '-') roff[n++] = '\\';
        roff[n++] = *c;
    }
    roff[n] = 0;
    for (const char *at = strstr(man, roff); at; at = strstr(at + 1, roff)) {
        const char *after = at + n;
        bool more = isalnum((unsigned char)after[0]) || after[0] == '_' || (after[0] == '\\' && after[1] == '-');
        if (!more) return true;
    }
    return false;
}

/* docs/heed.1 documents every long option that the usage texts list
 * (heed --help and each command's --help; mcp and pull where the binary has
 * them), and renders without a warning where groff is installed. */
static void test_man_page(void **state) {
    char p[PATH_MAX];
    path_in(p, sizeof p, root, "docs/heed.1");
    char *man = slurp(p);
    assert_non_null(man);
    const char *helps[] = {"--help", "serve --help", "mcp --help", "pull --help"};
    int n_missing = 0, n_checked = 0;
    for (size_t i = 0; i < sizeof helps / sizeof *helps; i++) {
        if (shq("%s/%s/heed %s", root, build, helps[i])) {
            printf("NOTE: heed %s fails in this binary: its options are not checked against the man page\n", helps[i]);
            continue;
        }
        char *help = slurp(log_path);
        assert_non_null(help);
        for (const char *c = help; (c = strstr(c, "--"));) {
            char opt[64];
            size_t n = 0;
            while (n + 1 < sizeof opt && (c[n] == '-' || islower((unsigned char)c[n]) || isdigit((unsigned char)c[n])))
                opt[n] = c[n], n++;
            opt[n] = 0;
            c += n;
            if (n <= 2) continue;
            n_checked++;
            if (!man_has_option(man, opt)) {
                printf("docs/heed.1 lacks %s (heed %s)\n", opt, helps[i]);
                n_missing++;
            }
        }
        free(help);
    }
    free(man);
    printf("%d option mentions checked\n", n_checked);
    assert_true(n_checked > 40);
    assert_int_equal(n_missing, 0);

    if (shq("command -v groff")) {
        printf("NOTE: groff is not installed: docs/heed.1 is not checked for roff warnings (Debian: groff-base)\n");
        return;
    }
    SH("groff -man -ww -z %s", p);
    char *log = slurp(log_path);
    assert_non_null(log);
    if (log[0]) fail_msg("groff warns about docs/heed.1:\n%s", log);
    free(log);
}

/* ---------------------------------------------------------------- setup */

static bool is_repo(const char *dir) {
    char p[PATH_MAX];
    const char *need[] = {"Makefile", "include/heed.h", "heed.pc.in", "docs/heed.1"};
    for (size_t i = 0; i < sizeof need / sizeof *need; i++) {
        if (snprintf(p, sizeof p, "%s/%s", dir, need[i]) >= (int)sizeof p || access(p, R_OK)) return false;
    }
    return true;
}

static int setup(void **state) {
    /* .../BUILD/tests/test_install -> .../BUILD */
    char self[PATH_MAX], cwd[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0 || !getcwd(cwd, sizeof cwd)) return -1;
    self[n] = 0;
    for (int i = 0; i < 2; i++) {
        char *slash = strrchr(self, '/');
        if (!slash) return -1;
        *slash = 0;
    }
    /* the repository: the working folder (as for every suite), else the
     * build folder's parent */
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", self);
    char *slash = strrchr(parent, '/');
    if (slash) *slash = 0;
    if (is_repo(cwd)) snprintf(root, sizeof root, "%s", cwd);
    else if (is_repo(parent)) snprintf(root, sizeof root, "%s", parent);
    else {
        printf("test_install: no repository (Makefile, heed.pc.in, docs/heed.1) in %s or %s\n", cwd, parent);
        return -1;
    }
    size_t rl = strlen(root);
    snprintf(build, sizeof build, "%s", !strncmp(self, root, rl) && self[rl] == '/' ? self + rl + 1 : self);

    snprintf(tmp, sizeof tmp, "/tmp/heed-install-XXXXXX");
    if (!mkdtemp(tmp)) return -1;
    snprintf(log_path, sizeof log_path, "%s/log", tmp);

    /* make sees only what this test gives it: no jobserver or variables of a
     * make that runs the suite, nor an install location from the caller */
    const char *unset[] = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "DESTDIR", "PREFIX", "BINDIR",
                           "LIBDIR", "INCLUDEDIR", "MANDIR", "PKGCONFIGDIR", "PKG_CONFIG_PATH"};
    for (size_t i = 0; i < sizeof unset / sizeof *unset; i++) unsetenv(unset[i]);

    heed_model *m = NULL;
    char err[256];
    if (heed_model_load(NULL, NULL, &m, err, sizeof err)) return -1;
    heed_model_info info;
    heed_model_get_info(m, &info);
    n_layer_bundled = info.n_layer;
    heed_model_free(m);

    printf("repository %s, BUILD=%s%s\n", root, build, SAN_BUILD ? " SAN=1" : "");
    snprintf(san, sizeof san, "%s", SAN_BUILD ? " SAN=1" : "");
    int n_vars = snprintf(make_vars, sizeof make_vars,
                          "-C %s BUILD=%s%s -o %s/heed -o %s/libheed.a -o %s/libheed.so -o %s/libheed.so.%s", root,
                          build, san, build, build, build, build, HEED_VERSION);
    return n_vars > 0 && (size_t)n_vars < sizeof make_vars ? 0 : -1;
}

static int teardown(void **state) {
    if (tmp[0]) {
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
        if (system(cmd)) return -1;
    }
    return 0;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* in order with cmocka's messages and the logs printed */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_install_only_copies_after_make),
        cmocka_unit_test(test_install_prefix),
        cmocka_unit_test(test_install_destdir),
        cmocka_unit_test(test_man_page),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
