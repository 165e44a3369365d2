/*
 * metrics.h - counters, gauges and histograms with labels, rendered in the
 * Prometheus text exposition format 0.0.4.
 *
 * A registry holds the metrics of one process. Each metric is registered
 * once by name with its HELP text and a fixed list of label names; every
 * update then names the label values, and a series is made for each new
 * combination (at most METRICS_MAX_SERIES per metric: beyond that updates
 * are dropped and counted in samotop_metrics_series_dropped_total, so a
 * label fed from the network can never eat the memory). No I/O here
 * beyond the process collector's read of /proc/self/statm:
 * metrics_render() writes the exposition into a buffer, and
 * metrics_http.h serves it.
 *
 * The registry owns its metrics: a metric_t * is borrowed until the
 * registry is destroyed. Nothing here takes a lock; every call is made
 * from the thread of the loop that serves the registry (actors keep their
 * other threads, e.g. auth's scrypt pool, away from it). Updating a NULL
 * metric (a failed registration) does nothing, so a bad name can never
 * crash the caller.
 */
#ifndef SAMOTOP_METRICS_H
#define SAMOTOP_METRICS_H

#include <stddef.h>

#include "buf.h"

typedef struct metrics metrics_t;
typedef struct metric metric_t;

/* Label names per metric, series per metric, bytes kept of a value. */
#define METRICS_MAX_LABELS 4
#define METRICS_MAX_SERIES 128
#define METRICS_LABEL_MAX 128
/* Bucket bounds per histogram. */
#define METRICS_MAX_BUCKETS 24

/* The label values of one update, as a compound literal:
 * metrics_inc(m, METRICS_L("mta", "250")). */
#define METRICS_L(...) ((const char *const[]){__VA_ARGS__})

/* A new empty registry; caller owns it. */
metrics_t *metrics_new(void);
/* Frees the registry and every metric in it; NULL ok. */
void metrics_destroy(metrics_t **m_p);

/* Registers a counter, gauge or histogram. labels is a comma list of
 * label names ("role,code"), or NULL for none. Registering a name again
 * with the same type and labels returns the metric already there. Returns
 * NULL (and logs why) when a name is not [a-zA-Z_:][a-zA-Z0-9_:]*, a label
 * name is not [a-zA-Z_][a-zA-Z0-9_]* or is reserved ("le", "__*"), there
 * are too many labels, or the name is taken by another type. */
metric_t *metrics_counter(metrics_t *m, const char *name, const char *help,
                          const char *labels);
metric_t *metrics_gauge(metrics_t *m, const char *name, const char *help,
                        const char *labels);
/* bounds are the upper bounds of the buckets, increasing (the +Inf bucket
 * is implied); NULL takes METRICS_LATENCY_BOUNDS, in seconds. */
metric_t *metrics_histogram(metrics_t *m, const char *name, const char *help,
                            const char *labels, const double *bounds,
                            int nbounds);

/* Request latencies from 0.5 ms to 10 s. */
extern const double METRICS_LATENCY_BOUNDS[];
extern const int METRICS_LATENCY_NBOUNDS;

/* values holds one value per label name (NULL when there are none); a NULL
 * value is "". Counters only go up: a negative v is ignored. */
void metrics_add(metric_t *c, const char *const *values, double v);
void metrics_inc(metric_t *c, const char *const *values);
/* Sets a gauge, or a counter copied from a source that counts by itself
 * (CPU time from getrusage()). */
void metrics_set(metric_t *g, const char *const *values, double v);
/* Gauges only. */
void metrics_dec(metric_t *g, const char *const *values);
/* Histograms only. */
void metrics_observe(metric_t *h, const char *const *values, double v);

/* The value of a counter or gauge series (a histogram's count); 0 when
 * the series has never been updated. */
double metrics_get(const metric_t *c, const char *const *values);

/* fn is called at the start of every metrics_render(), to set gauges that
 * are read rather than counted (pending requests, connected brokers). At
 * most 16 per registry; returns 0 or ERR_TOO_BIG. */
typedef void metrics_collect_fn(metrics_t *m, void *arg);
int metrics_on_collect(metrics_t *m, metrics_collect_fn *fn, void *arg);

/* Registers the metrics every Samotop process has: process_start_time_
 * seconds (now), samotop_actor_info{service,instance} 1, and
 * process_cpu_seconds_total and process_resident_memory_bytes, read from
 * getrusage() and /proc/self/statm at each render. */
void metrics_add_process(metrics_t *m, const char *service,
                         const char *instance);

/* Appends the exposition of every metric to out: # HELP and # TYPE lines,
 * then one line per series (histograms: cumulative _bucket{le=...}, then
 * _sum and _count), in the order of registration. */
void metrics_render(metrics_t *m, buf_t *out);

/* 1 when name may name a metric, 0 otherwise. */
int metrics_name_valid(const char *name);

#endif
