/*
 * admin_call.c - samotop-admin call: sends one envelope of any type and
 * prints the reply as JSON, for operators and tests that need to poke an
 * actor by hand. Secrets in the reply are masked like the tap does.
 *
 *   call [--timeout MS] [--trace ID] TYPE [KEY=STRING | KEY:=INT|true|false]...
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "bus.h"
#include "lib/err.h"

/* Adds one KEY=VALUE argument to body; returns 0 or -1 (printed). */
static int
add_field(value_t *body, const char *arg)
{
    const char *eq = strchr(arg, '=');
    char key[128];
    size_t kl;
    int typed;

    if (eq == NULL || eq == arg) {
        fprintf(stderr, "call: \"%s\" is not KEY=VALUE or KEY:=VALUE\n", arg);
        return -1;
    }
    typed = eq[-1] == ':';
    kl = (size_t)(eq - arg) - (typed ? 1 : 0);
    if (kl == 0 || kl >= sizeof(key)) {
        fprintf(stderr, "call: bad key in \"%s\"\n", arg);
        return -1;
    }
    memcpy(key, arg, kl);
    key[kl] = '\0';
    if (!typed) {
        value_set_str(body, key, eq + 1);
    } else if (strcmp(eq + 1, "true") == 0 || strcmp(eq + 1, "false") == 0) {
        value_set_bool(body, key, eq[1] == 't');
    } else {
        char *end;
        long long n;

        errno = 0;
        n = strtoll(eq + 1, &end, 10);
        if (errno || *end || eq[1] == '\0') {
            fprintf(stderr, "call: %s: \"%s\" is not an integer, true or "
                            "false\n", key, eq + 1);
            return -1;
        }
        value_set_int(body, key, n);
    }
    return 0;
}

int
admin_call(const config_t *cfg, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"timeout", required_argument, NULL, 't'},
        {"trace", required_argument, NULL, 'r'},
        {NULL, 0, NULL, 0}};
    long timeout_ms = 5000;
    const char *trace = NULL;
    bus_client_t *client;
    envelope_t *req, *reply = NULL;
    char why[256], service[64], *json;
    int c, rc;

    optind = 1;
    while ((c = getopt_long(argc, argv, "+t:r:", longopts, NULL)) != -1) {
        char *end;

        switch (c) {
        case 't':
            timeout_ms = strtol(optarg, &end, 10);
            if (*end || timeout_ms < 1 || timeout_ms > 600000) {
                fprintf(stderr, "call: --timeout wants 1..600000 ms\n");
                return 2;
            }
            break;
        case 'r':
            trace = optarg;
            break;
        default:
            return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "call: which TYPE?\n");
        return 2;
    }
    if (bus_service_of(argv[optind], service, sizeof(service)) != 0) {
        fprintf(stderr, "call: \"%s\" is not SERVICE.NAME\n", argv[optind]);
        return 2;
    }
    req = envelope_new(argv[optind], trace, timeout_ms);
    for (int i = optind + 1; i < argc; i++)
        if (add_field(envelope_body(req), argv[i]) != 0) {
            envelope_destroy(&req);
            return 2;
        }
    if (envelope_check_body(req, why, sizeof(why)) != 0) {
        fprintf(stderr, "call: %s\n", why);
        envelope_destroy(&req);
        return 2;
    }
    client = bus_client_new(NULL, config_str(cfg, "bus.clients"),
                            (size_t)config_int(cfg, "bus.max_envelope"), why,
                            sizeof(why));
    if (client == NULL) {
        fprintf(stderr, "call: %s\n", why);
        envelope_destroy(&req);
        return 1;
    }
    rc = bus_client_call(client, &req, &reply, why, sizeof(why));
    bus_client_destroy(&client);
    if (rc != 0) {
        fprintf(stderr, "call: %s (%s)\n", why, err_name(rc));
        return 1;
    }
    json = envelope_to_json(reply, ENVELOPE_JSON_MASK);
    printf("%s\n", json);
    free(json);
    rc = envelope_code(reply) < 400 ? 0 : 1;
    envelope_destroy(&reply);
    return rc;
}
