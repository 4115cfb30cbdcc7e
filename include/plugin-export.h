#ifndef PLUGIN_EXPORT_H
#define PLUGIN_EXPORT_H

/* The plugins are built with -fvisibility=hidden, so that calls between
   their own files are bound when the module is linked, not looked up
   through every loaded library in each process that dlopen()s it (Dovecot
   loads modules with RTLD_NOW, once per new mail process). Only the names
   Dovecot's module loader asks for with dlsym() are exported:
   <name>_version, <name>_dependencies, <name>_init and <name>_deinit. */
#define PLUGIN_EXPORT __attribute__((visibility("default")))

#endif
