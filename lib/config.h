/*
 * config.h - Samotop's configuration: one file plus SAMOTOP_* overrides.
 *
 * Every key is declared once in config.c with its type, its default (the
 * local profile of DESIGN.md) and its bounds. Values come, later winning,
 * from the defaults, the file named by SAMOTOP_CONFIG (or --config), the
 * environment (key "bus.clients" is SAMOTOP_BUS_CLIENTS) and config_set().
 * A bad value is refused with a message that names the key and the reason.
 * The config owns its strings; accessors return borrowed pointers valid
 * until the config is destroyed or the key is set again.
 */
#ifndef SAMOTOP_CONFIG_H
#define SAMOTOP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

typedef struct config config_t;

/* A config holding the defaults; caller owns it. */
config_t *config_new(void);
void config_destroy(config_t **cfg_p);

/* Reads path (when NULL: $SAMOTOP_CONFIG, when that is unset: no file), then
 * the SAMOTOP_* environment. Returns 0, or ERR_CONFIG with a message naming
 * the key (or file line) and the reason written into why. */
int config_load(config_t *cfg, const char *path, char *why, size_t whylen);

/* Sets one key from text, checking it as the file would. Returns 0 or
 * ERR_CONFIG with the reason in why. */
int config_set(config_t *cfg, const char *key, const char *value, char *why,
               size_t whylen);

/* The value of a declared key; asking for an undeclared key is a bug and
 * aborts. */
const char *config_str(const config_t *cfg, const char *key);
long config_int(const config_t *cfg, const char *key);
bool config_bool(const config_t *cfg, const char *key);

/* The environment variable that overrides key, e.g. "SAMOTOP_BUS_CLIENTS",
 * in a static buffer. */
const char *config_env_name(const char *key);

/* Names the SAMOTOP_* variables of envp (NULL: this process's environment)
 * that look like a key but are none: SAMOTOP_<SECTION>_... where SECTION is
 * a section of the declared keys (SAMOTOP_REDIS_PROT, a typo of
 * SAMOTOP_REDIS_PORT), which config_load() would otherwise ignore without
 * a word. Other SAMOTOP_* names (SAMOTOP_CONFIG, SAMOTOP_INSTANCE, the test
 * and deploy scripts' own variables) are not keys and are left alone. The
 * names go space-separated into out (truncated to outlen); returns their
 * count. */
size_t config_env_unknown(char *const *envp, char *out, size_t outlen);

/* Logs one warning (event=config_env_unknown) naming those variables of
 * this process's environment, when there are any; every program calls it
 * once its configuration is loaded. */
void config_warn_env_unknown(void);

/* Prints every key with its value and its environment name (secrets
 * masked), one per line, for `--print-config`. */
void config_dump(const config_t *cfg, void *file);

/* Splits a comma-separated list into at most max trimmed items, written
 * into a new array of new strings; returns the count. Free with
 * config_list_free(). */
int config_list(const char *value, char ***items_out);
void config_list_free(char ***items_p, int n);

/* Splits "host:port" or "[v6]:port"; host is copied into host (of hostlen).
 * Returns 0 or ERR_INVAL. */
int config_split_addr(const char *addr, char *host, size_t hostlen,
                      int *port);

#endif
