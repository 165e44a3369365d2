/*
 * admin_main.c - samotop-admin: global options, then a verb.
 */
#include <stdio.h>
#include <string.h>

#include "actor.h"
#include "admin.h"

static const struct admin_verb verbs[] = {
    {"ping", "ping [--count N] [--timeout MS] [SERVICE...]", admin_ping},
    {"call", "call [--timeout MS] [--trace ID] TYPE [KEY=STR|KEY:=INT]...",
     admin_call},
    {NULL, NULL, NULL}};

static void
usage(FILE *f)
{
    fprintf(f, "usage: samotop-admin [--config FILE] [--set KEY=VALUE]... "
               "VERB [ARGS]\nverbs:\n");
    for (const struct admin_verb *v = verbs; v->name; v++)
        fprintf(f, "  %s\n", v->usage);
}

int
main(int argc, char **argv)
{
    struct actor_args args;
    int first, rc;

    rc = actor_args_parse_verbs(argc, argv, "admin", &args, &first);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    if (first >= argc) {
        usage(stderr);
        actor_args_free(&args);
        return 2;
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
