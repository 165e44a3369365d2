/*
 * metrics.c - the registry and the text exposition (metrics.h).
 *
 * The format is Prometheus' text exposition 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/): per
 * metric a "# HELP" line (backslash and newline escaped), a "# TYPE"
 * line, then "name{label="value",...} number" lines, where a label value
 * escapes backslash, double quote and newline. A histogram's buckets are
 * cumulative and end with le="+Inf", whose count equals _count.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "clock.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "xalloc.h"

enum mtype { M_COUNTER, M_GAUGE, M_HISTOGRAM };

static const char *const type_names[] = {"counter", "gauge", "histogram"};

struct series {
    char *values[METRICS_MAX_LABELS];
    double value;     /* counter, gauge */
    double sum;       /* histogram */
    uint64_t count;   /* histogram */
    uint64_t *bucket; /* histogram: observations per bucket, not summed */
};

struct metric {
    metrics_t *reg;
    enum mtype type;
    char *name;
    char *help;
    char *labels[METRICS_MAX_LABELS];
    int nlabels;
    double bounds[METRICS_MAX_BUCKETS];
    int nbounds;
    struct series *series;
    int nseries;
    metric_t *next;
};

struct collector {
    metrics_collect_fn *fn;
    void *arg;
};

/* What metrics_add_process() reads at each render. */
struct process_metrics {
    metric_t *cpu, *rss;
};

struct metrics {
    metric_t *head, *tail;
    struct process_metrics proc;
    metric_t *dropped; /* series refused past METRICS_MAX_SERIES */
    struct collector collect[16];
    int ncollect;
};

const double METRICS_LATENCY_BOUNDS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                         0.025,  0.05,  0.1,    0.25,  0.5,
                                         1,      2.5,   5,      10};
const int METRICS_LATENCY_NBOUNDS =
    (int)(sizeof(METRICS_LATENCY_BOUNDS) / sizeof(METRICS_LATENCY_BOUNDS[0]));

static metric_t *reg_metric(metrics_t *m, enum mtype type, const char *name,
                            const char *help, const char *labels,
                            const double *bounds, int nbounds);
static struct series *series_get(metric_t *x, const char *const *values);

metrics_t *
metrics_new(void)
{
    metrics_t *m = xcalloc(1, sizeof(*m));

    m->dropped =
        reg_metric(m, M_COUNTER, "samotop_metrics_series_dropped_total",
                   "Metric updates dropped: too many label "
                   "combinations",
                   "metric", NULL, 0);
    return m;
}

static void
metric_free(metric_t *x)
{
    for (int s = 0; s < x->nseries; s++) {
        for (int i = 0; i < x->nlabels; i++)
            free(x->series[s].values[i]);
        free(x->series[s].bucket);
    }
    for (int i = 0; i < x->nlabels; i++)
        free(x->labels[i]);
    free(x->series);
    free(x->name);
    free(x->help);
    free(x);
}

void
metrics_destroy(metrics_t **m_p)
{
    metrics_t *m = *m_p;

    if (m == NULL)
        return;
    for (metric_t *x = m->head, *next; x; x = next) {
        next = x->next;
        metric_free(x);
    }
    free(m);
    *m_p = NULL;
}

int
metrics_name_valid(const char *name)
{
    if (name == NULL || *name == '\0')
        return 0;
    for (const char *p = name; *p; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 c == ':' || (p > name && c >= '0' && c <= '9');

        if (!ok)
            return 0;
    }
    return 1;
}

/* Label names are metric names without ':', and "__" is reserved for
 * Prometheus itself; "le" belongs to histogram buckets. */
static int
label_name_valid(const char *name)
{
    return metrics_name_valid(name) && strchr(name, ':') == NULL &&
           strncmp(name, "__", 2) != 0 && strcmp(name, "le") != 0;
}

