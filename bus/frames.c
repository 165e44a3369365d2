#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "frames.h"
#include "lib/err.h"
#include "lib/xalloc.h"
#include "proto.h"

int
frames_recv(void *sock, zmq_msg_t *f, int max)
{
    int n = 0, more = 1;

    while (more) {
        zmq_msg_t scratch, *m = n < max ? &f[n] : &scratch;

        zmq_msg_init(m);
        if (zmq_msg_recv(m, sock, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
            int e = errno;

            zmq_msg_close(m);
            frames_close(f, n < max ? n : max);
            return n == 0 && e == EAGAIN ? 0 : ERR_SYS;
        }
        more = zmq_msg_more(m);
        if (m == &scratch)
            zmq_msg_close(m);
        n++;
    }
    return n;
}

void
frames_close(zmq_msg_t *f, int n)
{
    for (int i = 0; i < n; i++)
        zmq_msg_close(&f[i]);
}

bool
frame_is(zmq_msg_t *f, const char *s)
{
    size_t n = strlen(s);

    return zmq_msg_size(f) == n && memcmp(zmq_msg_data(f), s, n) == 0;
}

bool
frame_str(zmq_msg_t *f, char *out, size_t outlen)
{
    size_t n = zmq_msg_size(f);

    if (n >= outlen || memchr(zmq_msg_data(f), '\0', n))
        return false;
    memcpy(out, zmq_msg_data(f), n);
    out[n] = '\0';
    return true;
}

int
frames_send(void *sock, int n, const void *const *parts, const size_t *lens)
{
    for (int i = 0; i < n; i++) {
        int flags = (i < n - 1 ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT;

        /* Once the first part is queued, ZeroMQ takes the rest: a message
         * is atomic, so only the first send can fail with EAGAIN. */
        if (zmq_send(sock, parts[i], lens[i], flags) < 0 && i == 0)
            return ERR_CLOSED;
    }
    return 0;
}

int
hdr_parse(zmq_msg_t *frame, struct hdr *h)
{
    return hdr_parse_mem(zmq_msg_data(frame), zmq_msg_size(frame), h);
}

int
hdr_parse_mem(const void *p, size_t n, struct hdr *h)
{
    size_t start = 0;

    if (n > HDR_MAX)
        return -1;
    memcpy(h->buf, p, n);
    h->buf[n] = '\0';
    h->n = 0;
    for (size_t i = 0; i <= n; i++) {
        if (h->buf[i] != '\0')
            continue;
        if (h->n == HDR_FIELDS)
            return -1;
        h->f[h->n] = h->buf + start;
        h->len[h->n++] = i - start;
        start = i + 1;
    }
    return h->n;
}

size_t
hdr_build(char *out, size_t outlen, int n, const char *const *fields,
          const size_t *lens)
{
    size_t off = 0;

    for (int i = 0; i < n; i++) {
        size_t l = lens ? lens[i] : strlen(fields[i]);

        if (off + l + (i > 0) > outlen)
            return 0;
        if (i > 0)
            out[off++] = '\0';
        memcpy(out + off, fields[i], l);
        off += l;
    }
    return off;
}

bool
hdr_is(const struct hdr *h, int i, const char *s)
{
    return i < h->n && strcmp(h->f[i], s) == 0;
}

char *
hex_encode(const void *p, size_t len, char *out)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *b = p;

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * len] = '\0';
    return out;
}

static int
hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                                 : -1;
}

