/*
 * test_imap_parse.c - the IMAP command grammar (lib/imap_parse.h).
 *
 * Each row is a command as the engine assembles it (the test adds the
 * final CRLF; literals are written inline, "{3}\r\nabc") and what the
 * parser must make of it: a dump of the parsed command, or "BAD reason"
 * (tagged) or "UNTAGGED reason" (no tag read). The dump is one line:
 * tag, command, then its arguments in a fixed order (see dump()).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <check.h>

#include "lib/buf.h"
#include "lib/imap_parse.h"

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

static void
dump_set(buf_t *b, const struct imap_seqset *s)
{
    for (size_t i = 0; i < s->n; i++) {
        const struct imap_seq_range *r = &s->r[i];

        if (i)
            buf_addc(b, ',');
        if (r->lo == IMAP_SEQ_STAR)
            buf_addc(b, '*');
        else
            buf_printf(b, "%u", r->lo);
        if (r->hi != r->lo) {
            if (r->hi == IMAP_SEQ_STAR)
                buf_adds(b, ":*");
            else
                buf_printf(b, ":%u", r->hi);
        }
    }
}

static void
dump_strs(buf_t *b, const struct imap_strs *s)
{
    buf_addc(b, '(');
    for (size_t i = 0; i < s->n; i++)
        buf_printf(b, "%s%s", i ? " " : "", s->v[i] ? s->v[i] : "NIL");
    buf_addc(b, ')');
}

static const char *const sk_names[IMAP_SK__COUNT] = {
    "AND",       "SEQ",        "ALL",        "ANSWERED", "BCC",
    "BEFORE",    "BODY",       "CC",         "DELETED",  "DRAFT",
    "FLAGGED",   "FROM",       "HEADER",     "KEYWORD",  "LARGER",
    "NEW",       "NOT",        "OLD",        "ON",       "OR",
    "RECENT",    "SEEN",       "SENTBEFORE", "SENTON",   "SENTSINCE",
    "SINCE",     "SMALLER",    "SUBJECT",    "TEXT",     "TO",
    "UID",       "UNANSWERED", "UNDELETED",  "UNDRAFT",  "UNFLAGGED",
    "UNKEYWORD", "UNSEEN",
};

static void
dump_key(buf_t *b, const struct imap_search_key *k)
{
    buf_adds(b, sk_names[k->type]);
    switch (k->type) {
    case IMAP_SK_AND:
    case IMAP_SK_NOT:
    case IMAP_SK_OR:
        buf_addc(b, '(');
        for (const struct imap_search_key *s = k->sub; s; s = s->next) {
            dump_key(b, s);
            if (s->next)
                buf_addc(b, ',');
        }
        buf_addc(b, ')');
        break;
    case IMAP_SK_SEQSET:
    case IMAP_SK_UID:
        buf_addc(b, ':');
        dump_set(b, &k->set);
        break;
    case IMAP_SK_BEFORE:
    case IMAP_SK_ON:
    case IMAP_SK_SINCE:
    case IMAP_SK_SENTBEFORE:
    case IMAP_SK_SENTON:
    case IMAP_SK_SENTSINCE:
        buf_printf(b, ":%04d-%02d-%02d", k->date.year, k->date.mon,
                   k->date.day);
        break;
    case IMAP_SK_LARGER:
    case IMAP_SK_SMALLER:
        buf_printf(b, ":%u", k->num);
        break;
    case IMAP_SK_HEADER:
        buf_printf(b, ":%s:%s", k->field, k->str);
        break;
    default:
        if (k->str)
            buf_printf(b, ":%s", k->str);
        break;
    }
}

static void
dump_att(buf_t *b, const struct imap_fetch_att *a)
{
    static const char *const names[] = {
        "ENVELOPE",      "FLAGS",       "INTERNALDATE", "RFC822",
        "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT",  "BODY",
        "BODYSTRUCTURE", "UID",
    };
    static const char *const spec[] = {
        "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"};

    if (a->item != IMAP_FETCH_SECTION) {
        buf_adds(b, names[a->item]);
        return;
    }
    buf_adds(b, a->peek ? "BODY.PEEK[" : "BODY[");
    for (int i = 0; i < a->sec.nparts; i++)
        buf_printf(b, "%s%u", i ? "." : "", a->sec.part[i]);
    if (a->sec.spec != IMAP_SEC_WHOLE)
        buf_printf(b, "%s%s", a->sec.nparts ? "." : "", spec[a->sec.spec]);
    if (a->sec.spec == IMAP_SEC_FIELDS || a->sec.spec == IMAP_SEC_FIELDS_NOT) {
        buf_addc(b, ' ');
        dump_strs(b, &a->sec.fields);
    }
    buf_addc(b, ']');
    if (a->partial)
        buf_printf(b, "<%u.%u>", a->offset, a->count);
}

/* The parsed command as one line. */
static void
dump(buf_t *b, const struct imap_cmd *c)
{
    buf_printf(b, "%s %s%s", c->tag, c->uid ? "UID " : "",
               imap_parse_cmd_name(c->id));
    switch (c->id) {
    case IMAP_CMD_LOGIN:
        buf_printf(b, " user=<%s> pass=<%s>", c->login.user, c->login.pass);
        break;
    case IMAP_CMD_AUTHENTICATE:
        buf_printf(b, " mech=%s ir=%s", c->authenticate.mech,
                   c->authenticate.ir ? c->authenticate.ir : "-");
        break;
    case IMAP_CMD_SELECT:
    case IMAP_CMD_EXAMINE:
    case IMAP_CMD_CREATE:
    case IMAP_CMD_DELETE:
    case IMAP_CMD_SUBSCRIBE:
    case IMAP_CMD_UNSUBSCRIBE:
        buf_printf(b, " mbox=<%s>", c->mailbox);
        break;
    case IMAP_CMD_RENAME:
        buf_printf(b, " from=<%s> to=<%s>", c->rename.from, c->rename.to);
        break;
    case IMAP_CMD_LIST:
    case IMAP_CMD_LSUB:
        buf_printf(b, " ref=<%s> pat=<%s>", c->list.ref, c->list.pattern);
        break;
    case IMAP_CMD_STATUS:
        buf_printf(b, " mbox=<%s> items=%u", c->status.mailbox,
                   c->status.items);
        break;
    case IMAP_CMD_APPEND:
        buf_printf(b, " mbox=<%s> flags=", c->append.mailbox);
        dump_strs(b, &c->append.flags);
        if (c->append.has_date)
            buf_printf(b, " date=%lld/%d", (long long)c->append.date,
                       c->append.zone);
        buf_printf(b, " msg=%zu:", c->append.len);
        buf_add(b, c->append.msg, c->append.len);
        break;
    case IMAP_CMD_SEARCH:
        buf_printf(b, " charset=%s ",
                   c->search.charset ? c->search.charset : "-");
        dump_key(b, c->search.prog);
        break;
    case IMAP_CMD_FETCH:
        buf_adds(b, " set=");
        dump_set(b, &c->fetch.set);
        buf_adds(b, " att=");
        for (size_t i = 0; i < c->fetch.natt; i++) {
            if (i)
                buf_addc(b, ',');
            dump_att(b, &c->fetch.att[i]);
        }
        buf_printf(b, " items=%#x seen=%d", c->fetch.items, c->fetch.sets_seen);
        break;
    case IMAP_CMD_STORE:
        buf_adds(b, " set=");
        dump_set(b, &c->store.set);
        buf_printf(b, " op=%c silent=%d flags=", "=+-"[c->store.op],
                   c -> store.silent);
        dump_strs(b, &c->store.flags);
        break;
    case IMAP_CMD_COPY:
    case IMAP_CMD_MOVE:
        buf_adds(b, " set=");
        dump_set(b, &c->copy.set);
        buf_printf(b, " mbox=<%s>", c->copy.mailbox);
        break;
    case IMAP_CMD_EXPUNGE:
        if (c->uid) {
            buf_adds(b, " set=");
            dump_set(b, &c->expunge.set);
        }
        break;
    case IMAP_CMD_ID:
        buf_adds(b, " params=");
        dump_strs(b, &c->idparams);
        break;
    case IMAP_CMD_ENABLE:
        buf_adds(b, " caps=");
        dump_strs(b, &c->enable);
        break;
    default:
        break;
    }
}

