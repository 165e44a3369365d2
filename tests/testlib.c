#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

const char *
test_bin(const char *name)
{
    static char path[4096];
    const char *dir = getenv("SAMOTOP_BIN");

    snprintf(path, sizeof(path), "%s/%s", dir ? dir : ".", name);
    return path;
}

pid_t
test_spawn(const char *const *argv, const char *const *env)
{
    pid_t parent = getpid(), pid = fork();

    if (pid == 0) {
        sigset_t none;

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (int i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "test_spawn: cannot run %s\n", argv[0]);
        _exit(127);
    }
    return pid;
}

int
test_stop(pid_t pid, int sig, int ms)
{
    int status = 0;
    int64_t until = test_now_ms() + ms;

    kill(pid, sig);
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (test_now_ms() > until) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        usleep(5000);
    }
    return status;
}

int64_t
test_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
