#!/bin/sh
# check.sh - the structure checks of `make check`, which `make test` runs
# before the suites (docs/ARCHITECTURE.md, "make check").
#
#   symbols   every global symbol an object defines carries its module's
#             prefix (prefixes_of below); heed_ is the public API's, allowed
#             in any object as long as include/heed.h declares the name.
#   includes  every #include "..." of src/ and include/ points the way the
#             rings allow (ring_of below):
#               public    include/heed.h includes no header of the project
#               engine    includes heed.h and engine headers
#               analysis  includes heed.h, engine and analysis headers
#               front     (the server and the CLI) includes heed.h and front
#                         headers: it reaches the engine through heed.h only
#             A file in no ring fails ("unclassified file"), so that a new
#             file gets placed.
#
# Usage: sh scripts/check.sh [OBJECT...]
#   (the Makefile passes the library's objects and main.o; by default
#   build/src/NAME.o of every src/NAME.c and src/NAME.S, and
#   build/src/assets_data.o)
# Prints one line per violation, naming the file, the symbol or header and
# the rule, then a summary; exits 1 when there is any. POSIX sh, nm, grep,
# sed, awk.

LC_ALL=C
export LC_ALL

if [ ! -f include/heed.h ] || [ ! -d src ]; then
    echo "check: run me from the repository root (make check)" >&2
    exit 2
fi

# --------------------------------------------------------------- rule tables

# The ring of a file of src/, by its name without .c/.h/.S. ARCHITECTURE.md's
# diagram and module table, as rings:
#   engine    reads models and runs them: formats, weights, tokenizers,
#             kernels, threads, the sampler, chat templates
#   analysis  records and reads attention, and generates through the engine:
#             the attention store and its views, run recordings and files,
#             the generation session, the JSON writer
#   front     the server (routes, handlers, store of runs, embedded UI,
#             HTML export) and the CLI
ring_of() {
    case $1 in
    gguf | gguf_write | ggml_types | model | forward | kern* | pool | tok* | samp | chat | fmap | utf8 | \
        safetensors | hf | bundled | heed | limit | err)
        echo engine ;;
    astore | attn | run* | rec | jsonw | gen | trace | trace_vllmhook)
        echo analysis ;;
    api* | server | store | webexport | assets | mcp | pull | main | upstream)
        echo front ;;
    *) echo unclassified ;;
    esac
}

# The prefixes an object's global symbols may carry, by the object's name
# without .o: the file name's stem and "_", except where the module's
# prefix is another (a module of several files shares one).
prefixes_of() {
    case $1 in
    gguf_write) echo gguf_writer_ ;; # the writer's handle is a gguf_writer
    kern*) echo kern_ ;;             # kern.c, kern_quant.c, kern_avx2.c, kern_avx512.c
    tok*) echo tok_ ;;               # tok.c, tok_bpe.c
    run*) echo run_ ;;               # run.c and the files split from it
    api*) echo api_ ;;               # api.c and the files split from it
    jsonw) echo jw_ ;;               # the JSON writer's short prefix (jw_obj, jw_key, ...)
    safetensors) echo st_ ;;         # the safetensors reader's short prefix (st_open, st_find, ...)
    main) echo main ;;               # the program's entry point (checked as the exact name)
    *) echo "$1"_ ;;
    esac
}

# Global symbols outside their module's prefix, each with its reason:
# "object symbol # why". The compiler's own (names starting "__", such as
# ASan's __odr_asan.*) are skipped without a list.
SYM_EXCEPTIONS='
bundled heed_bundled_model # the bundled model bytes (bundled.S, .incbin), which model.c loads: data, not API
bundled heed_bundled_model_size # their length
assets_data heed_assets # the web asset table scripts/embed_assets.sh generates (assets.h), read by assets.c
assets_data heed_n_assets # its length
'

# Includes that break a rule today: "file header # why". Each is a known
# violation, to fix in the refactor; remove its line when the include goes.
INCLUDE_ALLOW='
src/main.c jsonw.h # known violation, to fix in the refactor: the CLI writes its --json output with the library-internal JSON writer (docs/ARCHITECTURE.md says the CLI uses only heed.h)
'

# ----------------------------------------------------------------- helpers

