/*
 * auth_main.c - samotop-auth: credential checks (SASL PLAIN and LOGIN)
 * against the accounts in Redis, and throttling of failed logins.
 *
 * The skeleton (bus/actor.c) registers the "auth" service on the bus and
 * answers auth.ping; the handler table below lists every other envelope
 * type this actor takes. The work is in auth_handlers.c (Redis and the
 * flow), auth_pool.c (scrypt on worker threads) and auth_sasl.c (what the
 * client sent).
 */
#include "auth.h"

static const struct handler auth_handlers[] = {
    {ENV_AUTH_VERIFY, auth_on_verify}, /* from listener and mailbox */
    {ENV_NONE, NULL}};

int
main(int argc, char **argv)
{
    return actor_main(argc, argv,
                      &(struct actor_desc){.name = "auth",
                                           .handlers = auth_handlers,
                                           .init = auth_init,
                                           .fini = auth_fini,
                                           .ready = auth_ready});
}
