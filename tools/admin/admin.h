/*
 * admin.h - samotop-admin, the management command line.
 *
 * Each verb is a function in its own file (admin_<verb>.c) listed in the
 * verb table of admin_main.c. A verb returns the process exit status:
 * 0 done, 1 the thing asked for failed (printed on stderr), 2 bad usage.
 */
#ifndef SAMOTOP_ADMIN_H
#define SAMOTOP_ADMIN_H

#include "lib/config.h"

struct admin_verb {
    const char *name;
    const char *usage;
    int (*run)(const config_t *cfg, int argc, char **argv);
};

/* ping [--count N] [--timeout MS] [SERVICE...]: asks each service's
 * workers who they are, over the bus. */
int admin_ping(const config_t *cfg, int argc, char **argv);

/* call [--timeout MS] [--trace ID] TYPE [KEY=VALUE]...: one request of
 * any type; prints the reply as JSON. */
int admin_call(const config_t *cfg, int argc, char **argv);

#endif
