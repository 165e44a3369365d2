/*
 * admin_sub.c - "VERB SUB [ARGS]" for the account verbs: help, options,
 * argument counts and the messages every sub-verb prints.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "admin.h"

static const struct {
    unsigned opt;
    const char *name;
} opt_names[] = {
    {ADMIN_OPT_FORCE, "--force"},
    {ADMIN_OPT_NONE, "--none"},
};

#define NOPTS (sizeof(opt_names) / sizeof(opt_names[0]))

static void
group_usage(FILE *f, const char *verb, const char *about,
            const struct admin_sub *subs)
{
    fprintf(f, "usage: samotop-admin %s SUBVERB [ARGS]\n%s\n\n", verb, about);
    for (const struct admin_sub *s = subs; s->name; s++)
        fprintf(f, "  %s %s %s\n", verb, s->name, s->args);
    fprintf(f, "\n\"samotop-admin %s SUBVERB --help\" says more.\n", verb);
}

static void
sub_usage(FILE *f, const char *verb, const struct admin_sub *s)
{
    fprintf(f, "usage: samotop-admin %s %s %s\n", verb, s->name, s->args);
}

static void
sub_help(const char *verb, const struct admin_sub *s)
{
    sub_usage(stdout, verb, s);
    printf("\n%s\n", s->help);
}

int
admin_sub_dispatch(const config_t *cfg, const char *verb, const char *about,
                   const struct admin_sub *subs, int argc, char **argv)
{
    const struct admin_sub *s;
    struct admin_cmd cmd;
    bool opts_done = false;
    int n = 0;

    if (argc < 2) {
        group_usage(stderr, verb, about, subs);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        group_usage(stdout, verb, about, subs);
        return 0;
    }
    for (s = subs; s->name; s++)
        if (strcmp(s->name, argv[1]) == 0)
            break;
    if (s->name == NULL) {
        fprintf(stderr, "%s: unknown subverb \"%s\"\n", verb, argv[1]);
        group_usage(stderr, verb, about, subs);
        return 2;
    }
    memset(&cmd, 0, sizeof(cmd));
    snprintf(cmd.name, sizeof(cmd.name), "%s %s", verb, s->name);
    cmd.cfg = cfg;
    /* argv[2..] minus the options, kept in place (argv is ours). */
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        size_t k;

        if (!opts_done && strcmp(a, "--") == 0) {
            opts_done = true;
            continue;
        }
        if (opts_done || a[0] != '-' || a[1] == '\0') {
            argv[2 + n++] = argv[i];
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            sub_help(verb, s);
            return 0;
        }
        for (k = 0; k < NOPTS; k++)
            if ((s->opts & opt_names[k].opt) &&
                strcmp(a, opt_names[k].name) == 0)
                break;
        if (k == NOPTS) {
            fprintf(stderr, "%s: unknown option \"%s\"\n", cmd.name, a);
            sub_usage(stderr, verb, s);
            return 2;
        }
        cmd.opts |= opt_names[k].opt;
    }
    if (n < s->min || (s->max >= 0 && n > s->max)) {
        fprintf(stderr, "%s: %s\n", cmd.name,
                n < s->min ? "too few arguments" : "too many arguments");
        sub_usage(stderr, verb, s);
        return 2;
    }
    cmd.argc = n;
    cmd.argv = argv + 2;
    return s->run(&cmd);
}

int
admin_fail(const struct admin_cmd *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

void
admin_warn(const struct admin_cmd *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: warning: ", cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