/* Splits labels into x->labels; 0 or ERR_INVAL. */
static int
parse_labels(metric_t *x, const char *labels)
{
    const char *p = labels;

    while (p && *p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char *one = xstrndup(p, len);

        if (x->nlabels == METRICS_MAX_LABELS || !label_name_valid(one)) {
            free(one);
            return ERR_INVAL;
        }
        for (int i = 0; i < x->nlabels; i++)
            if (strcmp(x->labels[i], one) == 0) {
                free(one);
                return ERR_INVAL;
            }
        x->labels[x->nlabels++] = one;
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

static int
same_shape(const metric_t *x, enum mtype type, const metric_t *want)
{
    if (x->type != type || x->nlabels != want->nlabels)
        return 0;
    for (int i = 0; i < x->nlabels; i++)
        if (strcmp(x->labels[i], want->labels[i]) != 0)
            return 0;
    return 1;
}

static metric_t *
reg_metric(metrics_t *m, enum mtype type, const char *name, const char *help,
           const char *labels, const double *bounds, int nbounds)
{
    metric_t *x = xcalloc(1, sizeof(*x));
    const char *why = NULL;

    x->reg = m;
    x->type = type;
    if (!metrics_name_valid(name))
        why = "bad metric name";
    else if (parse_labels(x, labels) != 0)
        why = "bad or too many label names";
    else if (type == M_HISTOGRAM) {
        if (bounds == NULL) {
            bounds = METRICS_LATENCY_BOUNDS;
            nbounds = METRICS_LATENCY_NBOUNDS;
        }
        if (nbounds < 1 || nbounds > METRICS_MAX_BUCKETS)
            why = "bad bucket count";
        for (int i = 0; why == NULL && i < nbounds; i++) {
            if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
                why = "bucket bounds not finite and increasing";
            x->bounds[i] = bounds[i];
        }
        x->nbounds = nbounds;
    }
    for (metric_t *o = m->head; why == NULL && o; o = o->next) {
        if (strcmp(o->name, name) != 0)
            continue;
        if (same_shape(o, type, x)) {
            metric_free(x);
            return o;
        }
        why = "name registered with another type or labels";
    }
    if (why) {
        log_err(NULL, "metric_refused", "name=%s reason=%s",
                log_q(name ? name : ""), log_q(why));
        metric_free(x);
        return NULL;
    }
    x->name = xstrdup(name);
    x->help = xstrdup(help ? help : "");
    /* A metric without labels shows 0 before its first update, so a
     * scrape can tell "none yet" from "not exported". */
    if (x->nlabels == 0)
        series_get(x, NULL);
    if (m->tail)
        m->tail->next = x;
    else
        m->head = x;
    m->tail = x;
    return x;
}

metric_t *
metrics_counter(metrics_t *m, const char *name, const char *help,
                const char *labels)
{
    return reg_metric(m, M_COUNTER, name, help, labels, NULL, 0);
}

metric_t *
metrics_gauge(metrics_t *m, const char *name, const char *help,
              const char *labels)
{
    return reg_metric(m, M_GAUGE, name, help, labels, NULL, 0);
}

metric_t *
metrics_histogram(metrics_t *m, const char *name, const char *help,
                  const char *labels, const double *bounds, int nbounds)
{
    return reg_metric(m, M_HISTOGRAM, name, help, labels, bounds, nbounds);
}

/* A stored label value (cut at METRICS_LABEL_MAX bytes) against a given
 * one, NULL being "". */
static int
value_eq(const char *stored, const char *given)
{
    if (given == NULL)
        given = "";
    return strnlen(given, METRICS_LABEL_MAX) == strlen(stored) &&
           strncmp(stored, given, METRICS_LABEL_MAX) == 0;
}

static struct series *
series_find(const metric_t *x, const char *const *values)
{
    for (int s = 0; s < x->nseries; s++) {
        int i;

        for (i = 0; i < x->nlabels; i++)
            if (!value_eq(x->series[s].values[i], values[i]))
                break;
        if (i == x->nlabels)
            return &x->series[s];
    }
    return NULL;
}

/* The series for values, made when it is new; NULL past the cap. */
static struct series *
series_get(metric_t *x, const char *const *values)
{
    struct series *s = series_find(x, values);

    if (s)
        return s;
    if (x->nseries == METRICS_MAX_SERIES) {
        if (x != x->reg->dropped)
            metrics_inc(x->reg->dropped, METRICS_L(x->name));
        return NULL;
    }
    if ((x->nseries & (x->nseries - 1)) == 0) /* 0, 1, 2, 4, ...: grow */
        x->series =
            xrealloc(x->series, sizeof(*x->series) *
                                    (size_t)(x->nseries ? 2 * x->nseries : 1));
    s = &x->series[x->nseries++];
    memset(s, 0, sizeof(*s));
    for (int i = 0; i < x->nlabels; i++) {
        const char *v = values[i] ? values[i] : "";

        /* xstrndup() copies n bytes whatever their length: bound it here. */
        s->values[i] = xstrndup(v, strnlen(v, METRICS_LABEL_MAX));
    }
    if (x->type == M_HISTOGRAM)
        s->bucket = xcalloc((size_t)x->nbounds + 1, sizeof(*s->bucket));
    return s;
}

void
metrics_add(metric_t *c, const char *const *values, double v)
{
    struct series *s;

    if (c == NULL || c->type == M_HISTOGRAM || isnan(v) ||
        (c->type == M_COUNTER && v < 0))
        return;
    if ((s = series_get(c, values)) != NULL)
        s->value += v;
}

void
metrics_inc(metric_t *c, const char *const *values)
{
    metrics_add(c, values, 1);
}

void
metrics_set(metric_t *g, const char *const *values, double v)
{
    struct series *s;

    if (g == NULL || g->type == M_HISTOGRAM || isnan(v))
        return;
    if ((s = series_get(g, values)) != NULL)
        s->value = v;
}

void
metrics_dec(metric_t *g, const char *const *values)
{
    if (g && g->type == M_GAUGE)
        metrics_add(g, values, -1);
}

void
metrics_observe(metric_t *h, const char *const *values, double v)
{
    struct series *s;
    int b;

    if (h == NULL || h->type != M_HISTOGRAM || isnan(v))
        return;
    if ((s = series_get(h, values)) == NULL)
        return;
    for (b = 0; b < h->nbounds && v > h->bounds[b]; b++)
        ;
    s->bucket[b]++;
    s->count++;
    s->sum += v;
}

double
metrics_get(const metric_t *c, const char *const *values)
{
    const struct series *s;

    if (c == NULL || (s = series_find(c, values)) == NULL)
        return 0;
    return c->type == M_HISTOGRAM ? (double)s->count : s->value;
}

int
metrics_on_collect(metrics_t *m, metrics_collect_fn *fn, void *arg)
{
    if (m->ncollect == (int)(sizeof(m->collect) / sizeof(m->collect[0])))
        return ERR_TOO_BIG;
    m->collect[m->ncollect].fn = fn;
    m->collect[m->ncollect].arg = arg;
    m->ncollect++;
    return 0;
}

/* A sample value as Prometheus reads it: integers without a fraction,
 * others with 15 significant digits, and +Inf, -Inf, NaN by name. */
static void
put_number(buf_t *out, double v)
{
    if (isnan(v))
        buf_adds(out, "NaN");
    else if (isinf(v))
        buf_adds(out, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0) /* 2^53 */
        buf_printf(out, "%lld", (long long)v);
    else
        buf_printf(out, "%.15g", v);
}

/* HELP text escapes backslash and newline; a label value also the
 * double quote. */
static void
put_escaped(buf_t *out, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            buf_adds(out, "\\\\");
        else if (*s == '\n')
            buf_adds(out, "\\n");
        else if (*s == '"' && quote)
            buf_adds(out, "\\\"");
        else
            buf_addc(out, *s);
    }
}

/* name{a="x",b="y"[,le="..."]} with extra naming the le bound, or none. */
static void
put_series_name(buf_t *out, const metric_t *x, const char *suffix,
                const struct series *s, const char *le)
{
    int n = 0;

    buf_adds(out, x->name);
    buf_adds(out, suffix);
    if (x->nlabels == 0 && le == NULL)
        return;
    buf_addc(out, '{');
    for (int i = 0; i < x->nlabels; i++, n++) {
        buf_printf(out, "%s%s=\"", n ? "," : "", x->labels[i]);
        put_escaped(out, s->values[i], 1);
        buf_addc(out, '"');
    }
    if (le)
        buf_printf(out, "%sle=\"%s\"", n ? "," : "", le);
    buf_addc(out, '}');
}

static void
render_histogram(buf_t *out, const metric_t *x, const struct series *s)
{
    uint64_t cum = 0;
    char le[40];

    for (int b = 0; b <= x->nbounds; b++) {
        buf_t num = BUF_INIT;

        cum += s->bucket[b];
        if (b < x->nbounds) {
            put_number(&num, x->bounds[b]);
            snprintf(le, sizeof(le), "%s", num.data);
        } else {
            snprintf(le, sizeof(le), "+Inf");
        }
        buf_free(&num);
        put_series_name(out, x, "_bucket", s, le);
        buf_printf(out, " %llu\n", (unsigned long long)cum);
    }
    put_series_name(out, x, "_sum", s, NULL);
    buf_addc(out, ' ');
    put_number(out, s->sum);
    buf_addc(out, '\n');
    put_series_name(out, x, "_count", s, NULL);
    buf_printf(out, " %llu\n", (unsigned long long)s->count);
}

void
metrics_render(metrics_t *m, buf_t *out)
{
    for (int i = 0; i < m->ncollect; i++)
        m->collect[i].fn(m, m->collect[i].arg);
    for (const metric_t *x = m->head; x; x = x->next) {
        buf_printf(out, "# HELP %s ", x->name);
        put_escaped(out, x->help, 0);
        buf_printf(out, "\n# TYPE %s %s\n", x->name, type_names[x->type]);
        for (int s = 0; s < x->nseries; s++) {
            if (x->type == M_HISTOGRAM) {
                render_histogram(out, x, &x->series[s]);
                continue;
            }
            put_series_name(out, x, "", &x->series[s], NULL);
            buf_addc(out, ' ');
            put_number(out, x->series[s].value);
            buf_addc(out, '\n');
        }
    }
}

static void
on_process_collect(metrics_t *m, void *arg)
{
    struct process_metrics *pm = arg;
    struct rusage ru;
    long pages = 0, rss = 0;
    FILE *f;

    (void)m;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        metrics_set(pm->cpu, NULL,
                    (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                        (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) /
                            1e6);
    if ((f = fopen("/proc/self/statm", "re")) != NULL) {
        if (fscanf(f, "%ld %ld", &pages, &rss) == 2)
            metrics_set(pm->rss, NULL, (double)rss * sysconf(_SC_PAGESIZE));
        fclose(f);
    }
}

void
metrics_add_process(metrics_t *m, const char *service, const char *instance)
{
    struct process_metrics *pm = &m->proc;

    metrics_set(metrics_gauge(m, "process_start_time_seconds",
                              "Start time of the process since the epoch, "
                              "in seconds",
                              NULL),
                NULL, (double)(clock_wall_us() / 1000000));
    metrics_set(metrics_gauge(m, "samotop_actor_info",
                              "The actor this process runs, and its copy",
                              "service,instance"),
                METRICS_L(service, instance), 1);
    pm->cpu =
        metrics_counter(m, "process_cpu_seconds_total",
                        "User and system CPU time spent, in seconds", NULL);
    pm->rss = metrics_gauge(m, "process_resident_memory_bytes",
                            "Resident memory size in bytes", NULL);
    metrics_on_collect(m, on_process_collect, pm);
}
