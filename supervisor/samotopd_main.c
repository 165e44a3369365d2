/*
 * samotopd: the command line. The work is in supervisor.c.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "lib/log.h"
#include "lib/xalloc.h"

#include "supervisor.h"

/* Exit status for a bad command line or configuration, as sysexits-minded
 * scripts (and our deploy files) expect: distinct from a crash (1). */
#define EXIT_USAGE 2

static void
usage(FILE *f)
{
    fprintf(f, "usage: samotopd [--config FILE] [--set key=value]... "
               "[--print-config]\n"
               "\n"
               "Starts redis-server, the bus and every Samotop actor on this "
               "host,\n"
               "restarts any that dies, and stops them all on SIGTERM or "
               "SIGINT.\n"
               "\n"
               "  --config FILE     configuration file (else $SAMOTOP_CONFIG)\n"
               "  --set key=value   override one key; repeatable; passed on "
               "to the actors\n"
               "  --print-config    print the configuration in force and exit\n"
               "  --help            this text\n"
               "\n"
               "Every key can also be set as SAMOTOP_<KEY>, e.g. "
               "SAMOTOP_REDIS_PORT.\n");
}

static int
config_fail(const char *why)
{
    log_event(LL_FATAL, NULL, "config", "reason=%s", log_q(why));
    return EXIT_USAGE;
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"set", required_argument, NULL, 's'},
        {"print-config", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct supervisor_opts opts = {0};
    char **sets = NULL, why[512];
    int nsets = 0, print = 0, ch, rc;
    const char *config_path = NULL;
    config_t *cfg;

    log_init("samotopd", NULL);
    while ((ch = getopt_long(argc, argv, "c:s:ph", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config_path = optarg;
            break;
        case 's':
            if (strchr(optarg, '=') == NULL || optarg[0] == '=') {
                fprintf(stderr, "samotopd: --set wants key=value, not \"%s\"\n",
                        optarg);
                return EXIT_USAGE;
            }
            sets = xrealloc(sets, sizeof(*sets) * (size_t)(nsets + 1));
            sets[nsets++] = optarg;
            break;
        case 'p':
            print = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "samotopd: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (config_path == NULL) {
        config_path = getenv("SAMOTOP_CONFIG");
        if (config_path != NULL && *config_path == '\0')
            config_path = NULL;
    }

    cfg = config_new();
    rc = config_load(cfg, config_path, why, sizeof(why));
    for (int i = 0; rc == 0 && i < nsets; i++) {
        char *key = xstrndup(sets[i], strcspn(sets[i], "="));

        rc = config_set(cfg, key, sets[i] + strlen(key) + 1, why, sizeof(why));
        free(key);
    }
    if (rc != 0) {
        config_destroy(&cfg);
        free(sets);
        return config_fail(why);
    }
    log_set_level(
        (enum log_level)log_level_parse(config_str(cfg, "log.level")));
    config_warn_env_unknown();
    if (print) {
        config_dump(cfg, stdout);
        rc = 0;
    } else {
        opts.config_path = config_path;
        opts.sets = sets;
        opts.nsets = nsets;
        rc = supervisor_main(cfg, &opts);
    }
    config_destroy(&cfg);
    free(sets);
    return rc;
}
