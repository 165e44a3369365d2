/*
 * idna.h - a domain name in the form our lookups use: IDNA2008 A-labels
 * (RFC 5890, 5891) in lower case, through libidn2 with the UTS #46
 * mapping. An SMTPUTF8 client may name a domain in U-labels (RFC 6531
 * 3.2: "bücher.example"); accounts, aliases and routes are stored under
 * the A-label form (schemas/redis.md), and the DNS knows only that
 * ("xn--bcher-kva.example"), so the guard, the relay and samotop-admin
 * turn every domain into it first.
 *
 * An all-ASCII name is only lower-cased: it is checked elsewhere, by the
 * address grammar (lib/smtp_addr.h). An address literal ("[...]") is
 * copied as it is. Nothing here allocates; out is the caller's.
 */
#ifndef SAMOTOP_IDNA_H
#define SAMOTOP_IDNA_H

#include <stdbool.h>
#include <stddef.h>

/* Whether s holds a byte of 0x80 or more (so may hold U-labels). */
bool idna_has_non_ascii(const char *s);

/* Writes domain's A-label form, lower case, into out (outlen bytes with
 * the NUL). Returns 0; ERR_INVAL when domain is not a valid IDNA2008
 * name (bad UTF-8, a disallowed code point, a label over 63 octets once
 * encoded), or ERR_TOO_BIG when the result does not fit. */
int idna_to_ascii(const char *domain, char *out, size_t outlen);

#endif