tmp=$(mktemp -d "${TMPDIR:-/tmp}/heed-check.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
: >"$tmp/violations"
: >"$tmp/used"

violation() { echo "check: $*" >>"$tmp/violations"; }

# listed LIST KEY: true when a line of LIST, its comment taken off, is KEY
listed() {
    printf '%s\n' "$1" | sed 's/[[:space:]]*#.*//' | grep -Fqx "$2"
}

# ----------------------------------------------------------------- symbols

if [ $# -gt 0 ]; then
    objs="$*"
else
    objs=
    for s in src/*.c src/*.S; do
        n=${s##*/}
        objs="$objs build/src/${n%.*}.o"
    done
    objs="$objs build/src/assets_data.o"
fi

# Names include/heed.h declares: identifiers followed by "(" (its functions;
# it declares no variables), outside comments.
awk '
    {
        line = $0
        out = ""
        while (line != "") {
            if (inc) {
                i = index(line, "*/")
                if (!i) { line = ""; break }
                line = substr(line, i + 2); inc = 0
            } else {
                i = index(line, "/*"); j = index(line, "//")
                if (j && (!i || j < i)) { out = out substr(line, 1, j - 1); line = ""; break }
                if (!i) { out = out line; line = ""; break }
                out = out substr(line, 1, i - 1); line = substr(line, i + 2); inc = 1
            }
        }
        print out
    }' include/heed.h >"$tmp/heed.h"
grep -o 'heed_[A-Za-z0-9_]*[[:space:]]*(' "$tmp/heed.h" | sed 's/[[:space:]]*($//' | sort -u >"$tmp/api"

for obj in $objs; do
    name=${obj##*/}
    stem=${name%.o}
    if [ ! -f "$obj" ]; then
        violation "$obj: no such object (build it first: make all)"
        continue
    fi
    prefixes=$(prefixes_of "$stem")
    nm -g --defined-only "$obj" | awk 'NF >= 2 { print $NF }' >"$tmp/syms" || {
        violation "$obj: nm failed"
        continue
    }
    while read -r sym; do
        case $sym in __*) continue ;; esac
        ok=
        for p in $prefixes; do
            if [ "$p" = main ]; then
                [ "$sym" = main ] && ok=1
            else
                case $sym in "$p"?*) ok=1 ;; esac
            fi
        done
        if [ -z "$ok" ]; then
            case $sym in
            heed_*) grep -Fqx "$sym" "$tmp/api" && ok=1 ;;
            esac
        fi
        if [ -z "$ok" ] && listed "$SYM_EXCEPTIONS" "$stem $sym"; then
            echo "$stem $sym" >>"$tmp/used"
            ok=1
        fi
        [ -n "$ok" ] && continue
        case $sym in
        heed_*) violation "$obj: symbol $sym: rule \"public prefix\": heed_ names the public API, and include/heed.h does not declare $sym (this module's prefix: $prefixes)" ;;
        *) violation "$obj: symbol $sym: rule \"module prefix\": the global symbols of $name start with $prefixes (heed_ only for what include/heed.h declares)" ;;
        esac
    done <"$tmp/syms"
done

# ---------------------------------------------------------------- includes

rule_text() {
    case $1 in
    public) echo "include/heed.h includes no header of the project" ;;
    engine) echo "the engine includes no analysis or server/CLI header" ;;
    analysis) echo "analysis includes no server/CLI header" ;;
    front) echo "the server and the CLI reach the engine only through heed.h (and include only their own ring's headers)" ;;
    esac
}

# allowed RING-OF-FILE RING-OF-HEADER
allowed() {
    case $1:$2 in
    engine:public | engine:engine) return 0 ;;
    analysis:public | analysis:engine | analysis:analysis) return 0 ;;
    front:public | front:front) return 0 ;;
    esac
    return 1
}

ring_of_path() {
    case $1 in
    include/heed.h) echo public ;;
    include/*) echo unclassified ;;
    *)
        n=${1##*/}
        ring_of "${n%.*}"
        ;;
    esac
}

for f in include/*.h src/*.c src/*.h src/*.S; do
    [ -f "$f" ] || continue
    ring=$(ring_of_path "$f")
    if [ "$ring" = unclassified ]; then
        violation "$f: unclassified file: rule \"rings\": every file has a ring; give it one in scripts/check.sh (ring_of) and a row in docs/ARCHITECTURE.md"
        continue
    fi
    sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f" >"$tmp/incs"
    while read -r h; do
        hn=${h##*/}
        if [ -f "include/$hn" ]; then
            hp=include/$hn
        elif [ -f "src/$hn" ]; then
            hp=src/$hn
        else
            violation "$f: includes \"$h\": rule \"rings\": a quoted include names a file of src/ or include/"
            continue
        fi
        hr=$(ring_of_path "$hp")
        [ "$hr" = unclassified ] && continue # reported as a file of its own
        allowed "$ring" "$hr" && continue
        if listed "$INCLUDE_ALLOW" "$f $hn"; then
            echo "$f $hn" >>"$tmp/used"
            continue
        fi
        violation "$f: includes $hn ($hr ring): rule \"$ring\": $(rule_text "$ring")"
    done <"$tmp/incs"
done

# --------------------------------------------------------------- the lists

# An entry that no longer matches anything is said, not failed: the fix has
# landed and the line should go.
for list in "$SYM_EXCEPTIONS" "$INCLUDE_ALLOW"; do
    printf '%s\n' "$list" | sed 's/[[:space:]]*#.*//' | grep . | while read -r a b; do
        grep -Fqx "$a $b" "$tmp/used" ||
            echo "check: note: the entry \"$a $b\" in scripts/check.sh matches nothing any more: remove it"
    done
done

n=$(wc -l <"$tmp/violations" | tr -d ' ')
n_allowed=$(printf '%s\n' "$INCLUDE_ALLOW" | sed 's/[[:space:]]*#.*//' | grep -c .)
if [ "$n" -gt 0 ]; then
    cat "$tmp/violations"
    echo "check: $n violation(s) (rules: scripts/check.sh, docs/ARCHITECTURE.md)"
    exit 1
fi
echo "check: symbols and includes follow the rules ($n_allowed known include violation(s) allowed, listed in scripts/check.sh)"
