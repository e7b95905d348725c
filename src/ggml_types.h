/*
 * ggml_types - the tensor types heed knows, numbered as ggml and GGUF files
 * number them, and the elements per block of the block formats.
 *
 * Shared by the GGUF reader (gguf.h includes it), which checks a file's
 * tensor types and row lengths, and the kernels (kern.h includes it), which
 * lay blocks out and dispatch on the type: neither needs the other for it.
 * Only numbers; the block structs are kern.h's, the byte sizes of every
 * ggml type (also those heed cannot run) gguf.c's table.
 */
#ifndef HEED_GGML_TYPES_H
#define HEED_GGML_TYPES_H

/* ggml tensor types, as numbered in the file (only those heed knows by name) */
enum ggml_type {
    GGML_F32 = 0,
    GGML_F16 = 1,
    GGML_Q4_0 = 2,
    GGML_Q4_1 = 3,
    GGML_Q5_0 = 6,
    GGML_Q5_1 = 7,
    GGML_Q8_0 = 8,
    GGML_Q8_1 = 9,
    GGML_Q2_K = 10,
    GGML_Q3_K = 11,
    GGML_Q4_K = 12,
    GGML_Q5_K = 13,
    GGML_Q6_K = 14,
    GGML_Q8_K = 15,
    GGML_IQ4_NL = 20,
    GGML_IQ4_XS = 23,
    GGML_BF16 = 30,
    GGML_TYPE_COUNT = 40 /* bound for table sizes; ids >= this are unknown */
};

/* Elements per block (a row's length is a multiple of its type's block). */
#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK4_NL 32 /* IQ4_NL */
#define QK_K 256 /* super-block of the K-quants (Q2_K .. Q6_K, Q8_K) and IQ4_XS */

#endif
