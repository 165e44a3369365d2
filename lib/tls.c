#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "err.h"
#include "log.h"
#include "tls.h"
#include "xalloc.h"

struct tls_ctx {
    SSL_CTX *ssl;
};

struct tls_conn {
    SSL *ssl;
    char error[256];
};

static void
ssl_reason(char *why, size_t whylen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[200] = "unknown";

    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    snprintf(why, whylen, "%s: %s", what, buf);
}

/* Writes what write_fn produces into path via a temporary file and a
 * rename, so readers never see a half-written file. */
static int
write_pem(const char *path, mode_t mode, int (*write_fn)(FILE *, void *),
          void *arg, char *why, size_t whylen)
{
    char tmp[4200];
    FILE *f;
    int fd;

    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
        snprintf(why, whylen, "cannot write %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        return ERR_SYS;
    }
    if (!write_fn(f, arg) || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        snprintf(why, whylen, "cannot write %s", tmp);
        fclose(f);
        unlink(tmp);
        return ERR_SYS;
    }
    fclose(f);
    if (rename(tmp, path) != 0) {
        snprintf(why, whylen, "cannot rename %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return ERR_SYS;
    }
    return 0;
}

static int
write_key(FILE *f, void *arg)
{
    return PEM_write_PrivateKey(f, arg, NULL, NULL, 0, NULL, NULL);
}

static int
write_cert(FILE *f, void *arg)
{
    return PEM_write_X509(f, arg);
}

/* Writes a new key and a self-signed certificate for hostname. */
static int
self_signed_create(const char *cert_path, const char *key_path,
                   const char *hostname, char *why, size_t whylen)
{
    char san[300];
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    X509_NAME *name;
    X509_EXTENSION *ext;
    X509V3_CTX v3;
    int rc = ERR_SYS;

    key = EVP_EC_gen("P-256");
    x = X509_new();
    if (key == NULL || x == NULL) {
        ssl_reason(why, whylen, "key generation");
        goto out;
    }
    X509_set_version(x, 2);
    {
        unsigned char serial[16];
        BIGNUM *bn;

        if (RAND_bytes(serial, sizeof(serial)) != 1) {
            ssl_reason(why, whylen, "random serial");
            goto out;
        }
        serial[0] &= 0x7f;
        bn = BN_bin2bn(serial, sizeof(serial), NULL);
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
        BN_free(bn);
    }
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
    X509_set_pubkey(x, key);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               (const unsigned char *)hostname, -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                               (const unsigned char *)"Samotop self-signed",
                               -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    snprintf(san, sizeof(san), "DNS:%s", hostname);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    if (ext) {
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    if (!X509_sign(x, key, EVP_sha256())) {
        ssl_reason(why, whylen, "signing");
        goto out;
    }
    /* The key first: a reader that finds cert.pem finds its key too. */
    if (write_pem(key_path, 0600, write_key, key, why, whylen) != 0 ||
        write_pem(cert_path, 0644, write_cert, x, why, whylen) != 0)
        goto out;
    rc = 0;
out:
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

static bool
both_there(const char *cert_path, const char *key_path)
{
    return access(cert_path, R_OK) == 0 && access(key_path, R_OK) == 0;
}

/*
 * Several processes may start on a fresh data folder at once (listener
 * copies). Without a lock each would write its own key and certificate,
 * and one could end up with another's key beside its certificate ("key
 * values mismatch"). So the check and the creation happen under an
 * exclusive flock() on dir/.lock, and the one that waited checks again:
 * only the first creates, the others find its pair, whole.
 */
int
tls_self_signed_ensure(const char *dir, const char *hostname, char *why,
                       size_t whylen)
{
    char cert_path[4096], key_path[4096], lock_path[4096];
    int fd, rc;

    snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", dir);
    snprintf(key_path, sizeof(key_path), "%s/key.pem", dir);
    snprintf(lock_path, sizeof(lock_path), "%s/.lock", dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(why, whylen, "cannot make %s: %s", dir, strerror(errno));
        return ERR_SYS;
    }
    fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;

        /* A folder we may not write to, made by someone else: usable as
         * it is when it holds both files. */
        if (both_there(cert_path, key_path))
            return 0;
        snprintf(why, whylen, "cannot open %s: %s", lock_path, strerror(e));
        return ERR_SYS;
    }
    while ((rc = flock(fd, LOCK_EX)) != 0 && errno == EINTR)
        ;
    if (rc != 0) {
        snprintf(why, whylen, "cannot lock %s: %s", lock_path, strerror(errno));
        close(fd);
        return ERR_SYS;
    }
    rc = both_there(cert_path, key_path)
             ? 0
             : self_signed_create(cert_path, key_path, hostname, why, whylen);
    close(fd); /* and the lock with it */
    return rc;
}

tls_ctx_t *
tls_server_from_config(const config_t *cfg, const char *hostname)
{
    char dir[4096], cert[4200], key[4200], why[512];
    const char *c = config_str(cfg, "tls.cert"),
               *k = config_str(cfg, "tls.key");
    tls_ctx_t *ctx;

    if (*c == '\0' || *k == '\0') {
        snprintf(dir, sizeof(dir), "%s/tls", config_str(cfg, "data"));
        if (tls_self_signed_ensure(dir, hostname, why, sizeof(why)) != 0) {
            log_err(NULL, "tls_setup_failed", "reason=%s", log_q(why));
            return NULL;
        }
        snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
        snprintf(key, sizeof(key), "%s/key.pem", dir);
        c = cert;
        k = key;
    }
    ctx = tls_server_new(c, k, why, sizeof(why));
    if (ctx == NULL)
        log_err(NULL, "tls_setup_failed", "cert=%s reason=%s", c, log_q(why));
    return ctx;
}

tls_ctx_t *
tls_server_new(const char *cert_file, const char *key_file, char *why,
               size_t whylen)
{
    SSL_CTX *ssl = SSL_CTX_new(TLS_server_method());
    tls_ctx_t *ctx;

    if (ssl == NULL) {
        ssl_reason(why, whylen, "SSL_CTX_new");
        return NULL;
    }
    /* RFC 8996 retired TLS 1.0 and 1.1; the issue asks for 1.2+. */
    SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
    SSL_CTX_set_options(ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ssl, cert_file) != 1) {
        ssl_reason(why, whylen, cert_file);
        SSL_CTX_free(ssl);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ssl, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ssl) != 1) {
        ssl_reason(why, whylen, key_file);
        SSL_CTX_free(ssl);
        return NULL;
    }
    ctx = xcalloc(1, sizeof(*ctx));
    ctx->ssl = ssl;
    return ctx;
}

