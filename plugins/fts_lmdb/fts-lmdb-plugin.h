#ifndef FTS_LMDB_PLUGIN_H
#define FTS_LMDB_PLUGIN_H

#include "plugin-export.h"

struct module;

extern PLUGIN_EXPORT const char *fts_lmdb_plugin_version;
extern PLUGIN_EXPORT const char *fts_lmdb_plugin_dependencies[];
extern struct event_category event_category_fts_lmdb;

PLUGIN_EXPORT void fts_lmdb_plugin_init(struct module *module);
PLUGIN_EXPORT void fts_lmdb_plugin_deinit(void);

#endif
