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
