/*
 * safetensors - a checked, read-only reader for Hugging Face .safetensors files.
 *
 * File layout:
 *   u64 N (little-endian) | N bytes of JSON header | tensor data
 *   header = { "<tensor name>": { "dtype": "BF16", "shape": [d0, d1, ...],
 *                                 "data_offsets": [begin, end] }, ...,
 *              "__metadata__": { "<key>": "<value>", ... } }   (metadata optional)
 *   The header may be padded with trailing spaces. A shape lists the
 *   outermost dimension first (row-major: the last one is contiguous; [] is a
 *   scalar). begin/end are byte offsets relative to the start of the data
 *   (8 + N), end exclusive.
 *
 * The whole file is mmap'ed and the header parsed with jansson. Before any
 * tensor is handed out its dtype, shape, element count and offsets are
 * checked against each other and against the bytes the file has, so a
 * truncated or hostile file is rejected with a message naming the file and
 * the tensor. Tensors may not overlap; gaps between them are tolerated.
 *
 * Supported dtypes: F32, F16, BF16 (a file holding any other dtype is
 * refused with HEED_ERR_UNSUPPORTED, naming the tensor). Tensor data must be
 * aligned to its element size, as every writer does (headers are padded to
 * 8 bytes), so the kernels can read it in place.
 *
 * What it does not do: interpret tensor names (see hf.c) or convert data.
 * Ownership: st_close() unmaps the file; names and data pointers die with
 * it. Threads: read-only after opening.
 */
#ifndef HEED_SAFETENSORS_H
#define HEED_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

/* Named limits on what a header may claim. The header limit is the one the
 * reference implementation uses; the others are far above any checkpoint. */
#define ST_MAX_HEADER_BYTES 100000000u
#define ST_MAX_DIMS 8
#define ST_MAX_TENSORS (1 << 20)

enum st_dtype { ST_F32, ST_F16, ST_BF16 };

typedef struct st_tensor {
    char *name;                 /* NUL-terminated copy */
    enum st_dtype dtype;
    int n_dims;                 /* 0 for a scalar */
    int64_t shape[ST_MAX_DIMS]; /* outermost first, as in the file */
    uint64_t n_elems;
    uint64_t offset;            /* absolute file offset of the data */
    uint64_t n_bytes;
    const void *data;           /* into the mapping; aligned to the element size */
} st_tensor;

typedef struct st_file {
    char *name;           /* as given; first in every message */
    uint64_t file_size;
    const uint8_t *map;   /* the whole file */
    uint64_t data_offset; /* 8 + N: where offsets count from */
    int n_tensors;
    st_tensor *tensors;   /* in data order (by offset, then name) */
} st_file;

/*
 * Maps and validates the file at `path`; `name` (NULL: the path) is used in
 * messages. On failure returns NULL, sets *rc (if not NULL) to HEED_ERR_IO,
 * HEED_ERR_FORMAT, HEED_ERR_UNSUPPORTED or HEED_ERR_NOMEM and writes a
 * message into err (if err_size > 0), e.g. "model.safetensors: tensor
 * 'model.norm.weight': data_offsets end 4096 is past the end of the data
 * (1024 bytes)".
 */
st_file *st_open(const char *path, const char *name, int *rc, char *err, size_t err_size);

/* Same checks on a buffer already in memory (tests, fuzzing); the buffer
 * must outlive the st_file and be aligned for 4-byte reads. */
st_file *st_open_buffer(const void *buf, size_t size, const char *name, int *rc, char *err,
                        size_t err_size);

void st_close(st_file *f);

/* The tensor called `name`, or NULL (a binary search over a name index). */
const st_tensor *st_find(const st_file *f, const char *name);

const char *st_dtype_name(enum st_dtype t); /* "F32", "F16", "BF16" */
size_t st_dtype_size(enum st_dtype t);      /* bytes per element */

#endif
