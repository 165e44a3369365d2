/*
 * json_check.h - a strict JSON checker for the tests and the fuzzers.
 *
 * envelope_to_json() feeds the bus tap and anything that parses its output,
 * so "valid JSON" is checked by this small recursive-descent reader of RFC
 * 8259 rather than by eye: one value and nothing but white space after it,
 * no raw control characters in strings, only the escapes JSON knows, paired
 * surrogate escapes, strict UTF-8 (no overlong forms, no surrogates, nothing
 * past U+10FFFF) and numbers in JSON's own grammar. Header-only, so that a
 * fuzz target can use it without linking the test helpers.
 */
#ifndef SAMOTOP_TEST_JSON_CHECK_H
#define SAMOTOP_TEST_JSON_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

struct json_check {
    const unsigned char *p, *end, *start;
    char *why;
    size_t whylen;
    int depth;
};

/* Deeper than anything envelope_to_json() can produce from a decoded
 * envelope (the codec stops at 16 levels). */
#define JSON_CHECK_MAX_DEPTH 64

static bool json_check_value(struct json_check *j);

static bool
json_check_fail(struct json_check *j, const char *what)
{
    if (j->why && j->whylen)
        snprintf(j->why, j->whylen, "%s at offset %td", what,
                 j->p - j->start);
    return false;
}

static void
json_check_ws(struct json_check *j)
{
    while (j->p < j->end &&
           (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static bool
json_check_lit(struct json_check *j, const char *lit)
{
    for (; *lit; lit++, j->p++)
        if (j->p >= j->end || *j->p != (unsigned char)*lit)
            return json_check_fail(j, "bad literal");
    return true;
}

/* Length of the well-formed UTF-8 sequence at p (Unicode 3.9, table 3-7),
 * or 0 when there is none. */
static size_t
json_check_utf8(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xbf;
    size_t n;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4;
    else
        return 0;
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return n;
}

static int
json_check_hex4(struct json_check *j)
{
    int v = 0;

    if (j->end - j->p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        unsigned char c = *j->p++;

        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    return v;
}

static bool
json_check_string(struct json_check *j)
{
    j->p++; /* the opening quote */
    while (j->p < j->end) {
        unsigned char c = *j->p;
        size_t n;

        if (c == '"') {
            j->p++;
            return true;
        }
        if (c < 0x20)
            return json_check_fail(j, "raw control character in string");
        if (c == '\\') {
            int u;

            if (++j->p >= j->end)
                break;
            c = *j->p++;
            if (c != 'u') {
                if (!strchr("\"\\/bfnrt", c) || c == '\0')
                    return json_check_fail(j, "unknown escape");
                continue;
            }
            if ((u = json_check_hex4(j)) < 0)
                return json_check_fail(j, "bad \\u escape");
            if (u >= 0xdc00 && u <= 0xdfff)
                return json_check_fail(j, "lone low surrogate escape");
            if (u >= 0xd800 && u <= 0xdbff) {
                if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
                    return json_check_fail(j, "lone high surrogate escape");
                j->p += 2;
                u = json_check_hex4(j);
                if (u < 0xdc00 || u > 0xdfff)
                    return json_check_fail(j, "bad surrogate pair");
            }
            continue;
        }
        if ((n = json_check_utf8(j->p, j->end)) == 0)
            return json_check_fail(j, "invalid UTF-8 in string");
        j->p += n;
    }
    return json_check_fail(j, "unterminated string");
}

static bool
json_check_digits(struct json_check *j)
{
    const unsigned char *s = j->p;

    while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
        j->p++;
    return j->p > s;
}

static bool
json_check_number(struct json_check *j)
{
    if (*j->p == '-')
        j->p++;
    if (j->p < j->end && *j->p == '0')
        j->p++;
    else if (j->p >= j->end || *j->p < '1' || *j->p > '9' ||
             !json_check_digits(j))
        return json_check_fail(j, "bad number");
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!json_check_digits(j))
            return json_check_fail(j, "no digits after the point");
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (!json_check_digits(j))
            return json_check_fail(j, "no digits in the exponent");
    }
    return true;
}

static bool
json_check_container(struct json_check *j, unsigned char close)
{
    bool first = true;

    if (++j->depth > JSON_CHECK_MAX_DEPTH)
        return json_check_fail(j, "nested too deep");
    j->p++;
    json_check_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        j->depth--;
        return true;
    }
    for (;;) {
        if (!first) {
            json_check_ws(j);
            if (j->p < j->end && *j->p == close) {
                j->p++;
                j->depth--;
                return true;
            }
            if (j->p >= j->end || *j->p != ',')
                return json_check_fail(j, "expected , or a close");
            j->p++;
        }
        first = false;
        json_check_ws(j);
        if (close == '}') {
            if (j->p >= j->end || *j->p != '"')
                return json_check_fail(j, "object key is not a string");
            if (!json_check_string(j))
                return false;
            json_check_ws(j);
            if (j->p >= j->end || *j->p != ':')
                return json_check_fail(j, "expected :");
            j->p++;
        }
        if (!json_check_value(j))
            return false;
    }
}

static bool
json_check_value(struct json_check *j)
{
    json_check_ws(j);
    if (j->p >= j->end)
        return json_check_fail(j, "value expected");
    switch (*j->p) {
    case '{':
        return json_check_container(j, '}');
    case '[':
        return json_check_container(j, ']');
    case '"':
        return json_check_string(j);
    case 't':
        return json_check_lit(j, "true");
    case 'f':
        return json_check_lit(j, "false");
    case 'n':
        return json_check_lit(j, "null");
    default:
        if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9'))
            return json_check_number(j);
        return json_check_fail(j, "unexpected character");
    }
}

/* Whether s[0..len) is one JSON text; when not, why says where and what. */
static inline bool
json_valid(const char *s, size_t len, char *why, size_t whylen)
{
    struct json_check j = {(const unsigned char *)s,
                           (const unsigned char *)s + len,
                           (const unsigned char *)s, why, whylen, 0};

    if (!json_check_value(&j))
        return false;
    json_check_ws(&j);
    if (j.p != j.end)
        return json_check_fail(&j, "bytes after the value");
    return true;
}

#endif
