/*
 * smtp_auth.c - AUTH (RFC 4954) for the ESMTP engine: the 334 exchange of
 * PLAIN (RFC 4616) and LOGIN, run here; any other mechanism offered is run
 * by the caller, one SMTP_EV_AUTH per response. Responses are checked for
 * canonical base64 (RFC 4954 4: 501 otherwise; lib/base64.h) and handed
 * over as received.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/base64.h"
#include "lib/smtp_server_int.h"
#include "lib/xalloc.h"

/* Decodes s, which must be canonical padded base64 (RFC 4648 4 and 3.5).
 * Returns false when it is not. Else true, with *out (when out is not
 * NULL) a new string of the bytes, or NULL when they hold a NUL; with out
 * NULL the bytes are only checked, and wiped. */
static bool
b64_decode(const char *s, char **out)
{
    size_t n = strlen(s);
    char *d = xmalloc(n / 4 * 3 + 2);
    long k = base64_decode(s, n, d, n / 4 * 3 + 1, BASE64_PADDED);

    if (k >= 0 && out != NULL && memchr(d, '\0', (size_t)k) == NULL) {
        d[k] = '\0';
        *out = d;
        return true;
    }
    if (out != NULL)
        *out = NULL;
    if (k > 0)
        explicit_bzero(d, (size_t)k);
    free(d);
    return k >= 0;
}

static bool
mech_listed(const char *list, const char *mech)
{
    size_t n = strlen(mech);

    for (const char *p = list; *p;) {
        size_t k;

        while (*p == ' ')
            p++;
        k = strcspn(p, " ");
        if (k == n && strncasecmp(p, mech, n) == 0)
            return true;
        p += k;
    }
    return false;
}

/* Frees a string that held credentials, cleared first so that no copy of
 * a password outlives the exchange in freed memory. */
static void
wipe(char **s_p)
{
    if (*s_p) {
        explicit_bzero(*s_p, strlen(*s_p));
        free(*s_p);
        *s_p = NULL;
    }
}

void
smtp_auth_clear(smtp_server_t *srv)
{
    for (int i = 0; i < 2; i++)
        wipe(&srv->resp[i]);
    wipe(&srv->user);
    wipe(&srv->pass);
    srv->nresp = srv->round = 0;
}

/* Asks for the next SASL response (RFC 4954 4: "334" SP base64). */
static void
auth_challenge(smtp_server_t *srv, const char *b64)
{
    smtp_server_put_reply(srv, 334, NULL, b64);
    srv->st = ST_AUTH;
}

/* The responses are all in: hand them to the caller. */
static void
auth_event(smtp_server_t *srv)
{
    struct smtp_event *ev = &srv->dec;

    memset(&ev->auth, 0, sizeof(ev->auth));
    ev->auth.mech = srv->mech_name;
    ev->auth.nresp = srv->nresp;
    for (int i = 0; i < srv->nresp; i++)
        ev->auth.resp[i] = srv->resp[i];
    if (srv->mech == MECH_LOGIN) {
        /* Decoded as they came (smtp_auth_response); NULL held a NUL. */
        if (srv->user == NULL || srv->pass == NULL) {
            smtp_auth_clear(srv);
            srv->st = ST_CMD;
            smtp_server_refuse(srv, 501, "5.5.2",
                               "Invalid authentication response");
            return;
        }
        ev->auth.username = srv->user;
        ev->auth.password = srv->pass;
    }
    ev->auth.round = srv->round;
    srv->st = ST_CMD;
    smtp_server_decide(srv, SMTP_EV_AUTH);
}

