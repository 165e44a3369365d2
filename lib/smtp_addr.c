/*
 * smtp_addr.c - RFC 5321 4.1.2 paths: a hand-written scanner over the ABNF,
 * one pass, no recursion, no allocation. Every limit is checked as the scan
 * goes, so a long input costs one linear pass and nothing more.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "lib/err.h"
#include "lib/smtp_addr.h"

#define IPV6_TEXT_MAX 64

struct scan {
    const char *s;
    size_t len, p;
    bool utf8; /* a non-ASCII octet was seen */
};

static int utf8_seq(const unsigned char *s, size_t n);
static bool is_atext(unsigned char c);
static int scan_domain(struct scan *sc, char *dst, size_t *dlen, bool *literal,
                       const char **why);
static int scan_local(struct scan *sc, char *dst, size_t *dlen, bool *quoted,
                      const char **why);

static int
fail(const char **why, const char *reason, int err)
{
    if (why)
        *why = reason;
    return err;
}

static char
lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool
is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9');
}

/* RFC 5322 3.2.3 atext, which RFC 5321 4.1.2 uses for Atom. */
static bool
is_atext(unsigned char c)
{
    return is_alnum(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* The length of the well-formed UTF-8 sequence at s (n bytes available),
 * or 0 when it is not one (RFC 3629 4). */
static int
utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    int len;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t)len > n)
        return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

bool
smtp_utf8_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;

    for (size_t i = 0; i < len;) {
        int n = utf8_seq(u + i, len - i);

        if (n == 0)
            return false;
        i += (size_t)n;
    }
    return true;
}

/*
 * Local-part = Dot-string / Quoted-string (RFC 5321 4.1.2), with RFC 6531
 * 3.3's UTF8-non-ascii in atext and qtextSMTP. Writes the decoded local
 * part to dst (SMTP_LOCAL_MAX + 1); the transmitted form is at most
 * SMTP_LOCAL_MAX octets (4.5.3.1.1), so the decoded one fits.
 */
static int
scan_local(struct scan *sc, char *dst, size_t *dlen, bool *quoted,
           const char **why)
{
    const unsigned char *u = (const unsigned char *)sc->s;
    size_t start = sc->p, n = 0;

    *quoted = false;
    if (sc->p < sc->len && u[sc->p] == '"') {
        *quoted = true;
        sc->p++;
        for (;;) {
            unsigned char c;

            if (sc->p - start > SMTP_LOCAL_MAX)
                return fail(why, "local part longer than 64 octets",
                            ERR_TOO_BIG);
            if (sc->p >= sc->len)
                return fail(why, "unterminated quoted string", ERR_INVAL);
            c = u[sc->p];
            if (c == '"')
                break;
            if (c == '\\') {
                /* quoted-pairSMTP = %d92 %d32-126 */
                if (sc->p + 1 >= sc->len || u[sc->p + 1] < 32 ||
                    u[sc->p + 1] > 126)
                    return fail(why, "bad quoted pair", ERR_INVAL);
                dst[n++] = (char)u[sc->p + 1];
                sc->p += 2;
            } else if (c >= 0x80) {
                int k = utf8_seq(u + sc->p, sc->len - sc->p);

                if (k == 0)
                    return fail(why, "malformed UTF-8", ERR_INVAL);
                if (sc->p + (size_t)k - start > SMTP_LOCAL_MAX)
                    return fail(why, "local part longer than 64 octets",
                                ERR_TOO_BIG);
                memcpy(dst + n, u + sc->p, (size_t)k);
                n += (size_t)k;
                sc->p += (size_t)k;
                sc->utf8 = true;
            } else if (c >= 32 && c <= 126) {
                /* qtextSMTP = %d32-33 / %d35-91 / %d93-126 */
                dst[n++] = (char)c;
                sc->p++;
            } else {
                return fail(why, "control character in quoted string",
                            ERR_INVAL);
            }
        }
        sc->p++; /* the closing quote */
        if (sc->p - start > SMTP_LOCAL_MAX)
            return fail(why, "local part longer than 64 octets", ERR_TOO_BIG);
    } else {
        /* Dot-string = Atom *("." Atom) */
        bool want_atext = true;

        for (;;) {
            unsigned char c;

            if (sc->p - start > SMTP_LOCAL_MAX)
                return fail(why, "local part longer than 64 octets",
                            ERR_TOO_BIG);
            if (sc->p >= sc->len)
                break;
            c = u[sc->p];
            if (c == '.' && !want_atext) {
                want_atext = true;
            } else if (is_atext(c)) {
                want_atext = false;
            } else if (c >= 0x80) {
                int k = utf8_seq(u + sc->p, sc->len - sc->p);

                if (k == 0)
                    return fail(why, "malformed UTF-8", ERR_INVAL);
                if (sc->p + (size_t)k - start > SMTP_LOCAL_MAX)
                    return fail(why, "local part longer than 64 octets",
                                ERR_TOO_BIG);
                memcpy(dst + n, u + sc->p, (size_t)k);
                n += (size_t)k;
                sc->p += (size_t)k;
                sc->utf8 = true;
                want_atext = false;
                continue;
            } else {
                break;
            }
            dst[n++] = (char)c;
            sc->p++;
        }
        if (n == 0)
            return fail(why, "empty local part", ERR_INVAL);
        if (want_atext)
            return fail(why, "local part ends with a dot or has two dots",
                        ERR_INVAL);
    }
    dst[n] = '\0';
    *dlen = n;
    return 0;
}

