#ifndef FTS_LMDB_PLUGIN_H
#define FTS_LMDB_PLUGIN_H

struct module;

extern const char *fts_lmdb_plugin_version;
extern const char *fts_lmdb_plugin_dependencies[];
extern struct event_category event_category_fts_lmdb;

void fts_lmdb_plugin_init(struct module *module);
void fts_lmdb_plugin_deinit(void);

#endif
