/*
 * run - recordings of a generation (heed_run), the recorder that makes them
 * through the attention hook, their file format (docs/RUN_FORMAT.md), the
 * public views over them and the NumPy / JSON export.
 *
 * A heed_run owns everything it holds: token ids and labels, steps, logit
 * lens, and an astore with the attention tiers. Loading a run needs no
 * model: exact rows are recomputed from the stored q and k. The run creates
 * its view thread pool on first use, so views take a non-const run and one
 * thread at a time may use it.
 *
 * The internal helpers below are shared with the tests.
 */
#ifndef HEED_RUN_H
#define HEED_RUN_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "heed.h"

#define RUN_MAGIC "HEEDRUN\0"
#define RUN_VERSION 1u

/* CRC-32 (IEEE 802.3, reflected, as zip and PNG use) of n bytes, continuing
 * from crc (start with 0). */
/* Loads a run from an open stream of `size` bytes (heed_run_load's body;
 * the fuzz target feeds it memory through fmemopen). `name` is used in
 * messages. Same returns as heed_run_load. */
int run_load_stream(FILE *f, uint64_t size, const char *name, heed_run **out, char *err, size_t err_size);

uint32_t run_crc32(uint32_t crc, const void *data, size_t n);

/* FNV-1a 64 of n bytes, continuing from h (start with RUN_FNV_INIT). */
#define RUN_FNV_INIT 0xcbf29ce484222325ull
uint64_t run_fnv1a(uint64_t h, const void *data, size_t n);

/* The .npy v1.0 header of an array (magic, version, length, dict padded to
 * 64 bytes). Returns its length (<= size) or 0 when it does not fit. */
size_t run_npy_header(const heed_array *a, char *buf, size_t size);

#endif
