/*
 * fuzz_base64.c - libFuzzer target for the strict base64 decoder
 * (lib/base64.h), the first step of every SASL response and stored
 * password hash.
 *
 * Byte 0 picks the form (bit 0: unpadded) and the room given to the
 * decoder (bits 1-7: that many bytes short of enough, 0 meaning exactly
 * enough); the rest is the text. Whatever the bytes, the decoder must not
 * crash or write past its room, and:
 *   - it accepts a text only when re-encoding the bytes gives that very
 *     text (one spelling per octet string, RFC 4648 3.5);
 *   - with enough room, it refuses only texts that are not canonical
 *     base64, and then no prefix of the room is promised.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/base64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum base64_form form;
    size_t n, room, enough, short_by;
    const char *text;
    unsigned char *out;
    char *again;
    long k;

    if (size < 1 || size > 65536)
        return 0;
    form = data[0] & 1 ? BASE64_UNPADDED : BASE64_PADDED;
    short_by = data[0] >> 1;
    text = (const char *)data + 1;
    n = size - 1;
    enough = n / 4 * 3 + 2;
    room = short_by < enough ? enough - short_by : 0;
    /* Exactly room bytes, so ASan catches a write past them. */
    out = malloc(room ? room : 1);
    k = base64_decode(text, n, out, room, form);
    if (k >= 0) {
        if ((size_t)k > room)
            abort();
        again = malloc(base64_encoded_len((size_t)k, form) + 1);
        base64_encode(out, (size_t)k, again, form);
        if (strlen(again) != n || memcmp(again, text, n) != 0)
            abort(); /* accepted a text that is not the canonical one */
        free(again);
    } else if (short_by == 0) {
        /* Refused with enough room: the text must break a rule, checked
         * here a second way: its length, its alphabet, or the unused bits
         * of its last character. */
        static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijk"
                                  "lmnopqrstuvwxyz0123456789+/";
        size_t pad = 0, body, i;
        int v, unused;

        if (form == BASE64_PADDED && n % 4 == 0 && n > 0 && text[n - 1] == '=')
            pad = n > 1 && text[n - 2] == '=' ? 2 : 1;
        body = n - pad;
        if (form == BASE64_PADDED ? n % 4 != 0 : n % 4 == 1)
            goto done; /* a wrong length */
        for (i = 0; i < body; i++)
            if (text[i] == '\0' || strchr(abc, text[i]) == NULL)
                goto done; /* outside the alphabet */
        unused = body % 4 == 2 ? 4 : body % 4 == 3 ? 2 : 0;
        if (unused == 0)
            abort(); /* refused a text with no unused bits */
        v = (int)(strchr(abc, text[body - 1]) - abc);
        if ((v & ((1 << unused) - 1)) == 0)
            abort(); /* refused a text whose unused bits are zero */
    }
done:
    free(out);
    return 0;
}
