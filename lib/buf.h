/*
 * buf.h - a growable byte buffer.
 *
 * Used for building replies, JSON and protocol output. A buf_t lives where
 * its owner puts it (usually on the stack, zeroed with BUF_INIT); its bytes
 * are freed by buf_free() or handed over by buf_take(). The data is always
 * NUL-terminated past len, so text can be used as a C string.
 */
#ifndef SAMOTOP_BUF_H
#define SAMOTOP_BUF_H

#include <stddef.h>

typedef struct buf {
    char *data;
    size_t len, cap;
} buf_t;

#define BUF_INIT {NULL, 0, 0}

void buf_reserve(buf_t *b, size_t extra);
void buf_add(buf_t *b, const void *p, size_t n);
void buf_adds(buf_t *b, const char *s);
void buf_addc(buf_t *b, char c);
void buf_printf(buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes (n <= len). */
void buf_consume(buf_t *b, size_t n);
void buf_reset(buf_t *b);
void buf_free(buf_t *b);
/* The data as a new NUL-terminated string the caller owns; b is left
 * empty. */
char *buf_take(buf_t *b);

#endif
