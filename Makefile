# heed - build, run, test, bench.
#
#   make run     install missing Debian and npm packages, build the web UI and heed,
#                generate on the bundled model, then serve the UI on http://127.0.0.1:8080
#   make test    install missing packages, build (normal + ASan/UBSan), make check, run every test
#   make check   exported symbols carry their module's prefix; includes point the allowed way
#   make bench   benchmarks (figures, not pass/fail)
#   make test-long  the 16k long-context golden file as well
#   make fuzz    libFuzzer targets (clang; see the fuzzing section below)
#
# Warnings are errors. SIMD kernels are compiled per file with their own
# target flags and chosen at run time, so the binary runs on any x86-64.

CC      ?= cc
BUILD   ?= build
SAN     ?= 0

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wpointer-arith -Wvla -Wformat=2 -Wundef -Wno-unused-parameter
# -fPIC: the same objects make libheed.a and libheed.so (the Python package's
# library); -fno-semantic-interposition keeps calls inside the library direct.
CFLAGS  := -std=c11 -D_DEFAULT_SOURCE -Iinclude -Isrc $(WARN) -g -pthread -fPIC -fno-semantic-interposition
ifeq ($(SAN),1)
CFLAGS  += -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
else ifeq ($(SAN),fuzz)
# make fuzz (clang): every object instrumented for libFuzzer's coverage, ASan and UBSan
CFLAGS  += -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
else
CFLAGS  += -O2
endif
LDLIBS  := -lpcre2-8 -ljansson -lmicrohttpd -lsqlite3 -lzstd -lcurl -lm -lpthread

AVX2_FLAGS   := -mavx2 -mfma -mf16c
AVX512_FLAGS := -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16