/* IPv4-address-literal = Snum 3("." Snum), Snum 0..255 in 1-3 digits. */
static bool
ipv4_literal(const char *s, size_t len)
{
    size_t i = 0;

    for (int part = 0; part < 4; part++) {
        unsigned v = 0;
        size_t digits = 0;

        if (part > 0) {
            if (i >= len || s[i] != '.')
                return false;
            i++;
        }
        while (i < len && s[i] >= '0' && s[i] <= '9' && digits < 4) {
            v = v * 10 + (unsigned)(s[i] - '0');
            digits++;
            i++;
        }
        if (digits == 0 || digits > 3 || v > 255)
            return false;
    }
    return i == len;
}

/*
 * Domain / address-literal (RFC 5321 4.1.2, 4.1.3), written normalised to
 * dst (SMTP_DOMAIN_MAX + 1): letters in lower case, the IPv6 tag as "IPv6".
 */
static int
scan_domain(struct scan *sc, char *dst, size_t *dlen, bool *literal,
            const char **why)
{
    const unsigned char *u = (const unsigned char *)sc->s;
    size_t start = sc->p, n = 0;

    *literal = false;
    if (sc->p < sc->len && u[sc->p] == '[') {
        size_t open = sc->p + 1, end, colon = 0;

        *literal = true;
        for (end = open; end < sc->len && u[end] != ']'; end++) {
            /* dcontent = %d33-90 / %d94-126 */
            if (u[end] < 33 || u[end] > 126 || u[end] == '[' || u[end] == '\\')
                return fail(why, "bad character in address literal", ERR_INVAL);
            if (u[end] == ':' && colon == 0)
                colon = end;
            if (end + 1 - start > SMTP_DOMAIN_MAX)
                return fail(why, "domain longer than 255 octets", ERR_TOO_BIG);
        }
        if (end >= sc->len)
            return fail(why, "unterminated address literal", ERR_INVAL);
        if (end + 1 - start > SMTP_DOMAIN_MAX)
            return fail(why, "domain longer than 255 octets", ERR_TOO_BIG);
        if (colon == 0) {
            if (!ipv4_literal(sc->s + open, end - open))
                return fail(why, "bad IPv4 address literal", ERR_INVAL);
            memcpy(dst, sc->s + start, end + 1 - start);
            n = end + 1 - start;
        } else {
            char text[IPV6_TEXT_MAX];
            unsigned char bin[16];
            size_t tlen = end - colon - 1;

            /* General-address-literal: only the IPv6 tag is registered
             * (4.1.3); any other Standardized-tag cannot be delivered. */
            if (colon - open != 4 || strncasecmp(sc->s + open, "IPv6", 4))
                return fail(why, "unknown address literal tag", ERR_INVAL);
            if (tlen == 0 || tlen >= sizeof(text))
                return fail(why, "bad IPv6 address literal", ERR_INVAL);
            memcpy(text, sc->s + colon + 1, tlen);
            text[tlen] = '\0';
            if (inet_pton(AF_INET6, text, bin) != 1)
                return fail(why, "bad IPv6 address literal", ERR_INVAL);
            memcpy(dst, "[IPv6:", 6);
            n = 6;
            for (size_t i = 0; i < tlen; i++)
                dst[n++] = lower(text[i]);
            dst[n++] = ']';
        }
        sc->p = end + 1;
        dst[n] = '\0';
        *dlen = n;
        return 0;
    }

    /* Domain = sub-domain *("." sub-domain); sub-domain = Let-dig
     * [Ldh-str], or a U-label under RFC 6531 3.3. Labels are 63 octets at
     * most (RFC 1035 2.3.4). */
    for (;;) {
        size_t label = 0;
        unsigned char last = 0;

        for (;;) {
            unsigned char c;

            if (sc->p >= sc->len)
                break;
            c = u[sc->p];
            if (is_alnum(c) || (c == '-' && label > 0)) {
                dst[n++] = lower((char)c);
                sc->p++;
                label++;
                last = c;
            } else if (c >= 0x80) {
                int k = utf8_seq(u + sc->p, sc->len - sc->p);

                if (k == 0)
                    return fail(why, "malformed UTF-8", ERR_INVAL);
                if (n + (size_t)k > SMTP_DOMAIN_MAX)
                    return fail(why, "domain longer than 255 octets",
                                ERR_TOO_BIG);
                memcpy(dst + n, u + sc->p, (size_t)k);
                n += (size_t)k;
                sc->p += (size_t)k;
                label += (size_t)k;
                last = 'a';
                sc->utf8 = true;
            } else {
                break;
            }
            if (n > SMTP_DOMAIN_MAX)
                return fail(why, "domain longer than 255 octets", ERR_TOO_BIG);
            if (label > 63)
                return fail(why, "domain label longer than 63 octets",
                            ERR_INVAL);
        }
        if (label == 0)
            return fail(why, n == 0 ? "missing domain" : "empty domain label",
                        ERR_INVAL);
        if (last == '-')
            return fail(why, "domain label ends with a hyphen", ERR_INVAL);
        if (sc->p < sc->len && u[sc->p] == '.') {
            if (n + 1 > SMTP_DOMAIN_MAX)
                return fail(why, "domain longer than 255 octets", ERR_TOO_BIG);
            dst[n++] = '.';
            sc->p++;
            continue;
        }
        break;
    }
    dst[n] = '\0';
    *dlen = n;
    return 0;
}

