#ifndef FTS_LMDB_GUIDS_H
#define FTS_LMDB_GUIDS_H

/* What the guids database keeps: per UID the index has covered, a hash
   of the message's GUID, so that a copy of the mailbox with other mail
   under the same UIDs is told apart (docs/fts_lmdb.md "An index carried
   from another copy").

   An expunge keeps the hash, marked as a tombstone, instead of deleting
   it: a copy that diverged can hold its own mail under UIDs whose mail
   the index has already seen expunged, and only the old hash tells them
   apart. A session that lags behind an expunge sees the same message,
   hence the same hash, so a tombstone never makes a live index look
   like a copy's. Tombstones are kept for the highest UIDs, at most as
   many as the mailbox's indexed messages (and at least
   FTS_LMDB_GUIDS_TOMBSTONES_MIN), so that they never grow the index
   beyond what its mail does. */

#define FTS_LMDB_GUIDS_TOMBSTONES_MIN 1024

struct fts_lmdb_db;
struct fts_lmdb_box_record;

/* 1 and the hash of what the index saw under uid (expunged or not), 0
   if it has none, -1 on error. */
int fts_lmdb_guids_get(struct fts_lmdb_db *db, uint32_t box_id, uint32_t uid,
		       uint8_t hash_r[FTS_LMDB_GUID_HASH_SIZE],
		       const char **error_r);
int fts_lmdb_guids_put(struct fts_lmdb_db *db, uint32_t box_id, uint32_t uid,
		       const uint8_t hash[FTS_LMDB_GUID_HASH_SIZE],
		       const char **error_r);
/* Marks uid's hash as expunged, counting it in rec. */
int fts_lmdb_guids_expunge(struct fts_lmdb_db *db,
			   struct fts_lmdb_box_record *rec, uint32_t uid,
			   const char **error_r);
/* Drops the lowest UIDs' tombstones once they outnumber what the
   mailbox may keep, down to half of that. */
int fts_lmdb_guids_prune(struct fts_lmdb_db *db,
			 struct fts_lmdb_box_record *rec,
			 const char **error_r);

#endif
