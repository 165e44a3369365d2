/*
 * admin_addr.c - the addresses and domains an administrator types, checked
 * with lib/smtp_addr.h (RFC 5321 4.1.2) and put in the form schemas/redis.md
 * keeps: domains in lower case, local parts of ours in lower case.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "admin.h"

static void
lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

static bool
has_non_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return true;
    return false;
}

static int
parse(const struct admin_cmd *cmd, const char *s, struct smtp_path *p)
{
    const char *why = NULL;

    if (smtp_mailbox_parse(s, strlen(s), 0, p, &why) != 0) {
        if (has_non_ascii(s))
            why = "non-ASCII addresses (SMTPUTF8) are not supported yet; "
                  "give a domain as its IDNA A-label (xn--...)";
        return admin_fail(cmd, "%s is not an address: %s", s, why);
    }
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
    char probe[SMTP_PATH_MAX + 16];
    struct smtp_path p;
    const char *why = NULL;
    int n;

    *out = '\0';
    memset(&p, 0, sizeof(p));
    /* The domain of a mailbox is checked by the same rules. */
    n = snprintf(probe, sizeof(probe), "postmaster@%s", s);
    if (*s == '\0')
        why = "empty";
    else if (has_non_ascii(s))
        why = "non-ASCII; give its IDNA A-label (xn--...)";
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