bool
smtp_local_needs_quoting(const char *local, size_t len, bool utf8)
{
    const unsigned char *u = (const unsigned char *)local;
    bool dot_ok = false;

    if (len == 0 || local[0] == '.' || local[len - 1] == '.')
        return true;
    for (size_t i = 0; i < len;) {
        if (u[i] == '.') {
            if (!dot_ok)
                return true;
            dot_ok = false;
            i++;
        } else if (u[i] >= 0x80) {
            int k = utf8_seq(u + i, len - i);

            if (!utf8 || k == 0)
                return true;
            i += (size_t)k;
            dot_ok = true;
        } else if (is_atext(u[i])) {
            i++;
            dot_ok = true;
        } else {
            return true;
        }
    }
    return false;
}

size_t
smtp_local_quote(const char *local, size_t len, bool utf8, char *dst,
                 size_t size)
{
    size_t n = 0;

#define PUT(c)                                                                 \
    do {                                                                       \
        if (n + 1 < size)                                                      \
            dst[n] = (c);                                                      \
        n++;                                                                   \
    } while (0)

    if (!smtp_local_needs_quoting(local, len, utf8)) {
        for (size_t i = 0; i < len; i++)
            PUT(local[i]);
    } else {
        PUT('"');
        for (size_t i = 0; i < len; i++) {
            if (local[i] == '"' || local[i] == '\\')
                PUT('\\');
            PUT(local[i]);
        }
        PUT('"');
    }
#undef PUT
    if (size > 0)
        dst[n < size ? n : size - 1] = '\0';
    return n;
}

int
smtp_path_parse(const char *s, size_t len, unsigned flags,
                struct smtp_path *out, size_t *used, const char **why)
{
    struct scan sc = {s, len, 0, false};
    char route_domain[SMTP_DOMAIN_MAX + 1];
    size_t llen = 0, dlen = 0, q;
    bool lit;
    int rc;

    memset(out, 0, sizeof(*out));
    if (used)
        *used = 0;
    if (why)
        *why = "ok";
    if (len == 0 || s[0] != '<')
        return fail(why, "path not in angle brackets", ERR_INVAL);
    sc.p = 1;
    if (sc.p < len && s[sc.p] == '>') {
        /* Reverse-path = Path / "<>" (4.1.2): only for MAIL. */
        if (!(flags & SMTP_ADDR_NULL_OK))
            return fail(why, "null path not allowed", ERR_INVAL);
        out->null = true;
        if (used)
            *used = 2;
        return 0;
    }

