/*
 * admin_main.c - samotop-admin: global options, then a verb.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "actor.h"
#include "admin.h"

static const struct admin_verb verbs[] = {
    {"ping", "ping [--count N] [--timeout MS] [SERVICE...]", admin_ping, 0},
    {"call", "call [--timeout MS] [--trace ID] TYPE [KEY=STR|KEY:=INT]...",
     admin_call, 0},
    {"domain", "domain add|del|list|catchall ...", admin_domain, 1},
    {"user", "user add|passwd|del|list|show|disable|enable|quota ...", admin_user, 1},
    {"alias", "alias add|del|list ...", admin_alias, 1},
    {"route", "route add|del|list ...", admin_route, 1},
    {"queue", "queue list|show|retry|delete ...", admin_queue, 1},
    {NULL, NULL, NULL, 0}};

static void
usage(FILE *f)
{
    fprintf(f, "usage: samotop-admin [--config FILE] [--set KEY=VALUE]... "
               "VERB [ARGS]\nverbs:\n");
    for (const struct admin_verb *v = verbs; v->name; v++)
        fprintf(f, "  %s\n", v->usage);
    fprintf(f, "\"samotop-admin help VERB\" says more.\n");
}

/* "help [VERB]": the verb list, or what "VERB --help" prints. */
static int
help(const char *name, const config_t *cfg)
{
    if (name == NULL) {
        usage(stdout);
        return 0;
    }
    for (const struct admin_verb *v = verbs; v->name; v++) {
        char *argv[] = {(char *)v->name, "--help", NULL};

        if (strcmp(v->name, name) != 0)
            continue;
        if (v->subverbs)
            return v->run(cfg, 2, argv);
        printf("usage: samotop-admin %s\n", v->usage);
        return 0;
    }
    fprintf(stderr, "samotop-admin: unknown verb \"%s\"\n", name);
    usage(stderr);
    return 2;
}

int
main(int argc, char **argv)
{
    struct actor_args args;
    int first, rc;

    /* A Redis or broker that goes away mid-command is an error to report,
     * not a reason to die without a word. */
    signal(SIGPIPE, SIG_IGN);
    rc = actor_args_parse_verbs(argc, argv, "admin", &args, &first);
    if (rc > 0 && args.help_shown)
        usage(stdout); /* --help: the options are printed, now the verbs */
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    if (first >= argc) {
        usage(stderr);
        actor_args_free(&args);
        return 2;
    }
    if (strcmp(argv[first], "help") == 0) {
        rc = help(first + 1 < argc ? argv[first + 1] : NULL, args.cfg);
        actor_args_free(&args);
        return rc;
    }
    for (const struct admin_verb *v = verbs; v->name; v++)
        if (strcmp(v->name, argv[first]) == 0) {
            rc = v->run(args.cfg, argc - first, argv + first);
            actor_args_free(&args);
            return rc;
        }
    fprintf(stderr, "samotop-admin: unknown verb \"%s\"\n", argv[first]);
    usage(stderr);
    actor_args_free(&args);
    return 2;
}
