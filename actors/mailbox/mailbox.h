/*
 * mailbox.h - the mailbox actor's state and handlers (samotop-mailbox).
 *
 * mailbox_main.c lists the handlers; mailbox.c makes and frees the state
 * the skeleton keeps for the actor (actor_data()); each handler lives in
 * its own mailbox_<verb>.c. Everything runs on the actor's loop thread.
 */
#ifndef SAMOTOP_MAILBOX_H
#define SAMOTOP_MAILBOX_H

#include <stdint.h>

#include "actor.h"

#include "maildir.h"

/* Keys inside mailbox.deliver's rcpts items and its reply's results.
 * XXX: gen_env_types.py makes ENV_KEY_* only for top-level properties;
 * these belong there once it walks array items too. */
#define MAILBOX_KEY_MAILBOX "mailbox"
#define MAILBOX_KEY_FOLDER "folder"
#define MAILBOX_KEY_FILE "file"

/* Most recipients one mailbox.deliver may name; RFC 5321 asks for 100. */
#define MAILBOX_MAX_RCPTS 1000
/* Longest mail_from accepted for the Return-Path line (RFC 5321 allows a
 * 256-byte path; this leaves room for what other MTAs let through). */
#define MAILBOX_MAX_MAIL_FROM 512

struct mailbox {
    maildir_t *store;
    uint64_t delivered, deferred, refused, bad_requests;
};

/* Opens the Maildir store under the "data" folder; an error stops
 * start-up (the reason is logged). */
int mailbox_init(actor_t *a);
void mailbox_fini(actor_t *a);

/* mailbox.deliver: stores one message for several mailboxes and answers
 * with a status per recipient (mailbox_deliver.c). */
void mailbox_on_deliver(actor_t *a, bus_request_t **req_p);

#endif
