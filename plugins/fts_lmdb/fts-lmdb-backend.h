#ifndef FTS_LMDB_BACKEND_H
#define FTS_LMDB_BACKEND_H

#include "guid.h"
#include "fts-api-private.h"
#include "fts-lmdb-settings.h"
#include "fts-lmdb-db.h"

struct fts_lmdb_backend {
	struct fts_backend backend;
	struct event *event;
	pool_t pool;
	struct fts_lmdb_settings set;
	const char *dir;

	struct fts_lmdb_db *db;
	/* a lookup met damage: rebuild once the search is done */
	bool rebuild_pending;
	/* a partial fetch met unindexed mail and asked the indexer to
	   index this mailbox up to this UID */
	guid_128_t queued_box_guid;
	uint32_t queued_uid;
	/* a search read and checked every block of this mailbox under this
	   stamp: later searches under an equal one skip the checksums */
	struct fts_lmdb_db_stamp blocks_checked_stamp;
	uint32_t blocks_checked_box_id;
	bool blocks_checked;
};

/* What the index knows of one mailbox, keyed by the mailbox GUID. Stored
   in host byte order: the index is local to this machine. */
struct fts_lmdb_box_record {
	uint32_t box_id;
	uint32_t uid_validity;
	uint32_t last_uid;
	uint32_t doc_count;
	uint32_t expunged_count;
	/* blocks of the token chain (fts-lmdb-blocks.h) */
	uint32_t block_count;
	/* entries of the lists under FTS_LMDB_KEY_UNINDEXED and
	   FTS_LMDB_KEY_LONG (expunged_count is the third): a list that
	   is empty has no key, so only its count tells a lost one */
	uint32_t unindexed_count;
	uint32_t long_count;
	/* GUID hashes kept of expunged mail (fts-lmdb-guids.h) */
	uint32_t tombstone_count;
};

extern struct fts_backend fts_backend_lmdb;

/* Opens the environment on first use and checks that it was built with
   the current settings (else it is emptied). */
int fts_lmdb_backend_open(struct fts_lmdb_backend *backend,
			  const char **error_r);
/* Logs, and empties the index so that it is rebuilt from the mail. */
void fts_lmdb_backend_damaged(struct fts_lmdb_backend *backend,
			      const char *error);

int fts_lmdb_box_guid(struct mailbox *box, guid_128_t guid_r);
/* What the guids database keeps of a message's GUID: 64 bits tell two
   messages under one UID apart well enough. FALSE if it has no GUID. */
#define FTS_LMDB_GUID_HASH_SIZE 8
bool fts_lmdb_mail_guid_hash(struct mail *mail,
			     uint8_t hash_r[FTS_LMDB_GUID_HASH_SIZE]);
/* In the current transaction: 1 found, 0 not, -1 error */
int fts_lmdb_box_record_get(struct fts_lmdb_backend *backend,
			    const guid_128_t guid,
			    struct fts_lmdb_box_record *rec_r,
			    const char **error_r);
int fts_lmdb_box_record_put(struct fts_lmdb_backend *backend,
			    const guid_128_t guid,
			    const struct fts_lmdb_box_record *rec,
			    const char **error_r);
/* The record's count of the list under this token key, NULL if the key
   is a token's. */
uint32_t *fts_lmdb_box_record_list_count(struct fts_lmdb_box_record *rec,
					 const void *token, size_t size);
/* A list that doesn't hold as many messages as the record counts is
   damage (the db is marked corrupted, so a failed write rebuilds). */
int fts_lmdb_box_list_check(struct fts_lmdb_db *db, uint32_t expected,
			    uint32_t count, const char **error_r);
void fts_lmdb_token_key(buffer_t *key, uint32_t box_id,
			const void *token, size_t size);
/* a message's key in parts and guids: box id and UID, UID big endian */
void fts_lmdb_uid_key(buffer_t *key, uint32_t box_id, uint32_t uid);
/* Drops the expunged messages' postings and the tokens left with none,
   in the open write transaction. */
int fts_lmdb_box_purge(struct fts_lmdb_backend *backend,
		       struct fts_lmdb_box_record *rec, const char **error_r);
/* Deletes every token, block and part map of the box. */
int fts_lmdb_box_clear(struct fts_lmdb_backend *backend,
		       struct fts_lmdb_box_record *rec, const char **error_r);

/* Runs fn in a write transaction; on MDB_MAP_FULL grows the map and runs
   it again, from the start, in a new transaction. */
/* Gives LMDB's free pages back to the file system (see
   fts_lmdb_db_compact()). A failure leaves the index as it was and is
   only logged, or makes it damaged. */
void fts_lmdb_backend_compact(struct fts_lmdb_backend *backend, bool force);
int fts_lmdb_backend_write(struct fts_lmdb_backend *backend,
			   int (*fn)(void *context, const char **error_r),
			   void *context, const char **error_r);

struct fts_backend_update_context *
fts_lmdb_update_init(struct fts_backend *backend);
int fts_lmdb_update_deinit(struct fts_backend_update_context *ctx);
void fts_lmdb_update_set_mailbox(struct fts_backend_update_context *ctx,
				 struct mailbox *box);
void fts_lmdb_update_expunge(struct fts_backend_update_context *ctx,
			     uint32_t uid);
bool fts_lmdb_update_set_build_key(struct fts_backend_update_context *ctx,
				   const struct fts_backend_build_key *key);
void fts_lmdb_update_unset_build_key(struct fts_backend_update_context *ctx);
int fts_lmdb_update_build_more(struct fts_backend_update_context *ctx,
			       const unsigned char *data, size_t size);

int fts_lmdb_lookup(struct fts_backend *backend, struct mailbox *box,
		    struct mail_search_arg *args, enum fts_lookup_flags flags,
		    struct fts_result *result);
int fts_lmdb_lookup_multi(struct fts_backend *backend,
			  struct mailbox *const boxes[],
			  struct mail_search_arg *args,
			  enum fts_lookup_flags flags,
			  struct fts_multi_result *result);

#endif