    /* A-d-l = At-domain *( "," At-domain ): read and checked, then dropped
     * (4.1.1.3: servers SHOULD NOT use the source route, MAY drop it). */
    if (sc.p < len && s[sc.p] == '@') {
        out->route = true;
        for (;;) {
            sc.p++; /* the "@" */
            rc = scan_domain(&sc, route_domain, &dlen, &lit, why);
            if (rc)
                return rc;
            if (sc.p - 1 > SMTP_PATH_MAX)
                return fail(why, "path longer than 256 octets", ERR_TOO_BIG);
            if (sc.p + 1 < len && s[sc.p] == ',' && s[sc.p + 1] == '@') {
                sc.p++;
                continue;
            }
            if (sc.p < len && s[sc.p] == ':') {
                sc.p++;
                break;
            }
            return fail(why, "bad source route", ERR_INVAL);
        }
    }

    rc = scan_local(&sc, out->local, &llen, &out->quoted, why);
    if (rc)
        return rc;

    if (sc.p < len && s[sc.p] == '>' && !out->quoted && !out->route &&
        (flags & SMTP_ADDR_POSTMASTER) && llen == 10 &&
        strncasecmp(out->local, "postmaster", 10) == 0) {
        /* "<Postmaster>" (4.1.1.3): the one mailbox without a domain. */
        out->postmaster = true;
        strcpy(out->mailbox, "postmaster");
        strcpy(out->local, "postmaster");
        if (used)
            *used = sc.p + 1;
        return 0;
    }
    if (sc.p >= len || s[sc.p] != '@')
        return fail(why, sc.p >= len ? "unterminated path" : "missing @",
                    ERR_INVAL);
    sc.p++;
    rc = scan_domain(&sc, out->domain, &dlen, &out->literal, why);
    if (rc)
        return rc;
    if (sc.p >= len || s[sc.p] != '>')
        return fail(why,
                    sc.p >= len ? "unterminated path" : "junk after domain",
                    ERR_INVAL);
    sc.p++;
    /* 4.5.3.1.3: the path counts its punctuation. */
    if (sc.p > SMTP_PATH_MAX)
        return fail(why, "path longer than 256 octets", ERR_TOO_BIG);
    out->utf8 = sc.utf8;
    if (sc.utf8 && !(flags & SMTP_ADDR_UTF8))
        return fail(why, "non-ASCII address without SMTPUTF8", ERR_INVAL);

    q = smtp_local_quote(out->local, llen, out->utf8, out->mailbox,
                         sizeof(out->mailbox));
    /* The normalised local part is never longer than the one sent, and
     * the path bounds the rest, so this always fits. */
    snprintf(out->mailbox + q, sizeof(out->mailbox) - q, "@%s", out->domain);
    if (used)
        *used = sc.p;
    return 0;
}

int
smtp_mailbox_parse(const char *s, size_t len, unsigned flags,
                   struct smtp_path *out, const char **why)
{
    char tmp[SMTP_PATH_MAX + 1];
    size_t used;
    int rc;

    memset(out, 0, sizeof(*out));
    if (why)
        *why = "ok";
    if (len == 0) {
        if (!(flags & SMTP_ADDR_NULL_OK))
            return fail(why, "empty address", ERR_INVAL);
        out->null = true;
        return 0;
    }
    if (len + 2 > SMTP_PATH_MAX)
        return fail(why, "path longer than 256 octets", ERR_TOO_BIG);
    tmp[0] = '<';
    memcpy(tmp + 1, s, len);
    tmp[len + 1] = '>';
    rc = smtp_path_parse(tmp, len + 2, flags & ~(unsigned)SMTP_ADDR_NULL_OK,
                         out, &used, why);
    if (rc)
        return rc;
    if (out->route || used != len + 2) {
        memset(out, 0, sizeof(*out));
        return fail(why, "not a mailbox", ERR_INVAL);
    }
    return 0;
}

static int
hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool
smtp_xtext_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;

    for (size_t i = 0; i < len; i++) {
        if (u[i] == '+') {
            /* hexchar = "+" 2(%x30-39 / %x41-46) */
            if (i + 2 >= len || hexval(u[i + 1]) < 0 || hexval(u[i + 2]) < 0)
                return false;
            i += 2;
        } else if (u[i] < 33 || u[i] > 126 || u[i] == '=') {
            return false;
        }
    }
    return true;
}

size_t
smtp_xtext_decode(const char *s, size_t len, char *dst, size_t size)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        char c = (char)u[i];

        if (u[i] == '+' && i + 2 < len && hexval(u[i + 1]) >= 0 &&
            hexval(u[i + 2]) >= 0) {
            c = (char)(hexval(u[i + 1]) << 4 | hexval(u[i + 2]));
            i += 2;
        }
        if (n + 1 < size)
            dst[n] = c;
        n++;
    }
    if (size > 0)
        dst[n < size ? n : size - 1] = '\0';
    return n;
}
