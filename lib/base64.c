/*
 * base64.c - RFC 4648 section 4 base64; see base64.h.
 */
#include <stdint.h>

#include "base64.h"

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int
base64_digit(unsigned char c, char last)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == (unsigned char)last)
        return 63;
    return -1;
}

size_t
base64_encoded_len(size_t n, enum base64_form form)
{
    if (form == BASE64_PADDED)
        return (n + 2) / 3 * 4;
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

void
base64_encode(const void *in_v, size_t n, char *out, enum base64_form form)
{
    const unsigned char *in = in_v;
    size_t i;

    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v =
            (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

        *out++ = alphabet[v >> 18];
        *out++ = alphabet[(v >> 12) & 63];
        *out++ = alphabet[(v >> 6) & 63];
        *out++ = alphabet[v & 63];
    }
    if (n - i > 0) {
        uint32_t v = (uint32_t)in[i] << 16;

        if (n - i == 2)
            v |= (uint32_t)in[i + 1] << 8;
        *out++ = alphabet[v >> 18];
        *out++ = alphabet[(v >> 12) & 63];
        if (n - i == 2)
            *out++ = alphabet[(v >> 6) & 63];
        else if (form == BASE64_PADDED)
            *out++ = '=';
        if (form == BASE64_PADDED)
            *out++ = '=';
    }
    *out = '\0';
}

long
base64_decode(const char *in, size_t n, void *out_v, size_t max,
              enum base64_form form)
{
    unsigned char *out = out_v;
    size_t len = 0, pad = 0;
    uint32_t acc = 0;
    int bits = 0;

    if (form == BASE64_PADDED) {
        if (n % 4 != 0)
            return -1;
        /* "=" only as the last one or two characters (RFC 4648 4). */
        if (n > 0 && in[n - 1] == '=')
            pad = n > 1 && in[n - 2] == '=' ? 2 : 1;
    } else if (n % 4 == 1) {
        return -1; /* six bits cannot end a byte */
    }
    for (size_t i = 0; i < n - pad; i++) {
        int v = base64_digit((unsigned char)in[i], '/');

        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (len == max)
                return -1;
            out[len++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* The bits left over must be zero (RFC 4648 3.5): one spelling per
     * octet string. */
    if (acc != 0)
        return -1;
    return (long)len;
}
