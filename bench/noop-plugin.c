/* A mail plugin that does nothing, for the login benchmark: the cost of
   loading any module into every new mail process, which access_rules
   can't go below. */

#include "lib.h"
#include "module-dir.h"
#include "plugin-export.h"

PLUGIN_EXPORT const char *bench_noop_plugin_version = DOVECOT_ABI_VERSION;

PLUGIN_EXPORT void bench_noop_plugin_init(struct module *module);
PLUGIN_EXPORT void bench_noop_plugin_deinit(void);

void bench_noop_plugin_init(struct module *module ATTR_UNUSED)
{
}

void bench_noop_plugin_deinit(void)
{
}