int
hex_decode(const char *s, size_t len, unsigned char *out, size_t outlen)
{
    if (len % 2 || len / 2 > outlen)
        return -1;
    for (size_t i = 0; i < len; i += 2) {
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);

        if (hi < 0 || lo < 0)
            return -1;
        out[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    return (int)(len / 2);
}

/* Batches. */

static void
put_u32(unsigned char *p, size_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static size_t
get_u32(const unsigned char *p)
{
    return (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
}

bool
batch_add(struct batch *b, int n, const char *const *fields,
          const size_t *lens, const void *env, size_t envlen)
{
    size_t hl = 0, need;

    if (n < 1 || n > HDR_FIELDS) /* the reader would refuse the batch */
        return false;
    for (int i = 0; i < n; i++)
        hl += (lens ? lens[i] : strlen(fields[i])) + (i > 0);
    if (hl > HDR_MAX || envlen > BATCH_ENV_MAX)
        return false;
    need = 8 + hl + envlen;
    if (b->n > 0 &&
        (b->n >= BATCH_SEND_RECORDS || b->len + need > BATCH_BYTES))
        return false;
    if (b->len + need > b->cap) {
        b->cap = b->cap ? b->cap : 4096;
        while (b->cap < b->len + need)
            b->cap *= 2;
        b->buf = xrealloc(b->buf, b->cap);
    }
    put_u32(b->buf + b->len, hl);
    hdr_build((char *)b->buf + b->len + 4, hl, n, fields, lens);
    b->len += 4 + hl;
    put_u32(b->buf + b->len, envlen);
    if (envlen)
        memcpy(b->buf + b->len + 4, env, envlen);
    b->len += 4 + envlen;
    b->n++;
    return true;
}

void
batch_reset(struct batch *b)
{
    b->len = 0;
    b->n = 0;
}

void
batch_free(struct batch *b)
{
    free(b->buf);
    memset(b, 0, sizeof(*b));
}

int
batch_next(const void *data, size_t len, size_t *pos, int *count,
           struct hdr *h, const void **env, size_t *envlen)
{
    const unsigned char *p = data;
    size_t at = *pos, hl, el;

    if (at >= len)
        return 0;
    if (*count >= BATCH_RECORDS_MAX || len - at < 4)
        return -1;
    hl = get_u32(p + at);
    at += 4;
    if (hl > HDR_MAX || len - at < hl || hdr_parse_mem(p + at, hl, h) < 0)
        return -1;
    at += hl;
    if (len - at < 4)
        return -1;
    el = get_u32(p + at);
    at += 4;
    if (el > BATCH_ENV_MAX || len - at < el)
        return -1;
    *env = p + at;
    *envlen = el;
    *pos = at + el;
    (*count)++;
    return 1;
}

int
batch_each(zmq_msg_t *frame, batch_record_fn *fn, void *arg, int *records)
{
    const void *data = zmq_msg_data(frame), *env;
    size_t len = zmq_msg_size(frame), pos = 0, envlen;
    struct hdr h;
    int rc;

    *records = 0;
    while ((rc = batch_next(data, len, &pos, records, &h, &env, &envlen)) > 0)
        fn(arg, &h, env, envlen);
    return rc;
}

int
batch_send(void *sock, const void *id, size_t idlen, const char *proto,
           struct batch *b)
{
    const char *fields[2] = {proto, PROTO_BATCH};
    char hdr[2 * PROTO_MAX_NAME];
    const void *parts[3];
    size_t lens[3];
    int k = 0, rc;

    if (b->n == 0)
        return 0;
    if (id != NULL) {
        parts[k] = id;
        lens[k++] = idlen;
    }
    if (b->n == 1) { /* the record's own parts, as they are in the buffer */
        size_t hl = get_u32(b->buf), el = get_u32(b->buf + 4 + hl);

        parts[k] = b->buf + 4;
        lens[k++] = hl;
        parts[k] = b->buf + 8 + hl;
        lens[k] = el;
        k += el > 0;
    } else {
        parts[k] = hdr;
        lens[k++] = hdr_build(hdr, sizeof(hdr), 2, fields, NULL);
        parts[k] = b->buf;
        lens[k++] = b->len;
    }
    rc = frames_send(sock, k, parts, lens);
    if (rc == 0)
        batch_reset(b);
    return rc;
}
