/*
 * passwd.h - account password hashes: scrypt through OpenSSL 3.
 *
 * A hash is stored as one string in the PHC style,
 *   $scrypt$ln=15,r=8,p=1$<salt>$<key>
 * where ln is log2 of scrypt's N, and salt and key are standard base64
 * without padding (16 random bytes of salt, a 32-byte key by default).
 * The parameters travel with each hash, so the default can be raised
 * later: old hashes still verify, and passwd_needs_rehash() tells a login
 * that it may store a new one. A stored string is untrusted input: a
 * malformed one, or one whose parameters would need more than
 * PASSWD_MAXMEM bytes, is refused with an error, never a crash.
 *
 * scrypt is slow on purpose: with the default parameters one hash or
 * verification takes tens of milliseconds and 32 MiB of memory, so a
 * loop thread that serves many clients should not run it inline.
 * Functions are thread-safe; they wipe the key material they derive.
 */
#ifndef SAMOTOP_PASSWD_H
#define SAMOTOP_PASSWD_H

#include <stddef.h>

/* Room for any string passwd_hash() writes, NUL included. */
#define PASSWD_MAX 256

/* The most memory one derivation may use (scrypt needs 128 * r * N bytes
 * plus 128 * r * p). 32 MiB for the default; 512 MiB leaves room to raise
 * the parameters fourfold and more. */
#define PASSWD_MAXMEM (512ULL * 1024 * 1024)

struct passwd_params {
    int ln;         /* log2(N), 1..30 */
    int r;          /* block size */
    int p;          /* parallelism */
    size_t saltlen; /* bytes of salt (8..64) */
    size_t keylen;  /* bytes of derived key (16..64) */
};

/* The parameters new hashes get: ln=15, r=8, p=1, 16-byte salt, 32-byte
 * key. */
extern const struct passwd_params passwd_default;

/* Hashes password (len bytes, any bytes) with a new random salt into out
 * (outlen bytes, PASSWD_MAX is enough). Returns 0, ERR_INVAL when the
 * parameters are out of bounds or out is too small, or ERR_SYS when
 * OpenSSL fails (no randomness, no memory). */
int passwd_hash(const char *password, size_t len, char *out, size_t outlen);

/* The same with given parameters (tests, and raising the default). */
int passwd_hash_params(const char *password, size_t len,
                       const struct passwd_params *params, char *out,
                       size_t outlen);

/* Checks password against a stored hash. Returns 0 only when it matches;
 * 1 when it does not; ERR_MALFORMED when stored is not a hash this module
 * can read, or ERR_SYS when OpenSSL fails, with the reason in why (which
 * may be NULL). Anything but 0 must be taken as "no". The comparison
 * takes the same time wherever the keys differ. */
int passwd_verify(const char *password, size_t len, const char *stored,
                  char *why, size_t whylen);

/* Reads the parameters of a stored hash into *params (salt and key are
 * checked but not returned). Returns 0 or ERR_MALFORMED with the reason in
 * why (may be NULL). */
int passwd_parse(const char *stored, struct passwd_params *params, char *why,
                 size_t whylen);

/* Whether stored was made with weaker parameters than passwd_default
 * (smaller N, r or p, shorter salt or key): 1 yes, 0 no, ERR_MALFORMED
 * when it cannot be read. Call it after a successful passwd_verify() and,
 * on 1, store passwd_hash() of the password just checked. */
int passwd_needs_rehash(const char *stored);

#endif