struct row {
    const char *label, *in, *want;
};

/* Rows holding a NUL, with their lengths. */
struct nul_row {
    const char *label, *in, *want;
    size_t inlen, wantlen;
};

#define NULROW(label, in, want)                                                \
    {                                                                          \
        label, in, want, sizeof(in) - 1, sizeof(want) - 1                      \
    }

#define LONG40 "0123456789012345678901234567890123456789"

static const struct row rows[] = {
    /* Tags and names. */
    {"simple", "a1 NOOP", "a1 NOOP"},
    {"lower-case name", "a1 noop", "a1 NOOP"},
    {"tag with odd chars", "A.1-x]y NOOP", "A.1-x]y NOOP"},
    {"trailing spaces", "a NOOP  ", "a NOOP"},
    {"empty line", "", "UNTAGGED Empty command line"},
    {"leading space", " a NOOP", "UNTAGGED Empty command line"},
    {"tag only", "a1", "BAD Missing command"},
    {"plus in tag", "a+1 NOOP", "UNTAGGED Invalid tag"},
    {"star tag", "* NOOP", "UNTAGGED Invalid tag"},
    {"brace in tag", "a{ NOOP", "UNTAGGED Invalid tag"},
    {"quote in tag", "a\" NOOP", "UNTAGGED Invalid tag"},
    {"unknown command", "a FROB", "BAD Unknown command"},
    {"two spaces", "a  NOOP", "BAD Expected an atom"},
    {"argument to noop", "a NOOP x", "BAD Unexpected argument"},
    {"capability", "t CAPABILITY", "t CAPABILITY"},
    {"logout", "t LOGOUT", "t LOGOUT"},
    {"starttls", "t STARTTLS", "t STARTTLS"},
    {"check", "t CHECK", "t CHECK"},
    {"close", "t CLOSE", "t CLOSE"},
    {"unselect", "t UNSELECT", "t UNSELECT"},
    {"argument to unselect", "t UNSELECT INBOX", "BAD Unexpected argument"},
    {"idle", "t IDLE", "t IDLE"},
    {"namespace", "t NAMESPACE", "t NAMESPACE"},
    {"expunge", "t EXPUNGE", "t EXPUNGE"},
    {"expunge with args", "t EXPUNGE 1", "BAD Unexpected argument"},

    /* LOGIN: astrings, quoted strings, literals. */
    {"login atoms", "a LOGIN user pass", "a LOGIN user=<user> pass=<pass>"},
    {"login quoted", "a LOGIN \"us er\" \"p\\\"w\\\\d\"",
     "a LOGIN user=<us er> pass=<p\"w\\d>"},
    {"login literal", "a LOGIN {4}\r\nuser {5+}\r\np ss!",
     "a LOGIN user=<user> pass=<p ss!>"},
    {"login empty quoted", "a LOGIN \"\" \"\"", "a LOGIN user=<> pass=<>"},
    {"login empty literal", "a LOGIN {0}\r\n {0}\r\n",
     "a LOGIN user=<> pass=<>"},
    {"login bracket atom", "a LOGIN u]x p", "a LOGIN user=<u]x> pass=<p>"},
    {"login utf-8 quoted", "a LOGIN \"j\xc3\xb6rg\" x",
     "a LOGIN user=<j\xc3\xb6rg> pass=<x>"},
    {"login missing pass", "a LOGIN user", "BAD Missing argument"},
    {"login bad escape", "a LOGIN \"a\\b\" x",
     "BAD Invalid escape in a quoted string"},
    {"login unterminated", "a LOGIN \"abc x", "BAD Unterminated quoted string"},
    {"login literal short", "a LOGIN {10}\r\nuser x",
     "BAD Literal shorter than announced"},
    {"login literal no CRLF", "a LOGIN {3}user x", "BAD Invalid literal"},
    {"login wildcard atom", "a LOGIN us*r x", "BAD Expected a space"},
    {"login paren", "a LOGIN (x) y", "BAD Expected a string"},

    /* AUTHENTICATE (with SASL-IR). */
    {"authenticate", "a AUTHENTICATE plain", "a AUTHENTICATE mech=PLAIN ir=-"},
    {"authenticate ir",
     "a AUTHENTICATE PLAIN AHUAcA==", "a AUTHENTICATE mech=PLAIN ir=AHUAcA=="},
    {"authenticate empty ir",
     "a AUTHENTICATE PLAIN =", "a AUTHENTICATE mech=PLAIN ir="},
    {"authenticate bad ir", "a AUTHENTICATE PLAIN !!", "BAD Invalid base64"},
    {"authenticate no mech", "a AUTHENTICATE", "BAD Missing argument"},

    /* Mailboxes and modified UTF-7. */
    {"select inbox any case", "a SELECT iNbOx", "a SELECT mbox=<INBOX>"},
    {"select quoted", "a SELECT \"Sent Items\"", "a SELECT mbox=<Sent Items>"},
    {"select literal", "a EXAMINE {5}\r\nDraft", "a EXAMINE mbox=<Draft>"},
    {"select mutf7", "a SELECT \"Entw&APw-rfe\"",
     "a SELECT mbox=<Entw&APw-rfe>"},
    {"select ampersand", "a SELECT \"A&-B\"", "a SELECT mbox=<A&-B>"},
    {"select 8-bit name", "a SELECT \"Entw\xc3\xbcrfe\"",
     "BAD Invalid mailbox name"},
    {"select bad mutf7", "a SELECT \"A&B\"", "BAD Invalid mailbox name"},
    {"select wildcard quoted", "a SELECT \"a%\"", "BAD Invalid mailbox name"},
    {"select params", "a SELECT INBOX (CONDSTORE)", "BAD Unexpected argument"},
    {"create", "a CREATE foo/bar", "a CREATE mbox=<foo/bar>"},
    {"delete", "a DELETE foo", "a DELETE mbox=<foo>"},
    {"subscribe", "a SUBSCRIBE foo", "a SUBSCRIBE mbox=<foo>"},
    {"unsubscribe", "a UNSUBSCRIBE foo", "a UNSUBSCRIBE mbox=<foo>"},
    {"rename", "a RENAME old \"new one\"", "a RENAME from=<old> to=<new one>"},
    {"rename one", "a RENAME old", "BAD Missing argument"},
    {"list", "a LIST \"\" *", "a LIST ref=<> pat=<*>"},
    {"list percent", "a LIST \"\" %/x]", "a LIST ref=<> pat=<%/x]>"},
    {"list quoted pattern", "a LIST \"~/Mail\" \"%\"",
     "a LIST ref=<~/Mail> pat=<%>"},
    {"list empty pattern", "a LIST \"\" \"\"", "a LIST ref=<> pat=<>"},
    {"list 8-bit", "a LIST \"\" \"\xc3\xa9*\"", "BAD Invalid mailbox name"},
    {"lsub", "a LSUB \"\" *", "a LSUB ref=<> pat=<*>"},
    {"list extended", "a LIST (SUBSCRIBED) \"\" *",
     "BAD Expected a mailbox pattern"},

    /* STATUS. */
    {"status", "a STATUS INBOX (MESSAGES UIDNEXT unseen)",
     "a STATUS mbox=<INBOX> items=21"},
    {"status all", "a STATUS x (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)",
     "a STATUS mbox=<x> items=31"},
    {"status empty list", "a STATUS x ()", "BAD Expected an atom"},
    {"status unknown item", "a STATUS x (SIZE)", "BAD Unknown status item"},
    {"status no list", "a STATUS x MESSAGES",
     "BAD Expected a list of status items"},
    {"status unclosed", "a STATUS x (MESSAGES", "BAD Missing argument"},

    /* APPEND. */
    {"append", "a APPEND INBOX {5}\r\nhello",
     "a APPEND mbox=<INBOX> flags=() msg=5:hello"},
    {"append flags", "a APPEND x (\\seen $Junk \\Draft) {2+}\r\nhi",
     "a APPEND mbox=<x> flags=(\\Seen $Junk \\Draft) msg=2:hi"},
    {"append empty flags", "a APPEND x () {2}\r\nhi",
     "a APPEND mbox=<x> flags=() msg=2:hi"},
    {"append date", "a APPEND x \"17-Jul-1996 02:44:25 -0700\" {1}\r\nm",
     "a APPEND mbox=<x> flags=() date=837596665/-420 msg=1:m"},
    {"append date space day",
     "a APPEND x (\\Seen) \" 7-Jan-2024 00:00:00 +0100\" {1}\r\nm",
     "a APPEND mbox=<x> flags=(\\Seen) date=1704582000/60 msg=1:m"},
    {"append literal mailbox", "a APPEND {5}\r\nINBOX {3}\r\nabc",
     "a APPEND mbox=<INBOX> flags=() msg=3:abc"},
    {"append recent", "a APPEND x (\\Recent) {1}\r\nm",
     "BAD \\Recent cannot be set"},
    {"append bad date", "a APPEND x \"32-Jul-1996 02:44:25 -0700\" {1}\r\nm",
     "BAD Invalid date"},
    {"append bad month", "a APPEND x \"17-Jux-1996 02:44:25 -0700\" {1}\r\nm",
     "BAD Invalid date"},
    {"append no zone", "a APPEND x \"17-Jul-1996 02:44:25\" {1}\r\nm",
     "BAD Invalid date"},
    {"append quoted message", "a APPEND x \"hello\"", "BAD Invalid date"},
    {"append no message", "a APPEND x", "BAD Missing argument"},
    {"append atom message", "a APPEND x hello", "BAD Expected a literal"},
    {"append trailing", "a APPEND x {1}\r\nm extra", "BAD Unexpected argument"},

    /* Sequence sets. */
    {"fetch one", "a FETCH 1 FLAGS",
     "a FETCH set=1 att=FLAGS items=0x2 seen=0"},
    {"fetch set", "a FETCH 1:3,5,7:*,*:2,* UID",
     "a FETCH set=1:3,5,7:*,*:2,* att=UID items=0x200 seen=0"},
    {"fetch max", "a FETCH 4294967295 UID",
     "a FETCH set=4294967295 att=UID items=0x200 seen=0"},
    {"fetch zero", "a FETCH 0 UID", "BAD Invalid sequence set"},
    {"fetch leading zero", "a FETCH 01 UID", "BAD Invalid sequence set"},
    {"fetch too big", "a FETCH 4294967296 UID", "BAD Invalid sequence set"},
    {"fetch trailing comma", "a FETCH 1, UID", "BAD Invalid sequence set"},
    {"fetch double colon", "a FETCH 1:2:3 UID", "BAD Invalid sequence set"},
    {"fetch letters", "a FETCH 1x UID", "BAD Invalid sequence set"},
    {"fetch no set", "a FETCH FLAGS", "BAD Invalid sequence set"},
    {"fetch $", "a FETCH $ FLAGS", "BAD Invalid sequence set"},

    /* FETCH attributes. */
    {"fetch all", "a FETCH 1 ALL",
     "a FETCH set=1 att=FLAGS,INTERNALDATE,RFC822.SIZE,ENVELOPE items=0x27 "
     "seen=0"},
    {"fetch fast", "a FETCH 1 fast",
     "a FETCH set=1 att=FLAGS,INTERNALDATE,RFC822.SIZE items=0x26 seen=0"},
    {"fetch full", "a FETCH 1 FULL",
     "a FETCH set=1 att=FLAGS,INTERNALDATE,RFC822.SIZE,ENVELOPE,BODY "
     "items=0xa7 seen=0"},
    {"fetch macro in list", "a FETCH 1 (ALL)", "BAD Unknown fetch attribute"},
    {"fetch macro suffix", "a FETCH 1 ALLX", "BAD Unknown fetch attribute"},
    {"fetch list",
     "a FETCH 1 (UID RFC822.SIZE FLAGS INTERNALDATE ENVELOPE "
     "BODYSTRUCTURE BODY)",
     "a FETCH set=1 att=UID,RFC822.SIZE,FLAGS,INTERNALDATE,ENVELOPE,"
     "BODYSTRUCTURE,BODY items=0x3a7 seen=0"},
    {"fetch rfc822", "a FETCH 1 (RFC822 RFC822.HEADER RFC822.TEXT)",
     "a FETCH set=1 att=RFC822,RFC822.HEADER,RFC822.TEXT items=0x58 seen=1"},
    {"fetch body[]", "a FETCH 1 BODY[]",
     "a FETCH set=1 att=BODY[] items=0x400 seen=1"},
    {"fetch peek", "a FETCH 1 BODY.PEEK[]",
     "a FETCH set=1 att=BODY.PEEK[] items=0x400 seen=0"},
    {"fetch sections",
     "a FETCH 1 (BODY[HEADER] BODY.PEEK[TEXT] BODY[1] "
     "BODY[1.2.3] BODY[2.MIME] BODY[3.HEADER] "
     "BODY[1.TEXT])",
     "a FETCH set=1 att=BODY[HEADER],BODY.PEEK[TEXT],BODY[1],BODY[1.2.3],"
     "BODY[2.MIME],BODY[3.HEADER],BODY[1.TEXT] items=0x400 seen=1"},
    {"fetch header fields",
     "a FETCH 1 (BODY.PEEK[HEADER.FIELDS (From "
     "\"Subject\" x-y)])",
     "a FETCH set=1 att=BODY.PEEK[HEADER.FIELDS (FROM SUBJECT X-Y)] "
     "items=0x400 seen=0"},
    {"fetch header fields not", "a FETCH 1 BODY[1.HEADER.FIELDS.NOT (To)]",
     "a FETCH set=1 att=BODY[1.HEADER.FIELDS.NOT (TO)] items=0x400 seen=1"},
    {"fetch partial", "a FETCH 1 BODY.PEEK[]<0.2048>",
     "a FETCH set=1 att=BODY.PEEK[]<0.2048> items=0x400 seen=0"},
    {"fetch partial zero count", "a FETCH 1 BODY[]<0.0>",
     "BAD Invalid partial"},
    {"fetch partial open", "a FETCH 1 BODY[]<5>", "BAD Invalid partial"},
    {"fetch mime without part", "a FETCH 1 BODY[MIME]", "BAD Invalid section"},
    {"fetch bad section", "a FETCH 1 BODY[FOO]", "BAD Invalid section"},
    {"fetch part zero", "a FETCH 1 BODY[0]", "BAD Invalid section"},
    {"fetch part dot end", "a FETCH 1 BODY[1.]", "BAD Invalid section"},
    {"fetch unclosed", "a FETCH 1 BODY[TEXT", "BAD Missing argument"},
    {"fetch fields empty", "a FETCH 1 BODY[HEADER.FIELDS ()]",
     "BAD Expected a string"},
    {"fetch fields colon", "a FETCH 1 BODY[HEADER.FIELDS (\"a:b\")]",
     "BAD Invalid header field name"},
    {"fetch peek without section", "a FETCH 1 BODY.PEEK",
     "BAD BODY.PEEK needs a section"},
    {"fetch unknown", "a FETCH 1 (FLAGS X-GM-LABELS)",
     "BAD Unknown fetch attribute"},
    {"fetch empty list", "a FETCH 1 ()", "BAD Expected a fetch attribute"},
    {"fetch unclosed list", "a FETCH 1 (FLAGS", "BAD Missing argument"},
    {"fetch modifiers", "a FETCH 1 FLAGS (CHANGEDSINCE 5)",
     "BAD Unexpected argument"},
    {"uid fetch adds uid", "a UID FETCH 1:* FLAGS",
     "a UID FETCH set=1:* att=FLAGS,UID items=0x202 seen=0"},
    {"uid fetch keeps uid", "a uid fetch 1 (UID FLAGS)",
     "a UID FETCH set=1 att=UID,FLAGS items=0x202 seen=0"},

    /* STORE. */
    {"store", "a STORE 1 FLAGS (\\Seen)",
     "a STORE set=1 op== silent=0 flags=(\\Seen)"},
    {"store add silent", "a STORE 1:2 +FLAGS.SILENT (\\deleted $x)",
     "a STORE set=1:2 op=+ silent=1 flags=(\\Deleted $x)"},
    {"store remove bare", "a STORE 1 -flags \\Seen \\Answered",
     "a STORE set=1 op=- silent=0 flags=(\\Seen \\Answered)"},
    {"store empty", "a STORE 1 FLAGS ()",
     "a STORE set=1 op== silent=0 "
     "flags=()"},
    {"store extension flag", "a STORE 1 +FLAGS (\\Foo)",
     "a STORE set=1 op=+ silent=0 flags=(\\Foo)"},
    {"store recent", "a STORE 1 +FLAGS (\\Recent)",
     "BAD \\Recent cannot be set"},
    {"store star flag", "a STORE 1 +FLAGS (\\*)", "BAD Invalid flag"},
    {"store bad item", "a STORE 1 +LABELS (x)",
     "BAD Expected FLAGS, +FLAGS or -FLAGS"},
    {"store no flags", "a STORE 1 FLAGS", "BAD Missing argument"},
    {"uid store", "a UID STORE 5:* +FLAGS (\\Seen)",
     "a UID STORE set=5:* op=+ silent=0 flags=(\\Seen)"},

    /* COPY, MOVE, UID EXPUNGE. */
    {"copy", "a COPY 1:3 Trash", "a COPY set=1:3 mbox=<Trash>"},
    {"uid copy", "a UID COPY 4,5 \"Saved\"", "a UID COPY set=4,5 mbox=<Saved>"},
    {"move", "a MOVE 2 inbox", "a MOVE set=2 mbox=<INBOX>"},
    {"uid move", "a UID MOVE 2:4 Junk", "a UID MOVE set=2:4 mbox=<Junk>"},
    {"copy no mailbox", "a COPY 1", "BAD Missing argument"},
    {"uid expunge", "a UID EXPUNGE 3:5", "a UID EXPUNGE set=3:5"},
    {"uid expunge no set", "a UID EXPUNGE", "BAD Missing argument"},
    {"uid unknown", "a UID LIST", "BAD Unknown UID command"},
    {"uid alone", "a UID", "BAD Missing argument"},

    /* SEARCH. */
    {"search all", "a SEARCH ALL", "a SEARCH charset=- AND(ALL)"},
    {"search flags",
     "a SEARCH ANSWERED DELETED DRAFT FLAGGED NEW OLD RECENT SEEN "
     "UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNSEEN",
     "a SEARCH charset=- AND(ANSWERED,DELETED,DRAFT,FLAGGED,NEW,OLD,RECENT,"
     "SEEN,UNANSWERED,UNDELETED,UNDRAFT,UNFLAGGED,UNSEEN)"},
    {"search strings",
     "a SEARCH BCC a CC \"b c\" FROM {3}\r\nx y SUBJECT s TEXT t TO u "
     "BODY v",
     "a SEARCH charset=- AND(BCC:a,CC:b c,FROM:x y,SUBJECT:s,TEXT:t,TO:u,"
     "BODY:v)"},
    {"search dates",
     "a SEARCH BEFORE 1-Feb-2024 ON \"29-Feb-2024\" SINCE 01-jan-2000 "
     "SENTBEFORE 2-Mar-2020 SENTON 3-Mar-2020 SENTSINCE 4-Mar-2020",
     "a SEARCH charset=- AND(BEFORE:2024-02-01,ON:2024-02-29,"
     "SINCE:2000-01-01,SENTBEFORE:2020-03-02,SENTON:2020-03-03,"
     "SENTSINCE:2020-03-04)"},
    {"search bad leap day", "a SEARCH ON 29-Feb-2023", "BAD Invalid date"},
    {"search bad date", "a SEARCH SINCE 2024-01-01", "BAD Invalid date"},
    {"search date suffix", "a SEARCH SINCE 1-Jan-2024x", "BAD Invalid date"},
    {"search sizes", "a SEARCH LARGER 1000 SMALLER 4294967295",
     "a SEARCH charset=- AND(LARGER:1000,SMALLER:4294967295)"},
    {"search size too big", "a SEARCH LARGER 4294967296", "BAD Invalid number"},
    {"search header", "a SEARCH HEADER Message-ID \"<x@y>\"",
     "a SEARCH charset=- AND(HEADER:Message-ID:<x@y>)"},
    {"search keyword", "a SEARCH KEYWORD $Junk UNKEYWORD foo",
     "a SEARCH charset=- AND(KEYWORD:$Junk,UNKEYWORD:foo)"},
    {"search seqset and uid", "a SEARCH 1:5,* UID 100:*",
     "a SEARCH charset=- AND(SEQ:1:5,*,UID:100:*)"},
    {"search not or", "a SEARCH NOT SEEN OR FROM a TO b",
     "a SEARCH charset=- AND(NOT(SEEN),OR(FROM:a,TO:b))"},
    {"search nested", "a SEARCH OR (SEEN FLAGGED) NOT (FROM x (TO y))",
     "a SEARCH charset=- AND(OR(AND(SEEN,FLAGGED),NOT(AND(FROM:x,"
     "AND(TO:y)))))"},
    {"search charset", "a SEARCH CHARSET UTF-8 SUBJECT {4}\r\n\xc3\xa9t\xc3",
     "a SEARCH charset=UTF-8 AND(SUBJECT:\xc3\xa9t\xc3)"},
    {"search charset quoted", "a SEARCH CHARSET \"ISO-8859-1\" ALL",
     "a SEARCH charset=ISO-8859-1 AND(ALL)"},
    {"uid search", "a UID SEARCH UID 1:* UNSEEN",
     "a UID SEARCH charset=- AND(UID:1:*,UNSEEN)"},
    {"search unknown key", "a SEARCH FOO", "BAD Unknown search key"},
    {"search empty", "a SEARCH", "BAD Missing argument"},
    {"search charset only", "a SEARCH CHARSET UTF-8", "BAD Missing argument"},
    {"search or one", "a SEARCH OR SEEN", "BAD Missing argument"},
    {"search not nothing", "a SEARCH NOT", "BAD Missing argument"},
    {"search empty parens", "a SEARCH ()", "BAD Expected an atom"},
    {"search unclosed", "a SEARCH (SEEN", "BAD Missing argument"},
    {"search extra close", "a SEARCH SEEN)", "BAD Expected a space"},
    {"search larger word", "a SEARCH LARGER big", "BAD Expected a number"},
    {"search return", "a SEARCH RETURN (MIN) ALL", "BAD Unknown search key"},

    /* ID, ENABLE. */
    {"id nil", "a ID NIL", "a ID params=()"},
    {"id pairs", "a ID (\"name\" \"mutt\" \"version\" NIL)",
     "a ID params=(name mutt version NIL)"},
    {"id empty list", "a ID ()", "a ID params=()"},
    {"id odd", "a ID (\"name\")", "BAD Expected a space"},
    {"id atom field", "a ID (name \"x\")", "BAD Expected a string"},
    {"id bad", "a ID foo", "BAD Expected a list or NIL"},
    {"id field too long", "a ID (\"" LONG40 "\" NIL)",
     "BAD ID field name too long"},
    {"enable", "a ENABLE CONDSTORE UTF8=ACCEPT",
     "a ENABLE caps=(CONDSTORE UTF8=ACCEPT)"},
    {"enable nothing", "a ENABLE", "BAD Missing argument"},
};

