/*
 * admin_size.c - sizes as an administrator types them ("50M", "2G",
 * "none") and as samotop-admin prints them; no I/O.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "admin.h"

int
admin_size_parse(const char *s, uint64_t *out, const char **why)
{
    uint64_t n = 0, mult = 1;
    size_t len = strlen(s), i = 0;

    *why = NULL;
    if (len == 0 || len > ADMIN_SIZE_TEXT_MAX) {
        *why = len == 0 ? "empty" : "too long";
        return -1;
    }
    if (strcasecmp(s, "none") == 0) {
        *out = 0;
        return 0;
    }
    for (; i < len && isdigit((unsigned char)s[i]); i++) {
        if (n > (ADMIN_SIZE_MAX - (uint64_t)(s[i] - '0')) / 10) {
            *why = "too large";
            return -1;
        }
        n = n * 10 + (uint64_t)(s[i] - '0');
    }
    if (i == 0) {
        *why = "not a number";
        return -1;
    }
    if (i < len) {
        /* K, M, G, T are powers of 1024, as du -h and quota tools mean
         * them; a trailing "B" or "iB" is allowed ("10MB", "10MiB"). */
        switch (toupper((unsigned char)s[i])) {
        case 'K':
            mult = 1ull << 10;
            break;
        case 'M':
            mult = 1ull << 20;
            break;
        case 'G':
            mult = 1ull << 30;
            break;
        case 'T':
            mult = 1ull << 40;
            break;
        case 'B':
            mult = 1;
            i--;
            break;
        default:
            *why = "unknown unit (use K, M, G or T)";
            return -1;
        }
        i++;
        if (i < len && mult > 1 && s[i] == 'i')
            i++;
        if (i < len && toupper((unsigned char)s[i]) == 'B')
            i++;
        if (i != len) {
            *why = "unknown unit (use K, M, G or T)";
            return -1;
        }
    }
    if (n > ADMIN_SIZE_MAX / mult) {
        *why = "too large";
        return -1;
    }
    *out = n * mult;
    return 0;
}

void
admin_size_format(uint64_t n, char *out, size_t len)
{
    static const char units[] = "KMGT";
    double v = (double)n;
    int u = -1;

    while (v >= 1024.0 && u < 3) {
        v /= 1024.0;
        u++;
    }
    if (u < 0)
        snprintf(out, len, "%" PRIu64, n);
    else
        snprintf(out, len, "%" PRIu64 " (%.1f%c)", n, v, units[u]);
}