void
tls_ctx_destroy(tls_ctx_t **ctx_p)
{
    if (*ctx_p) {
        SSL_CTX_free((*ctx_p)->ssl);
        free(*ctx_p);
    }
    *ctx_p = NULL;
}

tls_conn_t *
tls_conn_new(tls_ctx_t *ctx, int fd)
{
    SSL *ssl = SSL_new(ctx->ssl);
    tls_conn_t *c;

    if (ssl == NULL)
        return NULL;
    SSL_set_fd(ssl, fd);
    SSL_set_accept_state(ssl);
    c = xcalloc(1, sizeof(*c));
    c->ssl = ssl;
    return c;
}

void
tls_conn_destroy(tls_conn_t **conn_p)
{
    if (*conn_p) {
        SSL_free((*conn_p)->ssl);
        free(*conn_p);
    }
    *conn_p = NULL;
}

/* Maps an OpenSSL result onto ours. */
static int
outcome(tls_conn_t *c, int r)
{
    int e = SSL_get_error(c->ssl, r);

    switch (e) {
    case SSL_ERROR_WANT_READ:
        return TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        snprintf(c->error, sizeof(c->error), "%s",
                 errno ? strerror(errno) : "unexpected EOF");
        ERR_clear_error();
        return ERR_SYS;
    default:
        ssl_reason(c->error, sizeof(c->error), "tls");
        return ERR_PROTO;
    }
}