static const struct nul_row nul_rows[] = {
    NULROW("login literal NUL", "a LOGIN {3}\r\nu\0r x",
           "BAD NUL in a literal"),
    NULROW("login NUL in line", "a LOGIN u\0r x", "BAD Expected a space"),
    NULROW("quoted NUL", "a LOGIN \"u\0r\" x",
           "BAD Unterminated quoted string"),
    NULROW("append message NUL", "a APPEND x {3}\r\na\0b",
           "a APPEND mbox=<x> flags=() msg=3:a\0b"),
};

static void
check_row(const struct nul_row *r)
{
    imap_parse_t *p = imap_parse_new();
    const struct imap_cmd *c;
    const char *why;
    buf_t in = BUF_INIT, got = BUF_INIT;
    size_t inlen, wantlen;
    int rc;

    inlen = r->inlen;
    wantlen = r->wantlen;
    buf_add(&in, r->in, inlen);
    buf_add(&in, "\r\n", 2);
    rc = imap_parse_command(p, in.data, in.len, &c, &why);
    if (rc == 0) {
        dump(&got, c);
    } else {
        ck_assert_int_lt(rc, 0);
        ck_assert_ptr_nonnull(why);
        buf_printf(&got, "%s %s", c->tag ? "BAD" : "UNTAGGED", why);
        if (c->tag)
            ck_assert_uint_gt(strlen(c->tag), 0);
    }
    ck_assert_msg(got.len == wantlen && memcmp(got.data, r->want, wantlen) == 0,
                  "%s: got \"%s\", want \"%s\"", r->label, got.data, r->want);
    imap_parse_destroy(&p);
    ck_assert_ptr_null(p);
    buf_free(&in);
    buf_free(&got);
}

