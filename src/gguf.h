/*
 * gguf - a checked, read-only reader for GGUF files (versions 2 and 3).
 *
 * File layout (all little-endian):
 *   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv x { string key | u32 value_type | value }
 *   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
 *   padding to `general.alignment` (default 32)
 *   tensor data; each tensor's offset is relative to the start of this section
 *   and a multiple of the alignment.
 *   string = u64 length | bytes (not NUL-terminated in the file)
 *   array  = u32 element type | u64 count | elements
 *
 * The whole file is mmap'ed. Every count, length and offset is checked
 * against SIZE_MAX and against the bytes left before it is used, so a
 * truncated or hostile file is rejected with a message naming the file and
 * the field, never read out of bounds.
 *
 * What it does not do: interpret the model (see model.c) or convert tensors
 * (see kern.c). Ownership: gguf_close() unmaps the file; every pointer handed
 * out (keys, strings, tensor data) points into the mapping or into the
 * gguf_file and dies with it. Threads: read-only after gguf_open, so any
 * number of threads may read.
 */
#ifndef HEED_GGUF_H
#define HEED_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ggml_types.h" /* enum ggml_type: the tensor types of the table */

/* metadata value types, as numbered in the file */
enum gguf_vtype {
    GGUF_U8 = 0,
    GGUF_I8 = 1,
    GGUF_U16 = 2,
    GGUF_I16 = 3,
    GGUF_U32 = 4,
    GGUF_I32 = 5,
    GGUF_F32 = 6,
    GGUF_BOOL = 7,
    GGUF_STRING = 8,
    GGUF_ARRAY = 9,
    GGUF_U64 = 10,
    GGUF_I64 = 11,
    GGUF_F64 = 12,
    GGUF_VTYPE_COUNT
};

typedef struct gguf_str {
    const char *ptr; /* into the mapping; NOT NUL-terminated */
    uint64_t len;
} gguf_str;

typedef struct gguf_kv {
    char *key;            /* NUL-terminated copy */
    enum gguf_vtype type; /* GGUF_ARRAY for arrays */
    enum gguf_vtype arr_type;
    uint64_t arr_n;
    const uint8_t *data;  /* value bytes in the mapping (for arrays: first element) */
    gguf_str *strs;       /* GGUF_STRING: 1 entry; array of strings: arr_n entries; else NULL */
} gguf_kv;

#define GGUF_MAX_DIMS 4

typedef struct gguf_tensor {
    char *name;          /* NUL-terminated copy */
    int type;            /* enum ggml_type; always a supported type after gguf_open */
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* unused dims are 1; ne[0] is contiguous */
    uint64_t offset;     /* absolute file offset of the data */
    uint64_t n_bytes;
    const void *data;    /* into the mapping */
} gguf_tensor;

typedef struct gguf_file {
    char *path;
    uint32_t version;
    uint64_t file_size;
    uint32_t alignment;
    int n_kv;
    gguf_kv *kv;
    int n_tensors;
    gguf_tensor *tensors;
    const uint8_t *map; /* the whole file */
    uint64_t data_offset; /* start of the tensor data section */
} gguf_file;

/*
 * Opens and validates `path`. On failure returns NULL and writes a message
 * naming the file and the field into err (if err_size > 0); *rc (if not NULL)
 * receives HEED_OK, HEED_ERR_IO, HEED_ERR_FORMAT, HEED_ERR_UNSUPPORTED or
 * HEED_ERR_NOMEM. Checks, at least: magic, version (2 or 3), every length
 * against the bytes left, duplicate keys, unknown value types, nested arrays,
 * non-power-of-two alignment, duplicate tensor names, n_dims in 1..4,
 * element counts that overflow, unsupported tensor types (anything but F32,
 * F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
 * IQ4_NL, IQ4_XS: "unsupported tensor type" naming the tensor and the type),
 * row lengths not a multiple of the block size, misaligned tensor offsets and
 * tensors extending past the end of the file.
 */
gguf_file *gguf_open(const char *path, int *rc, char *err, size_t err_size);

/* Same checks on a buffer already in memory (tests, fuzzing). `name` is
 * used in messages. The buffer must outlive the gguf_file. */
gguf_file *gguf_open_buffer(const void *buf, size_t size, const char *name, int *rc, char *err,
                            size_t err_size);

void gguf_close(gguf_file *f);

/* Lookups return NULL / -1 when absent. */
const gguf_kv *gguf_find(const gguf_file *f, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* Typed getters: return true and set *out when the key exists and its value
 * (a scalar of any integer or float type, resp. a string) converts without
 * loss of meaning; false otherwise (absent, wrong type, out of range). */
bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
bool gguf_get_f64(const gguf_file *f, const char *key, double *out);
bool gguf_get_bool(const gguf_file *f, const char *key, bool *out);
bool gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);

/* Element i of a numeric array as a double/int64; false if out of range or
 * not numeric. */
bool gguf_arr_f64(const gguf_kv *kv, uint64_t i, double *out);
bool gguf_arr_i64(const gguf_kv *kv, uint64_t i, int64_t *out);

/* Names, sizes, block sizes of the ggml types; "unknown" / 0 for others. */
const char *gguf_type_name(int type);
const char *gguf_vtype_name(int vtype);
size_t gguf_type_block_bytes(int type);  /* bytes per block */
int gguf_type_block_elems(int type);     /* elements per block */
bool gguf_type_supported(int type);

/* Writes the value of kv as text (arrays: first `max_elems` entries then
 * "... (N total)"); snprintf semantics. */
int gguf_kv_format(const gguf_kv *kv, char *buf, size_t size, int max_elems);

#endif
