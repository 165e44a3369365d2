#include <errno.h>
#include <string.h>

#include "frames.h"
#include "lib/err.h"

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
    size_t n = zmq_msg_size(frame), start = 0;

    if (n > HDR_MAX)
        return -1;
    memcpy(h->buf, zmq_msg_data(frame), n);
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