int
tls_handshake(tls_conn_t *c)
{
    int r;

    ERR_clear_error();
    r = SSL_do_handshake(c->ssl);
    if (r == 1)
        return 0;
    r = outcome(c, r);
    return r == 0 ? ERR_PROTO : r;
}

ssize_t
tls_read(tls_conn_t *c, void *buf, size_t len)
{
    size_t got = 0;
    int r;

    ERR_clear_error();
    r = SSL_read_ex(c->ssl, buf, len, &got);
    if (r == 1)
        return (ssize_t)got;
    return outcome(c, 0);
}

ssize_t
tls_write(tls_conn_t *c, const void *buf, size_t len)
{
    size_t put = 0;
    int r;

    ERR_clear_error();
    r = SSL_write_ex(c->ssl, buf, len, &put);
    if (r == 1)
        return (ssize_t)put;
    r = outcome(c, 0);
    return r == 0 ? ERR_SYS : r;
}

void
tls_shutdown(tls_conn_t *c)
{
    ERR_clear_error();
    SSL_shutdown(c->ssl);
    ERR_clear_error();
}

int
tls_pending(const tls_conn_t *c)
{
    return SSL_pending(c->ssl) > 0;
}

const char *
tls_conn_version(const tls_conn_t *c)
{
    return SSL_get_version(c->ssl);
}

const char *
tls_conn_cipher(const tls_conn_t *c)
{
    return SSL_get_cipher_name(c->ssl);
}

int
tls_conn_bits(const tls_conn_t *c)
{
    return SSL_get_cipher_bits(c->ssl, NULL);
}

const char *
tls_conn_error(const tls_conn_t *c)
{
    return c->error;
}

tls_ctx_t *
tls_client_new(const char *ca_file, char *why, size_t whylen)
{
    SSL_CTX *ssl = SSL_CTX_new(TLS_client_method());
    tls_ctx_t *ctx;
    int ok;

    if (ssl == NULL) {
        ssl_reason(why, whylen, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
    SSL_CTX_set_options(ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* Verification is asked per connection (tls_client_conn_new). */
    SSL_CTX_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    if (ca_file && *ca_file)
        ok = SSL_CTX_load_verify_locations(ssl, ca_file, NULL);
    else
        ok = SSL_CTX_set_default_verify_paths(ssl);
    if (ok != 1) {
        ssl_reason(why, whylen, ca_file && *ca_file ? ca_file
                                                    : "default CA paths");
        SSL_CTX_free(ssl);
        return NULL;
    }
    ctx = xcalloc(1, sizeof(*ctx));
    ctx->ssl = ssl;
    return ctx;
}

tls_conn_t *
tls_client_conn_new(tls_ctx_t *ctx, int fd, const char *servername,
                    bool verify)
{
    unsigned char ip[16];
    SSL *ssl = SSL_new(ctx->ssl);
    bool is_ip;
    tls_conn_t *c;

    if (ssl == NULL)
        return NULL;
    is_ip = servername && (inet_pton(AF_INET, servername, ip) == 1 ||
                           inet_pton(AF_INET6, servername, ip) == 1);
    /* RFC 6066 3: SNI carries host names only, never addresses. */
    if (servername && *servername && !is_ip &&
        SSL_set_tlsext_host_name(ssl, servername) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    if (verify) {
        SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (servername == NULL || *servername == '\0' ||
            (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
                                                   servername)
                   : SSL_set1_host(ssl, servername)) != 1) {
            SSL_free(ssl);
            return NULL;
        }
    }
    SSL_set_fd(ssl, fd);
    SSL_set_connect_state(ssl);
    c = xcalloc(1, sizeof(*c));
    c->ssl = ssl;
    return c;
}

bool
tls_conn_verified(const tls_conn_t *c)
{
    return SSL_get_verify_mode(c->ssl) & SSL_VERIFY_PEER &&
           SSL_get0_peer_certificate(c->ssl) != NULL &&
           SSL_get_verify_result(c->ssl) == X509_V_OK;
}
