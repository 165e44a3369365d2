/*
 * admin_password.c - reading a new password: from a terminal without echo
 * (asked twice), or the first line of standard input, so that scripts can
 * pipe one in and it never appears in argv or the environment.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "admin.h"

/* The terminal's settings while echo is off, for the signal handler. */
static struct termios saved_tio;
static volatile sig_atomic_t echo_off;

static const int fatal_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

static void
on_signal(int sig)
{
    if (echo_off)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Reads one line from fd into out; the line end is not kept. Returns 0,
 * 1 at the end of input with nothing read, -1 (with why) otherwise. */
static int
read_line(int fd, char *out, size_t *len, const char **why)
{
    size_t n = 0;
    char c;

    for (;;) {
        ssize_t got = read(fd, &c, 1);

        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            *why = strerror(errno);
            return -1;
        }
        if (got == 0) {
            if (n == 0) {
                *len = 0;
                return 1;
            }
            break;
        }
        if (c == '\n')
            break;
        if (c == '\0') {
            *why = "the password holds a NUL byte";
            OPENSSL_cleanse(out, n);
            return -1;
        }
        if (n == ADMIN_PASSWORD_MAX) {
            *why = "the password is longer than 1024 bytes";
            OPENSSL_cleanse(out, n);
            return -1;
        }
        out[n++] = c;
    }
    if (n > 0 && out[n - 1] == '\r')
        n--;
    out[n] = '\0';
    *len = n;
    return 0;
}

/* Prompts on stderr and reads a line from the terminal without echo. */
static int
ask(const char *prompt, char *out, size_t *len, const char **why)
{
    struct termios tio;
    struct sigaction sa, old[sizeof(fatal_signals) / sizeof(int)];
    int rc;

    if (tcgetattr(STDIN_FILENO, &saved_tio) != 0) {
        *why = strerror(errno);
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(fatal_signals) / sizeof(int); i++)
        sigaction(fatal_signals[i], &sa, &old[i]);
    tio = saved_tio;
    tio.c_lflag &= ~(tcflag_t)ECHO;
    tio.c_lflag |= ECHONL;
    /* Echo goes off before the prompt shows, so nothing typed after it
     * is echoed or flushed away. */
    echo_off = 1;
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &tio);
    fputs(prompt, stderr);
    fflush(stderr);
    rc = read_line(STDIN_FILENO, out, len, why);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
    echo_off = 0;
    for (size_t i = 0; i < sizeof(fatal_signals) / sizeof(int); i++)
        sigaction(fatal_signals[i], &old[i], NULL);
    if (rc == 1)
        fputc('\n', stderr);
    return rc;
}

int
admin_password_read(const struct admin_cmd *cmd, const char *account,
                    char out[ADMIN_PASSWORD_MAX + 1], size_t *len)
{
    char again[ADMIN_PASSWORD_MAX + 1], prompt[400];
    const char *why = NULL;
    size_t againlen = 0;
    int rc;

    *len = 0;
    out[0] = '\0';
    if (!isatty(STDIN_FILENO)) {
        rc = read_line(STDIN_FILENO, out, len, &why);
        if (rc < 0)
            return admin_fail(cmd, "%s", why);
        if (rc > 0 || *len == 0)
            return admin_fail(cmd, "no password: the first line of "
                                   "standard input is empty");
        return 0;
    }
    snprintf(prompt, sizeof(prompt), "New password for %s: ", account);
    rc = ask(prompt, out, len, &why);
    if (rc < 0)
        return admin_fail(cmd, "%s", why);
    if (rc > 0 || *len == 0)
        return admin_fail(cmd, "an empty password is refused");
    rc = ask("Again: ", again, &againlen, &why);
    if (rc != 0 || againlen != *len || memcmp(again, out, *len) != 0) {
        OPENSSL_cleanse(again, sizeof(again));
        OPENSSL_cleanse(out, ADMIN_PASSWORD_MAX + 1);
        *len = 0;
        if (rc < 0)
            return admin_fail(cmd, "%s", why);
        return admin_fail(cmd, "the two passwords differ; nothing changed");
    }
    OPENSSL_cleanse(again, sizeof(again));
    return 0;
}