LIB_SRC  := $(filter-out src/main.c,$(wildcard src/*.c))
LIB_OBJ  := $(patsubst src/%.c,$(BUILD)/src/%.o,$(LIB_SRC)) $(BUILD)/src/bundled.o $(BUILD)/src/assets_data.o
# web assets embedded into the binary: the built UI, or a fallback page until it exists
WEB_ASSETS := $(if $(wildcard web/dist/index.html),web/dist,web/fallback)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
BENCH_SRC:= $(wildcard bench/bench_*.c)
BENCH_BIN:= $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))
# tools the benchmarks run (mkmodel writes the random-weight models)
BENCH_TOOLS := $(BUILD)/bench/mkmodel
HEADERS  := $(wildcard include/*.h src/*.h)

.PHONY: all run test test-only test-long bench fuzz deps web clean

HOST ?= 127.0.0.1
PORT ?= 8080

# The library's ABI version (the soname's number) and the project's version.
SOVERSION := 0
VERSION   := $(shell sed -n 's/^\#define HEED_VERSION "\(.*\)"/\1/p' include/heed.h)

all: $(BUILD)/heed $(BUILD)/libheed.so

deps:
	@sh scripts/deps.sh

# The web UI (web/ -> web/dist, embedded by the next link). Without node/npm
# or the registry the binary embeds the placeholder page of web/fallback.
web:
	@sh scripts/web-build.sh || echo "heed: the web UI could not be built (see above); embedding the placeholder page"

run: deps web
	@$(MAKE) --no-print-directory all
	./$(BUILD)/heed generate -p "Once upon a time" -n 40
	@echo
	./$(BUILD)/heed serve --host $(HOST) --port $(PORT)

test: deps web
	@$(MAKE) --no-print-directory all tests
	@$(MAKE) --no-print-directory BUILD=build-asan SAN=1 all tests
	@$(MAKE) --no-print-directory check
	@sh tests/run.sh

tests: $(TEST_BIN) $(BENCH_TOOLS)

# The long-context golden files at 16k too (make test runs the 8k one).
test-long: all tests
	HEED_TEST_LONG=1 ./$(BUILD)/tests/test_long

bench: deps web
	@$(MAKE) --no-print-directory all $(BENCH_BIN) $(BENCH_TOOLS)
	@sh bench/run.sh

$(BUILD)/src/%.o: src/%.c $(HEADERS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/src/kern_avx2.o: CFLAGS += $(AVX2_FLAGS)
$(BUILD)/src/kern_avx512.o: CFLAGS += $(AVX512_FLAGS)

# The default model is linked into the binary, so `heed` runs with no files.
$(BUILD)/src/bundled.o: src/bundled.S models/stories260K.gguf
	@mkdir -p $(dir $@)
	$(CC) -c $< -o $@

$(BUILD)/assets_data.c: scripts/embed_assets.sh $(shell find $(WEB_ASSETS) -type f)
	@mkdir -p $(dir $@)
	sh scripts/embed_assets.sh $(WEB_ASSETS) > $@.tmp && mv $@.tmp $@

$(BUILD)/src/assets_data.o: $(BUILD)/assets_data.c src/assets.h Makefile
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libheed.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The shared library (soname libheed.so.$(SOVERSION)): what python/ loads with ctypes.
$(BUILD)/libheed.so.$(VERSION): $(LIB_OBJ)
	$(CC) -shared $(LDFLAGS) -Wl,-soname,libheed.so.$(SOVERSION) $^ -o $@ $(LDLIBS)

$(BUILD)/libheed.so: $(BUILD)/libheed.so.$(VERSION)
	ln -sf libheed.so.$(VERSION) $(BUILD)/libheed.so.$(SOVERSION)
	ln -sf libheed.so.$(VERSION) $@

$(BUILD)/heed: $(BUILD)/src/main.o $(BUILD)/libheed.a
	$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(wildcard tests/*.h) $(BUILD)/libheed.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(BUILD)/libheed.a -o $@ $(LDLIBS) -lcmocka -ljansson -lcurl

$(BUILD)/bench/%: bench/%.c $(BUILD)/libheed.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(BUILD)/libheed.a -o $@ $(LDLIBS)

# ------------------------------------------------------------------ structure
# make check (scripts/check.sh; docs/ARCHITECTURE.md): every global symbol of
# the objects carries its module's prefix (heed_: declared in include/heed.h),
# and every #include of src/ and include/ points the way the rings allow
# (engine <- analysis <- server/CLI, the server and CLI through heed.h). make
# test runs it before the suites, so a violation stops it with its message.
.PHONY: check

check: $(LIB_OBJ) $(BUILD)/src/main.o
	@sh scripts/check.sh $^

# ------------------------------------------------------------------ install
# make install [PREFIX=/usr/local] [DESTDIR=...]: the binary, the header, the
# static and the shared library (libheed.so.$(VERSION), soname
# libheed.so.$(SOVERSION), and both links), heed.pc (heed.pc.in with the
# prefix, directories and version filled in) and the man page (docs/heed.1).
# It installs what $(BUILD) holds, building only what is out of date, so
# after `make` it only copies. make uninstall (same variables) removes exactly
# those files and leaves the directories. tests/test_install.c runs both.
PREFIX       ?= /usr/local
BINDIR       ?= $(PREFIX)/bin
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
MANDIR       ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
INSTALL      ?= install
# heed.pc names its directories from ${prefix} where they lie under it
PC_SUBST  = -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' \
            -e 's|@LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))|g' \
            -e 's|@INCLUDEDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))|g'

.PHONY: install uninstall

install: $(BUILD)/heed $(BUILD)/libheed.a $(BUILD)/libheed.so include/heed.h heed.pc.in docs/heed.1
	sed $(PC_SUBST) heed.pc.in > $(BUILD)/heed.pc
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) \
	  $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(MANDIR)/man1
	$(INSTALL) -m 755 $(BUILD)/heed $(DESTDIR)$(BINDIR)/heed
	$(INSTALL) -m 644 include/heed.h $(DESTDIR)$(INCLUDEDIR)/heed.h
	$(INSTALL) -m 644 $(BUILD)/libheed.a $(DESTDIR)$(LIBDIR)/libheed.a
	$(INSTALL) -m 755 $(BUILD)/libheed.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libheed.so.$(VERSION)
	ln -sf libheed.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libheed.so.$(SOVERSION)
	ln -sf libheed.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libheed.so
	$(INSTALL) -m 644 $(BUILD)/heed.pc $(DESTDIR)$(PKGCONFIGDIR)/heed.pc
	$(INSTALL) -m 644 docs/heed.1 $(DESTDIR)$(MANDIR)/man1/heed.1

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/heed $(DESTDIR)$(INCLUDEDIR)/heed.h \
	  $(DESTDIR)$(LIBDIR)/libheed.a $(DESTDIR)$(LIBDIR)/libheed.so.$(VERSION) \
	  $(DESTDIR)$(LIBDIR)/libheed.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libheed.so \
	  $(DESTDIR)$(PKGCONFIGDIR)/heed.pc $(DESTDIR)$(MANDIR)/man1/heed.1

# ------------------------------------------------------------------ fuzzing
# tests/fuzz/fuzz_NAME.c are libFuzzer targets with seeds in tests/fuzz/corpus_NAME/.
#   make fuzz       installs clang's libFuzzer runtime if missing (scripts/fuzz-deps.sh),
#                   builds the library with clang instrumented for libFuzzer, ASan and
#                   UBSan (SAN=fuzz, in build-fuzz/) and every target in build-fuzz/fuzz/
#   make fuzz-long  runs each target FUZZ_TIME seconds (3600) on a copy of its corpus in
#                   build-fuzz/corpus/NAME, then prints executions and crashes per target
# `make tests` builds each harness with tests/fuzz/replay.c instead of libFuzzer
# ($(BUILD)/tests/test_fuzz_NAME), so `make test` replays every committed corpus in the
# normal and the ASan+UBSan build.
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_DEPS  := tests/fuzz/fuzz.h tests/fuzz/fuzzutil.c $(HEADERS) Makefile
FUZZ_TIME  ?= 3600

.PHONY: fuzz-long

tests: $(patsubst %,$(BUILD)/tests/test_fuzz_%,$(FUZZ_NAMES))

$(BUILD)/tests/test_fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(FUZZ_DEPS) $(BUILD)/libheed.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DFUZZ_REPLAY -DFUZZ_NAME='"$*"' $(LDFLAGS) tests/fuzz/replay.c tests/fuzz/fuzzutil.c $< \
	  $(BUILD)/libheed.a -o $@ $(LDLIBS) -lcmocka

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_DEPS) $(BUILD)/libheed.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer $(LDFLAGS) tests/fuzz/fuzzutil.c $< $(BUILD)/libheed.a -o $@ $(LDLIBS)

fuzz: deps
	@sh scripts/fuzz-deps.sh
	@$(MAKE) --no-print-directory CC=clang BUILD=build-fuzz SAN=fuzz \
	  $(patsubst %,build-fuzz/fuzz/fuzz_%,$(FUZZ_NAMES))
	@echo "fuzzers in build-fuzz/fuzz/ (make fuzz-long runs them all; one: build-fuzz/fuzz/fuzz_gguf DIR tests/fuzz/corpus_gguf,"
	@echo "where new inputs go into DIR, the first folder)"

fuzz-long: fuzz
	@FUZZ_TIME=$(FUZZ_TIME) sh tests/fuzz/run-long.sh $(FUZZ_NAMES)

clean:
	rm -rf build build-asan build-fuzz web/dist
