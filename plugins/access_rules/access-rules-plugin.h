#ifndef ACCESS_RULES_PLUGIN_H
#define ACCESS_RULES_PLUGIN_H

struct module;

extern const char *access_rules_plugin_version;

void access_rules_plugin_init(struct module *module);
void access_rules_plugin_deinit(void);

#endif