START_TEST(test_rows)
{
    const struct row *r = &rows[_i];
    struct nul_row n = {r->label, r->in, r->want, strlen(r->in),
                        strlen(r->want)};

    check_row(&n);
}
END_TEST

START_TEST(test_nul_rows)
{
    check_row(&nul_rows[_i]);
}
END_TEST

/* Nesting of SEARCH is bounded: IMAP_DEPTH_MAX levels pass, one more is
 * refused, and a deep input never recurses past the bound. */
START_TEST(test_depth)
{
    for (int extra = 0; extra <= 1; extra++) {
        imap_parse_t *p = imap_parse_new();
        const struct imap_cmd *c;
        const char *why;
        buf_t in = BUF_INIT;
        int levels = IMAP_DEPTH_MAX - 1 + extra;

        buf_adds(&in, "a SEARCH ");
        for (int i = 0; i < levels; i++)
            buf_adds(&in, i % 3 == 0 ? "NOT " : i % 3 == 1 ? "(" : "OR ALL ");
        buf_adds(&in, "SEEN");
        for (int i = 0; i < levels; i++)
            if (i % 3 == 1)
                buf_addc(&in, ')');
        buf_adds(&in, "\r\n");
        if (extra)
            ck_assert_int_lt(imap_parse_command(p, in.data, in.len, &c, &why),
                             0);
        else
            ck_assert_msg(imap_parse_command(p, in.data, in.len, &c, &why) == 0,
                          "depth %d: %s", levels, why);
        if (extra)
            ck_assert_str_eq(why, "Search nested too deep");
        imap_parse_destroy(&p);
        buf_free(&in);
    }
}
END_TEST

