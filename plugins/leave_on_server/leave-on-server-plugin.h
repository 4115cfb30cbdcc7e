#ifndef LEAVE_ON_SERVER_PLUGIN_H
#define LEAVE_ON_SERVER_PLUGIN_H

struct module;

extern const char *leave_on_server_plugin_version;

void leave_on_server_plugin_init(struct module *module);
void leave_on_server_plugin_deinit(void);

void leave_on_server_pop3_init(void);
void leave_on_server_pop3_deinit(void);

#endif
