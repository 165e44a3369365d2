/*
 * frames.h - reading and writing multipart ZeroMQ messages as arrays of
 * zmq_msg_t, shared by broker, client and worker.
 *
 * frames_recv() fills an array the caller provides and owns; the caller
 * closes the frames with frames_close(). Frames beyond the array are read
 * and discarded, and the count returned says how many there were, so a
 * message with too many frames is seen and refused, never half-read.
 */
#ifndef SAMOTOP_FRAMES_H
#define SAMOTOP_FRAMES_H

#include <stdbool.h>
#include <stddef.h>

#include <zmq.h>

#define FRAMES_MAX 8

/* Receives one whole message without blocking. Returns the number of frames
 * it had (possibly more than max; only max are kept), 0 when nothing was
 * waiting, or a negative ERR_*. */
int frames_recv(void *sock, zmq_msg_t *f, int max);

void frames_close(zmq_msg_t *f, int n);

/* Whether frame f holds exactly the string s. */
bool frame_is(zmq_msg_t *f, const char *s);

/* Copies frame f into out (of outlen) as a C string; false when it does
 * not fit or holds a NUL. */
bool frame_str(zmq_msg_t *f, char *out, size_t outlen);

/* Sends n parts given as pointers and lengths, without blocking. Returns 0,
 * or ERR_CLOSED when the message could not be queued (no peer, or the
 * peer's queue full): nothing was sent then. */
int frames_send(void *sock, int n, const void *const *parts,
                const size_t *lens);

#endif