/* A flood of parentheses is refused at the bound, not by the stack. */
START_TEST(test_depth_flood)
{
    imap_parse_t *p = imap_parse_new();
    const struct imap_cmd *c;
    const char *why;
    buf_t in = BUF_INIT;

    buf_adds(&in, "a SEARCH ");
    for (int i = 0; i < 100000; i++)
        buf_adds(&in, "NOT (");
    buf_adds(&in, "\r\n");
    ck_assert_int_lt(imap_parse_command(p, in.data, in.len, &c, &why), 0);
    ck_assert_str_eq(why, "Search nested too deep");
    imap_parse_destroy(&p);
    buf_free(&in);
}
END_TEST

START_TEST(test_section_depth)
{
    for (int n = IMAP_SECTION_MAX; n <= IMAP_SECTION_MAX + 1; n++) {
        imap_parse_t *p = imap_parse_new();
        const struct imap_cmd *c;
        const char *why;
        buf_t in = BUF_INIT;
        int rc;

        buf_adds(&in, "a FETCH 1 BODY[");
        for (int i = 0; i < n; i++)
            buf_printf(&in, "%s%d", i ? "." : "", i + 1);
        buf_adds(&in, "]\r\n");
        rc = imap_parse_command(p, in.data, in.len, &c, &why);
        if (n == IMAP_SECTION_MAX) {
            ck_assert_int_eq(rc, 0);
            ck_assert_int_eq(c->fetch.att[0].sec.nparts, n);
        } else {
            ck_assert_int_lt(rc, 0);
            ck_assert_str_eq(why, "Section nested too deep");
        }
        imap_parse_destroy(&p);
        buf_free(&in);
    }
}
END_TEST

