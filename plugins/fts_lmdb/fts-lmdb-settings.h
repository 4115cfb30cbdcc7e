#ifndef FTS_LMDB_SETTINGS_H
#define FTS_LMDB_SETTINGS_H

#include "fts-lmdb-tokens.h"

struct mail_user;

struct fts_lmdb_settings {
	/* NULL: fts-lmdb under the namespace's index root */
	const char *path;
	unsigned int batch_mb;
	unsigned int map_mb;
	unsigned int max_mail_tokens;
	/* a mailbox of this many blocks gets a trigram filter */
	unsigned int trigram_min_blocks;
	/* record part maps so that partial fetches seek */
	bool partial_fetch;

	/* top-level headers indexed for HEADER, SUBJECT, FROM, ... */
	const char *headers[FTS_LMDB_MAX_HEADERS];
	unsigned int headers_count;
	/* what the index holds; a change means a rebuild */
	const char *format;
};

int fts_lmdb_settings_read(struct mail_user *user, pool_t pool,
			   struct fts_lmdb_settings *set_r,
			   const char **error_r);

/* Field bit of a header's decoded value, or 0 if it isn't indexed. */
uint32_t fts_lmdb_settings_header_mask(const struct fts_lmdb_settings *set,
				       const char *name);
/* Field bit of an address header in the form FROM, TO, CC and BCC
   searches compare with, or 0. */
uint32_t fts_lmdb_settings_address_mask(const struct fts_lmdb_settings *set,
					const char *name);

#endif
