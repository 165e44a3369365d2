#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "bus.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/shard.h"

static const char *const all_services[] = {"listener", "auth",  "guard",
                                           "mailbox",  "queue", "relay",
                                           NULL};

/* One ping; prints one line and returns 0 when it was answered. */
static int
ping_one(bus_client_t *client, const char *service, long timeout_ms)
{
    char type[96], why[256];
    envelope_t *req, *reply = NULL;
    int64_t t0 = clock_mono_us();
    int rc;

    /* A shard ("mailbox.2") is asked "mailbox.ping" by its own name. */
    snprintf(type, sizeof(type), "%.*s.ping", (int)strcspn(service, "."),
             service);
    req = envelope_new(type, NULL, timeout_ms);
    rc = bus_client_call_to(client, service, &req, &reply, why, sizeof(why));
    if (rc != 0) {
        printf("%-10s FAIL %s (%s)\n", service, why, err_name(rc));
        return 1;
    }
    if (envelope_code(reply) != 250) {
        printf("%-10s FAIL %d %s\n", service, envelope_code(reply),
               envelope_get_str(reply, ENV_KEY_TEXT));
        envelope_destroy(&reply);
        return 1;
    }
    printf("%-10s ok   actor=%s pid=%lld uptime_ms=%lld rtt_us=%lld\n",
           service, envelope_get_str(reply, ENV_KEY_ACTOR),
           (long long)envelope_get_int(reply, ENV_KEY_PID, 0),
           (long long)envelope_get_int(reply, ENV_KEY_UPTIME_MS, 0),
           (long long)(clock_mono_us() - t0));
    envelope_destroy(&reply);
    return 0;
}

/* Pings service; "mailbox" split into shards (mailbox.shards > 1) is
 * each of its shards, which must all answer. */
static int
ping_service(const config_t *cfg, bus_client_t *client, const char *service,
             long timeout_ms)
{
    int shards = shard_mailbox_count(cfg), failed = 0;
    char name[64];

    if (strcmp(service, "mailbox") != 0 || shards == 1)
        return ping_one(client, service, timeout_ms);
    for (int s = 0; s < shards; s++)
        failed |= ping_one(client,
                           shard_service(name, sizeof(name), "mailbox", s,
                                         shards),
                           timeout_ms);
    return failed;
}

int
admin_ping(const config_t *cfg, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"count", required_argument, NULL, 'n'},
        {"timeout", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0}};
    long count = 1, timeout_ms = 2000;
    bus_client_t *client;
    char why[256];
    int c, failed = 0;

    optind = 1;
    while ((c = getopt_long(argc, argv, "n:t:", longopts, NULL)) != -1) {
        char *end;

        switch (c) {
        case 'n':
            count = strtol(optarg, &end, 10);
            if (*end || count < 1 || count > 100000) {
                fprintf(stderr, "ping: --count wants 1..100000\n");
                return 2;
            }
            break;
        case 't':
            timeout_ms = strtol(optarg, &end, 10);
            if (*end || timeout_ms < 1 || timeout_ms > 600000) {
                fprintf(stderr, "ping: --timeout wants 1..600000 ms\n");
                return 2;
            }
            break;
        default:
            return 2;
        }
    }
    client = bus_client_new(NULL, config_str(cfg, "bus.clients"),
                            (size_t)config_int(cfg, "bus.max_envelope"), why,
                            sizeof(why));
    if (client == NULL) {
        fprintf(stderr, "ping: %s\n", why);
        return 1;
    }
    for (long i = 0; i < count; i++) {
        if (optind < argc) {
            for (int k = optind; k < argc; k++) {
                char check[96];

                snprintf(check, sizeof(check), "%s.ping", argv[k]);
                if (bus_service_of(check, why, sizeof(why)) != 0) {
                    fprintf(stderr, "ping: bad service name \"%s\"\n",
                            argv[k]);
                    bus_client_destroy(&client);
                    return 2;
                }
                failed |= ping_service(cfg, client, argv[k], timeout_ms);
            }
        } else {
            for (int k = 0; all_services[k]; k++)
                failed |= ping_service(cfg, client, all_services[k],
                                       timeout_ms);
        }
    }
    bus_client_destroy(&client);
    return failed ? 1 : 0;
}