/* RFC 2971 3.3: 30 pairs, 30-octet names, 1024-octet values. */
START_TEST(test_id_limits)
{
    for (int over = 0; over <= 1; over++) {
        imap_parse_t *p = imap_parse_new();
        const struct imap_cmd *c;
        const char *why;
        buf_t in = BUF_INIT;
        int rc;

        buf_adds(&in, "a ID (");
        for (int i = 0; i < IMAP_ID_PAIRS_MAX + over; i++)
            buf_printf(&in, "%s\"f%d\" \"v\"", i ? " " : "", i);
        buf_adds(&in, ")\r\n");
        rc = imap_parse_command(p, in.data, in.len, &c, &why);
        if (over) {
            ck_assert_int_lt(rc, 0);
            ck_assert_str_eq(why, "Too many ID parameters");
        } else {
            ck_assert_int_eq(rc, 0);
            ck_assert_uint_eq(c->idparams.n, 2 * IMAP_ID_PAIRS_MAX);
        }
        buf_reset(&in);
        buf_adds(&in, "a ID (\"name\" \"");
        for (int i = 0; i < IMAP_ID_VALUE_MAX + over; i++)
            buf_addc(&in, 'v');
        buf_adds(&in, "\")\r\n");
        rc = imap_parse_command(p, in.data, in.len, &c, &why);
        ck_assert_int_eq(rc < 0, over);
        imap_parse_destroy(&p);
        buf_free(&in);
    }
}
END_TEST

