#ifndef FTS_LMDB_PARTMAP_BUILD_H
#define FTS_LMDB_PARTMAP_BUILD_H

struct mail;

/* Appends the mail's encoded part map to dest and returns 1, or returns
   0 if it has nothing a fetch would seek in (no base64 or quoted-
   printable part, and small), or -1 if the mail can't be read. */
int fts_lmdb_partmap_build(struct mail *mail, buffer_t *dest,
			   const char **error_r);

#endif
