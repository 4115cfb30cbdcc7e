#ifndef LEAVE_ON_SERVER_PLUGIN_H
#define LEAVE_ON_SERVER_PLUGIN_H

#include "plugin-export.h"

struct module;

extern PLUGIN_EXPORT const char *leave_on_server_plugin_version;

PLUGIN_EXPORT void leave_on_server_plugin_init(struct module *module);
PLUGIN_EXPORT void leave_on_server_plugin_deinit(void);

void leave_on_server_pop3_init(void);
void leave_on_server_pop3_deinit(void);

#endif
