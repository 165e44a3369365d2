/*
 * base64.h - the base64 of RFC 4648 section 4 (standard alphabet), one
 * encoder and one strict decoder for every user: SASL responses in SMTP
 * AUTH (RFC 4954 4) and IMAP AUTHENTICATE (RFC 3501 6.2.2), the auth
 * actor's PLAIN and LOGIN decoding, and the salt and key of a stored
 * password hash (PHC strings, unpadded).
 *
 * The decoder accepts the canonical spelling only: no white space, no
 * characters outside the alphabet, "=" only as the last one or two
 * characters of a padded text, and the unused low bits of the last
 * character zero (RFC 4648 3.5), so that every octet string has exactly
 * one encoding ("QQ==" is "A"; "QR==" is refused). Buffers are the
 * caller's; nothing here allocates.
 */
#ifndef SAMOTOP_BASE64_H
#define SAMOTOP_BASE64_H

#include <stddef.h>

enum base64_form {
    BASE64_PADDED,   /* length a multiple of 4, "=" padding (RFC 4648 4) */
    BASE64_UNPADDED, /* no "=", the last group 2 or 3 characters (3.2) */
};

/* The value (0-63) of c in the base64 alphabet whose 64th character is
 * last: '/' for RFC 4648's, ',' for IMAP's modified base64 of mailbox
 * names (RFC 3501 5.1.3). -1 when c is not in it. */
int base64_digit(unsigned char c, char last);

/* The characters base64_encode() writes for n bytes, without the NUL. */
size_t base64_encoded_len(size_t n, enum base64_form form);

/* Encodes n bytes of in into out, which has room for
 * base64_encoded_len(n, form) + 1 characters; out is NUL-terminated. */
void base64_encode(const void *in, size_t n, char *out, enum base64_form form);

/* Decodes n characters of in into out (room for max bytes). Returns the
 * number of bytes, or -1 when in is not canonical base64 of the form or
 * its bytes do not fit in max. A buffer of n / 4 * 3 + 2 bytes always fits. */
long base64_decode(const char *in, size_t n, void *out, size_t max,
                   enum base64_form form);

#endif
