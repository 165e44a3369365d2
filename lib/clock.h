/*
 * clock.h - the two clocks Samotop uses.
 *
 * Wall-clock microseconds for envelope timestamps and deadlines (they cross
 * process and host boundaries), monotonic milliseconds for local timers.
 */
#ifndef SAMOTOP_CLOCK_H
#define SAMOTOP_CLOCK_H

#include <stdint.h>

/* Microseconds since the epoch (CLOCK_REALTIME). */
int64_t clock_wall_us(void);

/* Milliseconds on CLOCK_MONOTONIC; only differences mean anything. */
int64_t clock_mono_ms(void);

/* Microseconds on CLOCK_MONOTONIC. */
int64_t clock_mono_us(void);

#endif
