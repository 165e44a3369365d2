/*
 * idna.c - domains to A-labels through libidn2; see idna.h.
 */
#include <stdlib.h>
#include <string.h>

#include <idn2.h>

#include "err.h"
#include "idna.h"

bool
idna_has_non_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return true;
    return false;
}

static void
lower_into(const char *s, char *out)
{
    for (; *s; s++, out++)
        *out = *s >= 'A' && *s <= 'Z' ? (char)(*s - 'A' + 'a') : *s;
    *out = '\0';
}

int
idna_to_ascii(const char *domain, char *out, size_t outlen)
{
    char *ascii = NULL;
    size_t n;
    int rc;

    if (outlen == 0)
        return ERR_TOO_BIG;
    if (domain[0] == '[' || !idna_has_non_ascii(domain)) {
        if (strlen(domain) >= outlen)
            return ERR_TOO_BIG;
        lower_into(domain, out);
        return 0;
    }
    /* IDNA2008 with the UTS #46 non-transitional mapping (as browsers and
     * current resolvers do): "ß" stays "ß", upper case is mapped to lower
     * case, and the input is NFC-normalised first. */
    rc =
        idn2_to_ascii_8z(domain, &ascii, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
    if (rc != IDN2_OK) {
        idn2_free(ascii);
        return ERR_INVAL;
    }
    n = strlen(ascii);
    if (n >= outlen) {
        idn2_free(ascii);
        return ERR_TOO_BIG;
    }
    lower_into(ascii, out);
    idn2_free(ascii);
    return 0;
}
