/*
 * mailbox_imap.h - the mailbox actor's IMAP doors: listen.imap (STARTTLS,
 * RFC 3501 6.2.1) and listen.imaps (implicit TLS, RFC 8314), serving the
 * accounts' Maildirs to mail clients.
 *
 * mailbox_imap_start() binds both doors on the actor's loop and owns every
 * IMAP session from then on; mailbox_imap_stop() says BYE to each, closes
 * them and the doors, and frees all of it. A session joins the IMAP engine
 * (lib/imap_server.h) to a socket, to the auth actor over the bus (LOGIN,
 * AUTHENTICATE PLAIN) and to the folder store; everything runs on the
 * actor's loop thread. The inside (sessions, commands, FETCH, SEARCH,
 * notifications) is in mailbox_imap_int.h.
 */
#ifndef SAMOTOP_MAILBOX_IMAP_H
#define SAMOTOP_MAILBOX_IMAP_H

struct mailbox;
typedef struct mbimap mbimap_t;

/* Binds listen.imap and listen.imaps and starts serving; NULL when a door
 * cannot be had or TLS cannot be set up (the reason is logged), which
 * stops start-up. Caller owns the result. */
mbimap_t *mailbox_imap_start(struct mailbox *mb);

/* mailbox.ticket: a one-time ticket for the internal IMAP door, for an
 * account this copy owns, asked by the copy a client logged in on
 * (mailbox_imap_proxy.c, schemas/mailbox.ticket.json). */
struct actor;
struct bus_request;
void mailbox_on_ticket(struct actor *a, struct bus_request **req_p);

/* Closes every session ("* BYE" first) and both doors, then frees; NULL
 * is fine, and *im_p is nulled. */
void mailbox_imap_stop(mbimap_t **im_p);

#endif
