/*
 * utf8 - strict UTF-8 primitives shared by the tokenizer (validation,
 * streaming assembly) and the JSON writer (replacing invalid bytes).
 * Strict means: no overlongs, no surrogates, nothing above U+10FFFF.
 * Pure functions; threads: any.
 */
#ifndef HEED_UTF8_H
#define HEED_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes in the character that `lead` starts (1..4), or 0 if none can. */
int utf8_seq_len(unsigned char lead);
/* Whether b may be byte `pos` (>= 1) of a character led by `lead`. */
bool utf8_cont_ok(unsigned char lead, int pos, unsigned char b);
/* Decodes one character at s (n > 0 bytes) into *cp: its length, or 0 if
 * the bytes there are not a complete valid character. */
int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);

#endif
