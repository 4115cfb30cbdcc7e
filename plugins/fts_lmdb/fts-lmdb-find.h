#ifndef FTS_LMDB_FIND_H
#define FTS_LMDB_FIND_H

/* The first place in data where key occurs, or NULL: memmem() with the
   same answers, faster on token text. A search scans the text of all
   the mailbox's token blocks, megabytes of short tokens, and glibc's
   memmem() took most of a median search (docs/fts-bench.md). */
const void *fts_lmdb_find(const void *data, size_t size,
			  const void *key, size_t key_size);

#endif
