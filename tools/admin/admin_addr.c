/*
 * admin_addr.c - the addresses and domains an administrator types, checked
 * with lib/smtp_addr.h (RFC 5321 4.1.2) and put in the form schemas/redis.md
 * keeps: domains in lower case and A-labels, local parts of ours in lower
 * case.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "admin.h"
#include "lib/idna.h"

static void
lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/*
 * s with a domain in U-labels turned into its A-labels (RFC 5890; lib/
 * idna.h), the one form schemas/redis.md stores and the DNS knows, into
 * out: the whole of s when is_domain, else the part after its last "@".
 * A non-ASCII local part is refused: accounts and aliases are ASCII.
 */
static int
to_ascii(const struct admin_cmd *cmd, const char *s, bool is_domain, char *out,
         size_t outlen)
{
    const char *at = is_domain ? NULL : strrchr(s, '@');
    const char *dom = is_domain ? s : at ? at + 1 : "";
    size_t llen = is_domain ? 0 : at ? (size_t)(at - s) : strlen(s);
    char ascii[SMTP_DOMAIN_MAX + 1];
    int n;

    if (!idna_has_non_ascii(s)) {
        snprintf(out, outlen, "%s", s);
        return 0;
    }
    for (size_t i = 0; i < llen; i++)
        if ((unsigned char)s[i] >= 0x80)
            return admin_fail(cmd,
                              "%s is not an address: non-ASCII local parts "
                              "(SMTPUTF8) are not supported",
                              s);
    if (idna_to_ascii(dom, ascii, sizeof(ascii)) != 0)
        return admin_fail(cmd, "%s is not a%s: %s is no valid IDNA domain name",
                          s, is_domain ? " domain" : "n address", dom);
    n = snprintf(out, outlen, "%.*s%s%s", (int)llen, s, is_domain ? "" : "@",
                 ascii);
    if (n < 0 || (size_t)n >= outlen)
        return admin_fail(cmd, "%s is too long", s);
    return 0;
}

static int
parse(const struct admin_cmd *cmd, const char *s, struct smtp_path *p)
{
    char ascii[SMTP_PATH_MAX + 1];
    const char *why = NULL;

    if (to_ascii(cmd, s, false, ascii, sizeof(ascii)) != 0)
        return 1;
    if (smtp_mailbox_parse(ascii, strlen(ascii), 0, p, &why) != 0)
        return admin_fail(cmd, "%s is not an address: %s", s, why);
    return 0;
}

int
admin_addr_local(const struct admin_cmd *cmd, const char *s,
                 struct admin_addr *out)
{
    struct smtp_path p;

    memset(out, 0, sizeof(*out));
    if (parse(cmd, s, &p) != 0)
        return 1;
    if (p.literal)
        return admin_fail(cmd,
                          "%s is not an address of ours: an address "
                          "literal cannot be a local domain",
                          s);
    if (smtp_local_needs_quoting(p.local, strlen(p.local), false))
        return admin_fail(cmd,
                          "%s is not an address of ours: a quoted "
                          "local part cannot be an account or alias",
                          s);
    snprintf(out->local, sizeof(out->local), "%s", p.local);
    snprintf(out->domain, sizeof(out->domain), "%s", p.domain);
    lower(out->local);
    lower(out->domain);
    snprintf(out->mailbox, sizeof(out->mailbox), "%s@%s", out->local,
             out->domain);
    return 0;
}

int
admin_addr_target(const struct admin_cmd *cmd, const char *s,
                  struct admin_addr *out)
{
    struct smtp_path p;

    memset(out, 0, sizeof(*out));
    if (parse(cmd, s, &p) != 0)
        return 1;
    snprintf(out->local, sizeof(out->local), "%s", p.local);
    snprintf(out->domain, sizeof(out->domain), "%s", p.domain);
    snprintf(out->mailbox, sizeof(out->mailbox), "%s", p.mailbox);
    if (!p.literal) {
        /* The mailbox ends with "@domain"; lower that part there too. */
        lower(out->domain);
        lower(out->mailbox + strlen(out->mailbox) - strlen(out->domain));
    }
    return 0;
}

void
admin_addr_lower(struct admin_addr *a)
{
    if (smtp_local_needs_quoting(a->local, strlen(a->local), false))
        return; /* never one of ours */
    lower(a->local);
    snprintf(a->mailbox, sizeof(a->mailbox), "%s@%s", a->local, a->domain);
}

int
admin_addr_domain(const struct admin_cmd *cmd, const char *s, char *out)
{
    char probe[SMTP_PATH_MAX + 16], ascii[SMTP_PATH_MAX + 1];
    struct smtp_path p;
    const char *why = NULL;
    int n;

    *out = '\0';
    memset(&p, 0, sizeof(p));
    snprintf(ascii, sizeof(ascii), "%s", s);
    if (*s != '\0' && !strchr(s, '@') &&
        to_ascii(cmd, s, true, ascii, sizeof(ascii)) != 0)
        return 1;
    /* The domain of a mailbox is checked by the same rules. */
    n = snprintf(probe, sizeof(probe), "postmaster@%s", ascii);
    if (*s == '\0')
        why = "empty";
    else if (strchr(s, '@'))
        why = "it holds an @ (an address?)";
    else if (n < 0 || (size_t)n >= sizeof(probe))
        why = "too long";
    else if (smtp_mailbox_parse(probe, (size_t)n, 0, &p, &why) != 0)
        ; /* why is set */
    else if (p.literal)
        why = "an address literal cannot be a local domain";
    else
        why = NULL;
    if (why)
        return admin_fail(cmd, "%s is not a domain: %s", s, why);
    snprintf(out, SMTP_DOMAIN_MAX + 1, "%s", p.domain);
    lower(out);
    return 0;
}
