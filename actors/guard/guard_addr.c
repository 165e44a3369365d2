/*
 * guard_addr.c - the guard's view of an address, on top of lib/smtp_addr.h.
 *
 * The guard parses with the same code as the listener, so the two can
 * never disagree on where the local part ends and the domain begins:
 * whatever this returns as the domain is the domain mail goes to. '%' and
 * '!' are plain local-part characters, a quoted local part is unquoted and
 * stays a local part, and a source route is dropped (RFC 5321 section
 * 4.1.1.3: the final mailbox is the one that counts).
 *
 * A domain in UTF-8 (U-labels, RFC 6531 3.2) comes out as its A-labels
 * (lib/idna.h), the form our domains are stored in (schemas/redis.md) and
 * the only one the DNS knows: "bücher.test" and "xn--bcher-kva.test" are
 * the same domain here, as they are everywhere else.
 */
#include <stdio.h>
#include <string.h>

#include "guard.h"
#include "lib/err.h"
#include "lib/idna.h"

bool
guard_addr_is_literal(const char *domain)
{
    return domain[0] == '[';
}

void
guard_lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

int
guard_addr_parse(const char *text, struct guard_addr *out)
{
    char buf[SMTP_PATH_MAX + 3];
    struct smtp_path p;
    size_t n = strlen(text), used = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    if (n > 0 && text[0] == '<') {
        rc = smtp_path_parse(text, n, SMTP_ADDR_UTF8, &p, &used, NULL);
    } else {
        /* The listener sends paths without their brackets; a path parse
         * still takes a source route, where a bare mailbox parse would
         * refuse it. */
        if (n + 2 >= sizeof(buf))
            return ERR_INVAL;
        buf[0] = '<';
        memcpy(buf + 1, text, n);
        buf[n + 1] = '>';
        n += 2;
        rc = smtp_path_parse(buf, n, SMTP_ADDR_UTF8, &p, &used, NULL);
    }
    /* "<Postmaster>" without a domain (RFC 5321 4.1.1.3) is no address
     * here: guard_resolve_new() takes it as the top recipient only. */
    if (rc != 0 || used != n || p.null || p.postmaster)
        return ERR_INVAL;
    if (idna_to_ascii(p.domain, out->domain, sizeof(out->domain)) != 0)
        return ERR_INVAL;
    snprintf(out->local, sizeof(out->local), "%s", p.local);
    return 0;
}

int
guard_addr_format(const char *local, const char *domain, char *out,
                  size_t outlen)
{
    size_t q = smtp_local_quote(local, strlen(local), true, out, outlen);
    int n;

    if (q >= outlen)
        return ERR_INVAL;
    n = snprintf(out + q, outlen - q, "@%s", domain);
    return n >= 0 && (size_t)n < outlen - q ? 0 : ERR_INVAL;
}
