#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "base64.h"
#include "err.h"
#include "passwd.h"

#define PREFIX "$scrypt$"
#define SALT_MIN 8
#define SALT_MAX 64
#define KEY_MIN 16
#define KEY_MAX 64

const struct passwd_params passwd_default = {
    .ln = 15, .r = 8, .p = 1, .saltlen = 16, .keylen = 32};

static void say(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
say(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;

    if (why == NULL || whylen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* The memory OpenSSL's scrypt needs (kdf_scrypt.c: 128rp + 128r(N+2)). */
static uint64_t
scrypt_mem(const struct passwd_params *pp)
{
    uint64_t n = (uint64_t)1 << pp->ln;

    return 128ULL * (uint64_t)pp->r * (n + 2) +
           128ULL * (uint64_t)pp->r * (uint64_t)pp->p;
}

static int
params_check(const struct passwd_params *pp, char *why, size_t whylen)
{
    if (pp->ln < 1 || pp->ln > 30 || pp->r < 1 || pp->p < 1) {
        say(why, whylen, "scrypt parameters out of range");
        return ERR_INVAL;
    }
    /* scrypt: p * r < 2^30, and N < 2^(16 r). */
    if ((uint64_t)pp->r * (uint64_t)pp->p >= (1ULL << 30) ||
        (pp->r < 4 && pp->ln >= 16 * pp->r)) {
        say(why, whylen, "scrypt parameters out of range");
        return ERR_INVAL;
    }
    if (scrypt_mem(pp) > PASSWD_MAXMEM) {
        say(why, whylen, "scrypt parameters need more than %llu MiB",
            (unsigned long long)(PASSWD_MAXMEM >> 20));
        return ERR_INVAL;
    }
    if (pp->saltlen < SALT_MIN || pp->saltlen > SALT_MAX ||
        pp->keylen < KEY_MIN || pp->keylen > KEY_MAX) {
        say(why, whylen, "salt or key length out of range");
        return ERR_INVAL;
    }
    return 0;
}

/* Derives keylen bytes into key. Returns 0 or ERR_SYS. */
static int
derive(const char *password, size_t len, const unsigned char *salt,
       const struct passwd_params *pp, unsigned char *key, char *why,
       size_t whylen)
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
    EVP_KDF_CTX *ctx = NULL;
    uint64_t n = (uint64_t)1 << pp->ln, maxmem = scrypt_mem(pp);
    uint32_t r = (uint32_t)pp->r, p = (uint32_t)pp->p;
    OSSL_PARAM params[7];
    int rc = ERR_SYS;

    if (kdf == NULL) {
        say(why, whylen, "OpenSSL has no SCRYPT KDF");
        goto out;
    }
    ctx = EVP_KDF_CTX_new(kdf);
    if (ctx == NULL) {
        say(why, whylen, "out of memory");
        goto out;
    }
    /* An empty password still needs a pointer OpenSSL can copy from. */
    params[0] = OSSL_PARAM_construct_octet_string(
        OSSL_KDF_PARAM_PASSWORD, (void *)(len ? password : ""), len);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
                                                  (void *)salt, pp->saltlen);
    params[2] = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n);
    params[3] = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r);
    params[4] = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p);
    /* OpenSSL's own limit is 32 MiB, just under what the default needs. */
    params[5] =
        OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem);
    params[6] = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(ctx, key, pp->keylen, params) != 1) {
        unsigned long e = ERR_get_error();
        char buf[256];

        ERR_error_string_n(e, buf, sizeof(buf));
        say(why, whylen, "scrypt failed: %s", e ? buf : "unknown reason");
        ERR_clear_error();
        goto out;
    }
    rc = 0;
out:
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    return rc;
}

int
passwd_hash_params(const char *password, size_t len,
                   const struct passwd_params *pp, char *out, size_t outlen)
{
    unsigned char salt[SALT_MAX], key[KEY_MAX];
    char salt64[SALT_MAX * 4 / 3 + 4], key64[KEY_MAX * 4 / 3 + 4];
    int rc, n;

    if (outlen > 0)
        *out = '\0';
    rc = params_check(pp, NULL, 0);
    if (rc != 0)
        return rc;
    if (RAND_bytes(salt, (int)pp->saltlen) != 1) {
        ERR_clear_error();
        return ERR_SYS;
    }
    rc = derive(password, len, salt, pp, key, NULL, 0);
    if (rc != 0)
        goto out;
    base64_encode(salt, pp->saltlen, salt64, BASE64_UNPADDED);
    base64_encode(key, pp->keylen, key64, BASE64_UNPADDED);
    n = snprintf(out, outlen, PREFIX "ln=%d,r=%d,p=%d$%s$%s", pp->ln, pp->r,
                 pp->p, salt64, key64);
    if (n < 0 || (size_t)n >= outlen) {
        if (outlen > 0)
            OPENSSL_cleanse(out, outlen);
        rc = ERR_INVAL;
    }
out:
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(key64, sizeof(key64));
    return rc;
}

