/*
 * test_relay_worker.c - a stand-in for samotop-relay in the queue's tests:
 * a real bus worker of service "relay" (built on the actor skeleton) that
 * answers relay.send from a table in Redis instead of talking to another
 * server, since the real relay needs one.
 *
 * What it does for each recipient is the field of its address (or "*")
 * in the hash samotop-test:relay:codes: "250", "451", "550" (any reply
 * code), or "hang" (the request is kept and never answered); none means
 * 250. Every recipient of every request is logged with RPUSH to
 * samotop-test:relay:log as "<unix ms> <addr> <what> <queue_id>
 * <mail_from or <>>", counted in the hash samotop-test:relay:count, and
 * the message it came with is kept in samotop-test:relay:msg:<addr>.
 *
 * It talks to Redis with the synchronous store, which blocks its loop for
 * a moment per request: fine for a test, wrong for an actor.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actor.h"
#include "lib/clock.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "store.h"

#define MAX_HUNG 256

struct standin {
    store_t *store;
    bus_request_t *hung[MAX_HUNG];
    int nhung;
};

/* Runs one command; the reply's string (or "") into out when asked. */
static void
cmd(struct standin *s, char *out, size_t outlen, int argc,
    const char *const *argv, const size_t *lens)
{
    store_reply_t *r = NULL;
    char why[256];

    if (out)
        out[0] = '\0';
    if (store_cmd(s->store, &r, why, sizeof(why), argc, argv, lens) != 0) {
        log_warn(NULL, "standin_redis", "reason=%s", log_q(why));
        return;
    }
    if (out && store_reply_type(r) == STORE_STR)
        snprintf(out, outlen, "%s", store_reply_str(r, NULL));
    store_reply_free(&r);
}

static void
what_for(struct standin *s, const char *addr, char *out, size_t outlen)
{
    const char *a1[] = {"HGET", "samotop-test:relay:codes", addr};
    const char *a2[] = {"HGET", "samotop-test:relay:codes", "*"};

    cmd(s, out, outlen, 3, a1, NULL);
    if (out[0] == '\0')
        cmd(s, out, outlen, 3, a2, NULL);
    if (out[0] == '\0')
        snprintf(out, outlen, "250");
}

static const char *
ecode_of(int code)
{
    switch (code) {
    case 250:
        return "2.0.0";
    case 451:
        return "4.3.0";
    case 550:
        return "5.1.1";
    default:
        return code < 300 ? "2.0.0" : code < 500 ? "4.0.0" : "5.0.0";
    }
}

static const char *
text_of(int code)
{
    switch (code) {
    case 250:
        return "Ok: queued by the stand-in";
    case 451:
        return "Temporary failure, try again later";
    case 550:
        return "Recipient address rejected: User unknown";
    default:
        return "stand-in reply";
    }
}

static void
on_send(actor_t *a, bus_request_t **req_p)
{
    struct standin *s = actor_data(a);
    const envelope_t *env = bus_request_envelope(*req_p);
    const value_t *body = envelope_body_peek(env);
    const value_t *rcpts = value_get(body, ENV_KEY_RCPTS);
    const char *qid = envelope_get_str(env, ENV_KEY_QUEUE_ID);
    const char *from = envelope_get_str(env, ENV_KEY_MAIL_FROM);
    size_t msg_len = 0;
    const char *msg = value_str(value_get(body, ENV_KEY_MESSAGE), &msg_len);
    value_t *results = value_new_array();
    envelope_t *reply;
    bool hang = false;
    int worst = 250;

    for (size_t i = 0; i < value_count(rcpts); i++) {
        const char *addr = value_get_str(value_at(rcpts, i), ENV_KEY_ADDR);
        char what[32], line[1024], key[700];
        value_t *item = value_new_map();
        int code;

        addr = addr ? addr : "";
        what_for(s, addr, what, sizeof(what));
        snprintf(line, sizeof(line), "%lld %s %s %s %s",
                 (long long)(clock_wall_us() / 1000), addr, what,
                 qid ? qid : "-", from && *from ? from : "<>");
        {
            const char *lg[] = {"RPUSH", "samotop-test:relay:log", line};
            const char *ct[] = {"HINCRBY", "samotop-test:relay:count", addr,
                                "1"};
            const char *ms[] = {"SET", key, msg ? msg : ""};
            size_t ml[] = {3, 0, msg_len};

            snprintf(key, sizeof(key), "samotop-test:relay:msg:%s", addr);
            ml[1] = strlen(key);
            cmd(s, NULL, 0, 3, lg, NULL);
            cmd(s, NULL, 0, 4, ct, NULL);
            cmd(s, NULL, 0, 3, ms, ml);
        }
        if (strcmp(what, "hang") == 0) {
            hang = true;
            code = 451;
        } else {
            code = atoi(what);
        }
        value_set_str(item, ENV_KEY_ADDR, addr);
        value_set_int(item, ENV_KEY_CODE, code);
        value_set_str(item, ENV_KEY_ECODE, ecode_of(code));
        value_set_str(item, ENV_KEY_TEXT, text_of(code));
        value_set_str(item, ENV_KEY_MX, "mx.stand-in.test:25");
        value_push_take(results, &item);
        if (code > worst)
            worst = code;
    }
    log_info(envelope_trace(env), "standin_send",
             "queue_id=%s rcpts=%zu worst=%d hang=%d", qid ? qid : "-",
             value_count(rcpts), worst, (int)hang);
    if (hang && s->nhung < MAX_HUNG) {
        value_destroy(&results);
        s->hung[s->nhung++] = *req_p;
        *req_p = NULL;
        return;
    }
    reply = envelope_new_reply(env, worst, ecode_of(worst), text_of(worst));
    value_set_take(envelope_body(reply), ENV_KEY_RESULTS, &results);
    actor_reply(a, req_p, &reply);
}

static int
standin_init(actor_t *a)
{
    struct standin *s = xcalloc(1, sizeof(*s));
    char why[256];

    s->store = store_connect(actor_config(a), 2000, why, sizeof(why));
    if (s->store == NULL) {
        log_err(NULL, "standin_redis", "reason=%s", log_q(why));
        free(s);
        return ERR_REDIS;
    }
    actor_set_data(a, s);
    return 0;
}

static void
standin_fini(actor_t *a)
{
    struct standin *s = actor_data(a);

    for (int i = 0; i < s->nhung; i++)
        bus_request_destroy(&s->hung[i]);
    store_destroy(&s->store);
    free(s);
}

static const struct handler standin_handlers[] = {{ENV_RELAY_SEND, on_send},
                                                  {ENV_NONE, NULL}};

int
main(int argc, char **argv)
{
    return actor_main(argc, argv,
                      &(struct actor_desc){.name = "relay",
                                           .handlers = standin_handlers,
                                           .init = standin_init,
                                           .fini = standin_fini});
}