/* Takes one SASL response: the AUTH command's initial one, or a line. */
void
smtp_auth_response(smtp_server_t *srv, const char *resp)
{
    if (strcmp(resp, "*") == 0) {
        /* RFC 4954 4: the client cancels. */
        smtp_auth_clear(srv);
        srv->st = ST_CMD;
        smtp_server_refuse(srv, 501, "5.7.0", "Authentication cancelled");
        return;
    }
    /* LOGIN's two responses are the user name and password themselves:
     * decoded here, once. */
    if (!b64_decode(resp, srv->mech != MECH_LOGIN ? NULL
                          : srv->nresp == 0   ? &srv->user
                                              : &srv->pass)) {
        smtp_auth_clear(srv);
        srv->st = ST_CMD;
        smtp_server_refuse(srv, 501, "5.5.2", "Invalid base64 data");
        return;
    }
    if (srv->mech == MECH_OTHER) {
        free(srv->resp[0]);
        srv->resp[0] = xstrdup(resp);
        srv->nresp = 1;
        auth_event(srv);
        return;
    }
    srv->resp[srv->nresp++] = xstrdup(resp);
    if (srv->mech == MECH_LOGIN && srv->nresp == 1) {
        auth_challenge(srv, "UGFzc3dvcmQ6"); /* "Password:" */
        return;
    }
    auth_event(srv);
}

/* AUTH mechanism [SP initial-response] (RFC 4954 4). */
void
smtp_auth_cmd(smtp_server_t *srv, char *arg)
{
    char *mech = arg, *init;

    if (!(srv->ext & SMTP_EXT_AUTH)) {
        smtp_server_refuse(srv, 502, "5.5.1", "Error: command not implemented");
        return;
    }
    if (!srv->esmtp) {
        smtp_server_refuse(srv, 503, "5.5.1", "Error: send EHLO first");
        return;
    }
    if (!smtp_server_auth_offered(srv)) {
        /* RFC 4954 6. */
        smtp_server_refuse(srv, 538, "5.7.11",
                           "Encryption required for requested "
                           "authentication mechanism");
        return;
    }
    if (srv->authed) {
        smtp_server_refuse(srv, 503, "5.5.1", "Error: already authenticated");
        return;
    }
    if (srv->trans) {
        smtp_server_refuse(srv, 503, "5.5.1",
                           "Error: MAIL transaction in progress");
        return;
    }
    init = strchr(arg, ' ');
    if (init) {
        *init++ = '\0';
        while (*init == ' ')
            init++;
        if (*init == '\0')
            init = NULL;
    }
    if (*mech == '\0' || (init && strchr(init, ' '))) {
        smtp_server_refuse(srv, 501, "5.5.4",
                           "Syntax: AUTH mechanism [response]");
        return;
    }
    if (strlen(mech) > MECH_MAX || !mech_listed(srv->auth_mechs, mech)) {
        smtp_server_refuse(srv, 504, "5.5.4",
                           "Unrecognized authentication type");
        return;
    }
    smtp_auth_clear(srv);
    for (size_t i = 0; i <= strlen(mech); i++)
        srv->mech_name[i] = (char)toupper((unsigned char)mech[i]);
    if (strcmp(srv->mech_name, "PLAIN") == 0)
        srv->mech = MECH_PLAIN;
    else if (strcmp(srv->mech_name, "LOGIN") == 0)
        srv->mech = MECH_LOGIN;
    else
        srv->mech = MECH_OTHER;

    if (init)
        /* RFC 4954 4: "=" is an empty initial response. */
        smtp_auth_response(srv, strcmp(init, "=") == 0 ? "" : init);
    else if (srv->mech == MECH_LOGIN)
        auth_challenge(srv, "VXNlcm5hbWU6"); /* "Username:" */
    else if (srv->mech == MECH_PLAIN)
        auth_challenge(srv, "");
    else
        auth_event(srv); /* the caller's first challenge */
}

bool
smtp_auth_answer(smtp_server_t *srv, int code, const char *text)
{
    if (code == 334) {
        /* Another round, of a mechanism the caller runs from now on. */
        for (int i = 0; i < 2; i++)
            wipe(&srv->resp[i]);
        srv->nresp = 0;
        srv->mech = MECH_OTHER;
        srv->round++;
        auth_challenge(srv, text);
        return true;
    }
    if (code / 100 == 2)
        srv->authed = true;
    smtp_auth_clear(srv);
    return false;
}