int
passwd_hash(const char *password, size_t len, char *out, size_t outlen)
{
    return passwd_hash_params(password, len, &passwd_default, out, outlen);
}

/* Reads a decimal parameter "name=digits" ending at term; advances *sp.
 * No sign, no leading zero, at most 9 digits. */
static int
parse_param(const char **sp, const char *name, char term, int *value)
{
    const char *s = *sp;
    size_t nl = strlen(name);
    long v = 0;
    int digits = 0;

    if (strncmp(s, name, nl) != 0 || s[nl] != '=')
        return -1;
    s += nl + 1;
    if (*s == '0' && s[1] >= '0' && s[1] <= '9')
        return -1;
    while (*s >= '0' && *s <= '9') {
        if (++digits > 9)
            return -1;
        v = v * 10 + (*s++ - '0');
    }
    if (digits == 0 || *s != term)
        return -1;
    *value = (int)v;
    *sp = s + 1;
    return 0;
}

/* Splits and checks stored; salt and key (SALT_MAX, KEY_MAX bytes) get
 * the decoded bytes, their lengths go into *pp. */
static int
parse(const char *stored, struct passwd_params *pp, unsigned char *salt,
      unsigned char *key, char *why, size_t whylen)
{
    const char *s, *dollar;
    long n;

    memset(pp, 0, sizeof(*pp));
    if (stored == NULL || strncmp(stored, PREFIX, strlen(PREFIX)) != 0) {
        say(why, whylen, "not a $scrypt$ hash");
        return ERR_MALFORMED;
    }
    s = stored + strlen(PREFIX);
    if (parse_param(&s, "ln", ',', &pp->ln) != 0 ||
        parse_param(&s, "r", ',', &pp->r) != 0 ||
        parse_param(&s, "p", '$', &pp->p) != 0) {
        say(why, whylen, "scrypt parameters are not ln=N,r=N,p=N");
        return ERR_MALFORMED;
    }
    dollar = strchr(s, '$');
    if (dollar == NULL) {
        say(why, whylen, "no key after the salt");
        return ERR_MALFORMED;
    }
    n = base64_decode(s, (size_t)(dollar - s), salt, SALT_MAX,
                      BASE64_UNPADDED);
    if (n < SALT_MIN) {
        say(why, whylen, "salt is not %d..%d bytes of base64", SALT_MIN,
            SALT_MAX);
        return ERR_MALFORMED;
    }
    pp->saltlen = (size_t)n;
    s = dollar + 1;
    n = base64_decode(s, strlen(s), key, KEY_MAX, BASE64_UNPADDED);
    if (n < KEY_MIN) {
        say(why, whylen, "key is not %d..%d bytes of base64", KEY_MIN, KEY_MAX);
        return ERR_MALFORMED;
    }
    pp->keylen = (size_t)n;
    if (params_check(pp, why, whylen) != 0)
        return ERR_MALFORMED;
    return 0;
}

int
passwd_parse(const char *stored, struct passwd_params *pp, char *why,
             size_t whylen)
{
    unsigned char salt[SALT_MAX], key[KEY_MAX];
    int rc = parse(stored, pp, salt, key, why, whylen);

    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

int
passwd_verify(const char *password, size_t len, const char *stored, char *why,
              size_t whylen)
{
    struct passwd_params pp;
    unsigned char salt[SALT_MAX], want[KEY_MAX], got[KEY_MAX];
    int rc;

    rc = parse(stored, &pp, salt, want, why, whylen);
    if (rc != 0)
        goto out;
    rc = derive(password, len, salt, &pp, got, why, whylen);
    if (rc != 0)
        goto out;
    rc = CRYPTO_memcmp(got, want, pp.keylen) == 0 ? 0 : 1;
out:
    OPENSSL_cleanse(want, sizeof(want));
    OPENSSL_cleanse(got, sizeof(got));
    return rc;
}

int
passwd_needs_rehash(const char *stored)
{
    struct passwd_params pp;
    const struct passwd_params *d = &passwd_default;
    int rc = passwd_parse(stored, &pp, NULL, 0);

    if (rc != 0)
        return rc;
    return pp.ln < d->ln || pp.r < d->r || pp.p < d->p ||
           pp.saltlen < d->saltlen || pp.keylen < d->keylen;
}
