#ifndef ACCESS_RULES_PLUGIN_H
#define ACCESS_RULES_PLUGIN_H

#include "plugin-export.h"

struct module;

extern PLUGIN_EXPORT const char *access_rules_plugin_version;

PLUGIN_EXPORT void access_rules_plugin_init(struct module *module);
PLUGIN_EXPORT void access_rules_plugin_deinit(void);

#endif
