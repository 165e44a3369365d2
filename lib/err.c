#include <string.h>

#include "err.h"

static const char *const err_texts[] = {
#define X(name, text) text,
    ERR_LIST(X)
#undef X
};

static const char *const err_names[] = {
#define X(name, text) #name,
    ERR_LIST(X)
#undef X
};

const char *
err_str(int err)
{
    int i = -err;

    if (i < 0 || i >= ERR__COUNT)
        return "unknown error";
    return err_texts[i];
}

const char *
err_name(int err)
{
    int i = -err;

    if (i < 0 || i >= ERR__COUNT)
        return "UNKNOWN";
    return err_names[i];
}

int
err_from_name(const char *name)
{
    for (int i = 0; i < ERR__COUNT; i++)
        if (strcmp(err_names[i], name) == 0)
            return -i;
    return ERR_INVAL;
}
