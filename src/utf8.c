/*
 * utf8.c - strict UTF-8 decoding primitives (see utf8.h).
 */
#include "utf8.h"

/* Bytes in the character that `lead` starts, or 0 if no character starts
 * with it (continuation bytes, C0/C1 overlong leads, F5..FF). */
int utf8_seq_len(unsigned char lead) {
    if (lead < 0x80) return 1;
    if (lead >= 0xc2 && lead <= 0xdf) return 2;
    if (lead >= 0xe0 && lead <= 0xef) return 3;
    if (lead >= 0xf0 && lead <= 0xf4) return 4;
    return 0;
}

/* Whether b may be byte `pos` (>= 1) of a character led by `lead`. The second
 * byte's narrower ranges exclude overlongs (E0, F0), surrogates (ED) and code
 * points above U+10FFFF (F4). */
bool utf8_cont_ok(unsigned char lead, int pos, unsigned char b) {
    unsigned char lo = 0x80, hi = 0xbf;
    if (pos == 1) {
        if (lead == 0xe0) lo = 0xa0;
        else if (lead == 0xed) hi = 0x9f;
        else if (lead == 0xf0) lo = 0x90;
        else if (lead == 0xf4) hi = 0x8f;
    }
    return b >= lo && b <= hi;
}

/* Decodes one character at s (n > 0 bytes): its length, or 0 if invalid. */
int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    int len = utf8_seq_len(s[0]);
    if (len == 0 || (size_t)len > n) return 0;
    static const unsigned char lead_mask[5] = {0, 0x7f, 0x1f, 0x0f, 0x07};
    uint32_t c = s[0] & lead_mask[len];
    for (int i = 1; i < len; i++) {
        if (!utf8_cont_ok(s[0], i, s[i])) return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    *cp = c;
    return len;
}