/* A big command: the arena grows and is reused. */
START_TEST(test_big_and_reuse)
{
    imap_parse_t *p = imap_parse_new();
    const struct imap_cmd *c;
    const char *why;
    buf_t in = BUF_INIT;

    buf_adds(&in, "a UID FETCH ");
    for (int i = 1; i <= 20000; i++)
        buf_printf(&in, "%s%d", i > 1 ? "," : "", 2 * i);
    buf_adds(&in, " (FLAGS)\r\n");
    for (int round = 0; round < 3; round++) {
        ck_assert_int_eq(imap_parse_command(p, in.data, in.len, &c, &why), 0);
        ck_assert_uint_eq(c->fetch.set.n, 20000);
        ck_assert_uint_eq(c->fetch.set.r[19999].lo, 40000);
        ck_assert(imap_parse_seqset_contains(&c->fetch.set, 40000, 0));
        ck_assert(!imap_parse_seqset_contains(&c->fetch.set, 39999, 0));
        imap_parse_clear(p, round == 1);
    }
    imap_parse_destroy(&p);
    buf_free(&in);
}
END_TEST

static const struct {
    const char *name;
    bool wild, ok;
} mutf7_rows[] = {
    {"INBOX", false, true},
    {"", false, true},
    {"a/b.c d", false, true},
    {"&-", false, true},
    {"Entw&APw-rfe", false, true},
    {"&ZeVnLIqe-", false, true}, /* RFC 3501 5.1.3's example */
    {"~peter/mail/&U,BTFw-/&ZeVnLIqe-", false, true},
    {"&2D3eAA-", false, true}, /* U+1F600 as a surrogate pair */
    {"&2D0-", false, false},   /* a lone high surrogate */
    {"&3gA-", false, false},   /* a lone low surrogate */
    {"&AGE-", false, false},   /* "a" must stand for itself */
    {"&", false, false},
    {"&APw", false, false},       /* unterminated */
    {"&A/w-", false, false},      /* "/" is not modified base64 */
    {"&APx-", false, false},      /* nonzero leftover bits */
    {"&APw-&APw-", false, false}, /* two shifts in a row */
    {"&APw-&-", false, true},
    {"caf\xc3\xa9", false, false},
    {"a\tb", false, false},
    {"a%", false, false},
    {"a%", true, true},
    {"*", true, true},
};

START_TEST(test_mutf7)
{
    ck_assert_msg(
        imap_parse_mutf7_valid(mutf7_rows[_i].name, mutf7_rows[_i].wild) ==
            mutf7_rows[_i].ok,
        "%s: got %d, want %d", mutf7_rows[_i].name, !mutf7_rows[_i].ok,
        mutf7_rows[_i].ok);
}
END_TEST

static const struct {
    const char *label;
    struct imap_seq_range r;
    uint32_t n, star;
    bool want;
} contains_rows[] = {
    {"single", {3, 3}, 3, 10, true},
    {"single miss", {3, 3}, 4, 10, false},
    {"range", {2, 5}, 4, 10, true},
    {"reversed", {5, 2}, 4, 10, true},
    {"star", {IMAP_SEQ_STAR, IMAP_SEQ_STAR}, 10, 10, true},
    {"star miss", {IMAP_SEQ_STAR, IMAP_SEQ_STAR}, 9, 10, false},
    {"open", {7, IMAP_SEQ_STAR}, 8, 10, true},
    /* RFC 3501 6.4.8: 559:* holds the last UID even below 559. */
    {"open past the end", {559, IMAP_SEQ_STAR}, 500, 500, true},
    {"empty mailbox", {1, IMAP_SEQ_STAR}, 0, 0, false},
};

