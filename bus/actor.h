/*
 * actor.h - the skeleton every actor process runs on (STYLE.md section 2).
 *
 * actor_main() owns argv, the configuration, logging, signals, the loop,
 * the bus worker that registers the actor's service and the bus client it
 * uses to call other services. The actor supplies a descriptor: its name
 * (also its service name), a handler table by envelope type, and optional
 * init/fini/tick hooks. Every actor answers "<name>.ping" without writing
 * anything for it. A request of a type the table lacks is logged by name,
 * counted and answered with a 502 error reply; it never aborts.
 *
 * Handlers own the request they are given (*req_p is nulled) and answer it
 * with actor_reply() or actor_fail(), at once or later from a callback.
 */
#ifndef SAMOTOP_ACTOR_H
#define SAMOTOP_ACTOR_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "bus.h"
#include "envelope.h"
#include "lib/config.h"
#include "lib/loop.h"
#include "lib/metrics.h"

typedef struct actor actor_t;

typedef void actor_handler_fn(actor_t *a, bus_request_t **req_p);

struct handler {
    enum env_type type;
    actor_handler_fn *fn;
};

struct actor_desc {
    const char *name;
    const struct handler *handlers; /* ends with { ENV_NONE, NULL } */
    int (*init)(actor_t *a);        /* 0, or an error that stops start-up */
    void (*fini)(actor_t *a);
    void (*tick)(actor_t *a);
    int tick_ms;
    /* /ready beyond a broker being heard: 0 when what the actor needs is
     * there (its Redis connection), or -1 with a short reason in why.
     * NULL: ready whenever healthy. */
    int (*ready)(actor_t *a, char *why, size_t whylen);
};

/* What the command line and the configuration gave a Samotop program. */
struct actor_args {
    config_t *cfg;
    char instance[32];
    bool help_shown; /* --help printed the options (a tool adds its own) */
};

/* Parses --config FILE, --set KEY=VALUE, --instance ID, --print-config,
 * --help; loads the configuration and starts logging as name/instance.
 * Returns 0 to go on, 1 when the program has nothing more to do (help
 * or the configuration printed; help_shown says which) or -1 on a usage
 * or configuration error, already reported on stderr naming the key and
 * the reason. */
int actor_args_parse(int argc, char **argv, const char *name,
                     struct actor_args *out);

/* The same for a tool with verbs: options end at the first other
 * argument, whose index goes into *first_arg (argc when there is none). */
int actor_args_parse_verbs(int argc, char **argv, const char *name,
                           struct actor_args *out, int *first_arg);

/* The same for a tool with options of its own: extra (ending with a zero
 * entry) are added to the common ones, and on_extra is called for each
 * one met; it returns 0, or -1 after printing why the option is bad. */
struct option;
int actor_args_parse_opts(int argc, char **argv, const char *name,
                          struct actor_args *out,
                          const struct option *extra,
                          int (*on_extra)(int opt, const char *arg,
                                          void *ctx),
                          void *ctx);
void actor_args_free(struct actor_args *args);

/* Runs the actor; returns the process exit status. */
int actor_main(int argc, char **argv, const struct actor_desc *desc);

loop_t *actor_loop(actor_t *a);
const config_t *actor_config(const actor_t *a);
/* The client for calling other services; borrowed. */
bus_client_t *actor_client(actor_t *a);
/* "name/instance"; borrowed. */
const char *actor_name(const actor_t *a);
/* The process's metrics registry (lib/metrics.h), there from before init
 * to after fini; borrowed. With metrics.listen set it is served over HTTP
 * with /health (200 while a broker is heard from). Every actor counts its
 * answers by type and code and their latency here; actors register their
 * own metrics in init. */
metrics_t *actor_metrics(actor_t *a);
void actor_set_data(actor_t *a, void *data);
/* Called from init: the worker registers as service instead of the
 * actor's name (a shard of it, "mailbox.2": lib/shard.h). Returns 0, or
 * ERR_INVAL for an empty or too long name. */
int actor_set_service(actor_t *a, const char *service);
void *actor_data(actor_t *a);

/* Answers *req_p with *reply_p; takes both. Returns 0 or ERR_CLOSED. */
int actor_reply(actor_t *a, bus_request_t **req_p, envelope_t **reply_p);
/* Answers *req_p with an error reply; takes it. */
int actor_fail(actor_t *a, bus_request_t **req_p, int code,
               const char *ecode, const char *text);

#endif
