/*
 * auth_sasl.c - what a client sent for PLAIN (RFC 4616) and LOGIN, decoded
 * and checked, and login names turned into accounts.
 *
 * Nothing here touches Redis, the bus or a log: a caller decides what to
 * answer and what to log, and must never log what these functions read.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include <openssl/crypto.h>

#include "auth.h"
#include "lib/base64.h"
#include "lib/err.h"

void
auth_creds_wipe(struct auth_creds *c)
{
    OPENSSL_cleanse(c, sizeof(*c));
}

int
auth_plain_parse(const char *b64, size_t len, struct auth_creds *out)
{
    unsigned char msg[AUTH_RESPONSE_MAX / 4 * 3];
    const unsigned char *nul1, *nul2, *end;
    size_t zlen, clen, plen;
    long n;
    int rc = ERR_MALFORMED;

    memset(out, 0, sizeof(*out));
    if (len > AUTH_RESPONSE_MAX)
        return ERR_TOO_BIG;
    n = base64_decode(b64, len, msg, sizeof(msg), BASE64_PADDED);
    if (n < 0)
        goto out;
    end = msg + n;
    /* message = [authzid] NUL authcid NUL passwd: exactly two NULs. */
    nul1 = memchr(msg, '\0', (size_t)n);
    if (nul1 == NULL)
        goto out;
    nul2 = memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1));
    if (nul2 == NULL || memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)))
        goto out;
    zlen = (size_t)(nul1 - msg);
    clen = (size_t)(nul2 - nul1 - 1);
    plen = (size_t)(end - nul2 - 1);
    if (clen == 0)
        goto out;
    if (zlen > AUTH_NAME_MAX || clen > AUTH_NAME_MAX ||
        plen > AUTH_PASSWORD_MAX) {
        rc = ERR_TOO_BIG;
        goto out;
    }
    memcpy(out->authzid, msg, zlen);
    memcpy(out->authcid, nul1 + 1, clen);
    memcpy(out->password, nul2 + 1, plen);
    out->password_len = plen;
    rc = 0;
out:
    OPENSSL_cleanse(msg, sizeof(msg));
    if (rc != 0)
        auth_creds_wipe(out);
    return rc;
}

int
auth_login_take(const char *user, size_t ulen, const char *pass, size_t plen,
                struct auth_creds *out)
{
    memset(out, 0, sizeof(*out));
    if (ulen == 0 || memchr(user, '\0', ulen) || memchr(pass, '\0', plen))
        return ERR_MALFORMED;
    if (ulen > AUTH_NAME_MAX || plen > AUTH_PASSWORD_MAX)
        return ERR_TOO_BIG;
    memcpy(out->authcid, user, ulen);
    memcpy(out->password, pass, plen);
    out->password_len = plen;
    return 0;
}

static void
lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

int
auth_account_parse(const char *name, struct auth_account *out)
{
    struct smtp_path p;
    int n;

    memset(out, 0, sizeof(*out));
    if (smtp_mailbox_parse(name, strlen(name), 0, &p, NULL) != 0 || p.null ||
        p.postmaster || p.literal || p.domain[0] == '\0' ||
        smtp_local_needs_quoting(p.local, strlen(p.local), false))
        return ERR_INVAL;
    /* The forms samotop-admin stores (schemas/redis.md). */
    snprintf(out->local, sizeof(out->local), "%s", p.local);
    snprintf(out->domain, sizeof(out->domain), "%s", p.domain);
    lower(out->local);
    lower(out->domain);
    n = snprintf(out->name, sizeof(out->name), "%s@%s", out->local,
                 out->domain);
    if (n < 0 || (size_t)n >= sizeof(out->name))
        return ERR_INVAL;
    return 0;
}
