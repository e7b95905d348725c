/*
 * gguf_write - a small GGUF v3 writer (the format is documented in gguf.h).
 *
 * Used by bench/mkmodel (random-weight models of any geometry) and by tests
 * that need hand-made files. Metadata and tensor infos are serialized into
 * memory as they are added; tensor data is streamed, so a multi-gigabyte
 * model never has to be in memory at once:
 *
 *   gguf_writer *w = gguf_writer_new(32);
 *   gguf_writer_kv_str(w, "general.architecture", "llama");
 *   gguf_writer_add_tensor(w, "token_embd.weight", 2, ne, GGML_Q8_0, NULL);
 *   gguf_writer_begin(w, "model.gguf");     header, metadata, tensor infos
 *   gguf_writer_put(w, bytes, n);           the next tensor's data, in order
 *   gguf_writer_end(w);                     checks every tensor was written
 *   gguf_writer_free(w);
 *
 * or, with data pointers given to gguf_writer_add_tensor (they must stay
 * valid until written), gguf_writer_write_file(w, path) does all three.
 *
 * Errors: every function returns HEED_OK or a negative heed error code
 * (HEED_ERR_NOMEM, HEED_ERR_IO, HEED_ERR_INVALID_ARG: a tensor shape that is
 * not a whole number of blocks, an unknown type, data written out of order
 * or of the wrong size); gguf_writer_error() says what. After an error the
 * writer only reports it again. Not thread-safe; one writer per file.
 */
#ifndef HEED_GGUF_WRITE_H
#define HEED_GGUF_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gguf_writer gguf_writer;

/* alignment: a power of two (0 means the default 32); written as
 * general.alignment when it is not 32. NULL when out of memory. */
gguf_writer *gguf_writer_new(uint32_t alignment);
void gguf_writer_free(gguf_writer *w); /* closes an unfinished file; NULL is a no-op */
const char *gguf_writer_error(const gguf_writer *w);

/* Scalars of each value type (enum gguf_vtype). */
int gguf_writer_kv_u8(gguf_writer *w, const char *key, uint8_t v);
int gguf_writer_kv_i8(gguf_writer *w, const char *key, int8_t v);
int gguf_writer_kv_u16(gguf_writer *w, const char *key, uint16_t v);
int gguf_writer_kv_i16(gguf_writer *w, const char *key, int16_t v);
int gguf_writer_kv_u32(gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_kv_i32(gguf_writer *w, const char *key, int32_t v);
int gguf_writer_kv_u64(gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_kv_i64(gguf_writer *w, const char *key, int64_t v);
int gguf_writer_kv_f32(gguf_writer *w, const char *key, float v);
int gguf_writer_kv_f64(gguf_writer *w, const char *key, double v);
int gguf_writer_kv_bool(gguf_writer *w, const char *key, bool v);
int gguf_writer_kv_str(gguf_writer *w, const char *key, const char *v);
/* An array of n numeric or bool elements of vtype, packed little-endian in data. */
int gguf_writer_kv_arr(gguf_writer *w, const char *key, int vtype, const void *data, uint64_t n);
/* An array of n NUL-terminated strings. */
int gguf_writer_kv_arr_str(gguf_writer *w, const char *key, const char *const *strs, uint64_t n);

/* ne[0] is the contiguous dimension (a multiple of the type's block). data
 * may be NULL when the data is streamed with gguf_writer_put. */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, int n_dims, const int64_t *ne, int type,
                           const void *data);

int gguf_writer_begin(gguf_writer *w, const char *path);
/* The data of the next tensor, in add order; exactly its size in bytes. */
int gguf_writer_put(gguf_writer *w, const void *data, size_t n_bytes);
int gguf_writer_end(gguf_writer *w);
/* begin + put of every tensor's data pointer + end */
int gguf_writer_write_file(gguf_writer *w, const char *path);

#endif