START_TEST(test_contains)
{
    struct imap_seqset s = {.r = &contains_rows[_i].r, .n = 1};

    ck_assert_msg(imap_parse_seqset_contains(&s, contains_rows[_i].n,
                                             contains_rows[_i].star) ==
                      contains_rows[_i].want,
                  "%s: got %d, want %d", contains_rows[_i].label,
                  !contains_rows[_i].want, contains_rows[_i].want);
}
END_TEST

static const struct {
    const char *line;
    bool want, nonsync;
    uint64_t n;
} litend_rows[] = {
    {"a LOGIN {5}", true, false, 5},
    {"a LOGIN {5+}", true, true, 5},
    {"a LOGIN {0}", true, false, 0},
    {"{007}", true, false, 7},
    {"a LOGIN {4294967295}", true, false, 4294967295u},
    {"a LOGIN {4294967296}", true, false, UINT64_MAX},
    {"a LOGIN {99999999999999999999999}", true, false, UINT64_MAX},
    {"a LOGIN {}", false, false, 0},
    {"a LOGIN {+}", false, false, 0},
    {"a LOGIN {5-}", false, false, 0},
    {"a LOGIN 5}", false, false, 0},
    {"a LOGIN {5} ", false, false, 0},
    {"}", false, false, 0},
};

START_TEST(test_literal_end)
{
    uint64_t n = 0;
    bool ns = false, got;

    got = imap_parse_literal_end(litend_rows[_i].line,
                                 strlen(litend_rows[_i].line), &n, &ns);
    ck_assert_msg(got == litend_rows[_i].want, "%s: got %d, want %d",
                  litend_rows[_i].line, got, litend_rows[_i].want);
    if (got) {
        ck_assert_uint_eq(n, litend_rows[_i].n);
        ck_assert_int_eq(ns, litend_rows[_i].nonsync);
    }
}
END_TEST

static const struct {
    const char *s;
    size_t want;
} tag_rows[] = {
    {"a1 NOOP", 2}, {"a1", 2}, {"A]b NOOP", 3}, {"* OK", 0},  {"+ x", 0},
    {" a", 0},      {"", 0},   {"a(b c", 0},    {"a%b c", 0}, {"\x01 x", 0},
};

START_TEST(test_tag)
{
    ck_assert_msg(imap_parse_tag(tag_rows[_i].s, strlen(tag_rows[_i].s)) ==
                      tag_rows[_i].want,
                  "%s: want %zu", tag_rows[_i].s, tag_rows[_i].want);
}
END_TEST

START_TEST(test_cmd_names)
{
    ck_assert_str_eq(imap_parse_cmd_name(IMAP_CMD_NONE), "");
    ck_assert_str_eq(imap_parse_cmd_name(IMAP_CMD_FETCH), "FETCH");
    ck_assert_str_eq(imap_parse_cmd_name(IMAP_CMD__COUNT), "");
    for (int i = 1; i < IMAP_CMD__COUNT; i++)
        ck_assert_uint_gt(strlen(imap_parse_cmd_name(i)), 1);
}
END_TEST

/* Every prefix of a good command either parses or is refused cleanly,
 * and never reads past the end (ASan watches the copy). */
START_TEST(test_prefixes)
{
    static const char *const cmds[] = {
        "a UID FETCH 1:*,7 (FLAGS BODY.PEEK[1.HEADER.FIELDS (FROM TO)]<0.9>)",
        "a SEARCH CHARSET UTF-8 OR (FROM {3}\r\nabc) NOT SINCE 1-Jan-2020",
        "a APPEND {5}\r\nINBOX (\\Seen) \"17-Jul-1996 02:44:25 -0700\" "
        "{3}\r\nabc",
        "a STORE 1 +FLAGS.SILENT (\\Seen $x)",
        "a ID (\"a\" \"b\" \"c\" NIL)",
    };

    for (size_t i = 0; i < NROWS(cmds); i++) {
        size_t len = strlen(cmds[i]);

        for (size_t k = 0; k <= len; k++) {
            imap_parse_t *p = imap_parse_new();
            const struct imap_cmd *c;
            const char *why;
            char *copy = malloc(k + 2);

            memcpy(copy, cmds[i], k);
            memcpy(copy + k, "\r\n", 2);
            if (imap_parse_command(p, copy, k + 2, &c, &why) == 0)
                ck_assert_uint_eq(k, len);
            imap_parse_destroy(&p);
            free(copy);
        }
    }
}
END_TEST

static Suite *
imap_parse_suite(void)
{
    Suite *s = suite_create("imap_parse");
    TCase *tc;

    tc = tcase_create("commands");
    tcase_add_loop_test(tc, test_rows, 0, NROWS(rows));
    tcase_add_loop_test(tc, test_nul_rows, 0, NROWS(nul_rows));
    tcase_add_test(tc, test_prefixes);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_add_test(tc, test_depth);
    tcase_add_test(tc, test_depth_flood);
    tcase_add_test(tc, test_section_depth);
    tcase_add_test(tc, test_id_limits);
    tcase_add_test(tc, test_big_and_reuse);
    suite_add_tcase(s, tc);

    tc = tcase_create("helpers");
    tcase_add_loop_test(tc, test_mutf7, 0, NROWS(mutf7_rows));
    tcase_add_loop_test(tc, test_contains, 0, NROWS(contains_rows));
    tcase_add_loop_test(tc, test_literal_end, 0, NROWS(litend_rows));
    tcase_add_loop_test(tc, test_tag, 0, NROWS(tag_rows));
    tcase_add_test(tc, test_cmd_names);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(imap_parse_suite());
    int failed;

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
