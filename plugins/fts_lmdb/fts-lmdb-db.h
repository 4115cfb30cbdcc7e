#ifndef FTS_LMDB_DB_H
#define FTS_LMDB_DB_H

/* The only interface to LMDB. One environment per index directory, shared
   by every backend of the process that uses the same directory: LMDB
   forbids opening one environment twice in a process. */

enum fts_lmdb_dbi {
	/* "format" -> version and indexed header list */
	FTS_LMDB_DBI_META,
	/* mailbox GUID -> struct fts_lmdb_box_record */
	FTS_LMDB_DBI_BOXES,
	/* box id (numpacked) + the lowest token it may hold -> a block of
	   sorted tokens with their posting lists (fts-lmdb-blocks.h) */
	FTS_LMDB_DBI_BLOCKS,
	/* box id + token -> posting list, for lists too long for a block
	   and for the special lists (FTS_LMDB_KEY_*) */
	FTS_LMDB_DBI_TOKENS,
	/* box id + UID (4+4 bytes, big endian) -> part map (partial fetch) */
	FTS_LMDB_DBI_PARTS,
	/* box id + UID -> the first 8 bytes of the message's GUID hash */
	FTS_LMDB_DBI_GUIDS,
	/* box id (+ two bytes) -> the trigram filter (fts-lmdb-grams.c) */
	FTS_LMDB_DBI_GRAMS,

	FTS_LMDB_DBI_COUNT
};

struct fts_lmdb_db;
struct fts_lmdb_db_iter;

int fts_lmdb_db_open(const char *dir, unsigned int initial_map_mb,
		     struct event *event, struct fts_lmdb_db **db_r,
		     const char **error_r);
void fts_lmdb_db_unref(struct fts_lmdb_db **db);
const char *fts_lmdb_db_path(struct fts_lmdb_db *db);

/* The read transaction is kept and only renewed, so that a lookup costs
   no transaction setup. Renew it to see what other processes wrote. */
int fts_lmdb_db_read_renew(struct fts_lmdb_db *db, const char **error_r);
/* Renews only if there is no read transaction: a search's levels see
   one snapshot. */
int fts_lmdb_db_read_ensure(struct fts_lmdb_db *db, const char **error_r);
void fts_lmdb_db_read_release(struct fts_lmdb_db *db);

/* The data file as it is (inode, size, change time) and the snapshot of
   the read transaction. LMDB never changes a committed page in place,
   and any write to the file changes its ctime, so values checked under
   one stamp are still the same bytes under an equal stamp. */
struct fts_lmdb_db_stamp {
	dev_t dev;
	ino_t ino;
	off_t size;
	time_t ctime_sec;
	long ctime_nsec;
	uint64_t txnid;
};

/* FALSE if there is no read transaction or the file can't be stat()ed */
bool fts_lmdb_db_stamp(struct fts_lmdb_db *db,
		       struct fts_lmdb_db_stamp *stamp_r);
bool fts_lmdb_db_stamp_equal(const struct fts_lmdb_db_stamp *s1,
			     const struct fts_lmdb_db_stamp *s2);
/* While set, values of dbi are read without checking their checksums:
   only for values checked before under an equal stamp. */
void fts_lmdb_db_set_trusted(struct fts_lmdb_db *db, enum fts_lmdb_dbi dbi,
			     bool trusted);

/* LMDB hands the pages of its free list to the next write unchecked:
   garbage there would make a write overwrite pages in use. Checks the
   list (short: LMDB reuses freed pages first) in the open read
   transaction; write_begin does it itself. */
int fts_lmdb_db_check_free(struct fts_lmdb_db *db, const char **error_r);
int fts_lmdb_db_write_begin(struct fts_lmdb_db *db, const char **error_r);
int fts_lmdb_db_write_commit(struct fts_lmdb_db *db, const char **error_r);
void fts_lmdb_db_write_abort(struct fts_lmdb_db *db);
/* TRUE if the last failure was MDB_MAP_FULL: abort, grow, retry. */
bool fts_lmdb_db_map_full(struct fts_lmdb_db *db);
int fts_lmdb_db_grow(struct fts_lmdb_db *db, const char **error_r);

/* Copies the environment without its free pages into a new data.mdb,
   under the write lock; other processes open the new file at their next
   transaction. force: whenever a page is free; else only when most of
   the file is. Returns 1 if compacted, 0 if not worth it (or a read
   transaction is open), -1 on error. */
int fts_lmdb_db_compact(struct fts_lmdb_db *db, bool force,
			const char **error_r);

/* TRUE if LMDB reported damage; the caller falls back and rebuilds. */
bool fts_lmdb_db_is_corrupted(struct fts_lmdb_db *db);
/* The caller found damage that no checksum shows (values that disagree
   with each other). */
void fts_lmdb_db_set_corrupted(struct fts_lmdb_db *db);
/* Throw the environment away and start an empty one. */
int fts_lmdb_db_rebuild(struct fts_lmdb_db *db, const char **error_r);

/* These use the write transaction when one is open, else the read one.
   get returns 1 if found, 0 if not, -1 on error. The data stays valid
   until the transaction ends or (write) the next change. */
int fts_lmdb_db_get(struct fts_lmdb_db *db, enum fts_lmdb_dbi dbi,
		    const void *key, size_t key_size,
		    const void **data_r, size_t *size_r, const char **error_r);
/* The entry with the greatest key <= key: 1 if found, 0 if none, -1 on
   error. The caller checks that it is of the range it meant. */
int fts_lmdb_db_get_floor(struct fts_lmdb_db *db, enum fts_lmdb_dbi dbi,
			  const void *key, size_t key_size,
			  const void **key_r, size_t *key_size_r,
			  const void **data_r, size_t *size_r,
			  const char **error_r);
int fts_lmdb_db_put(struct fts_lmdb_db *db, enum fts_lmdb_dbi dbi,
		    const void *key, size_t key_size,
		    const void *data, size_t size, const char **error_r);
int fts_lmdb_db_del(struct fts_lmdb_db *db, enum fts_lmdb_dbi dbi,
		    const void *key, size_t key_size, const char **error_r);

/* Deletes every key that begins with prefix. */
int fts_lmdb_db_del_prefix(struct fts_lmdb_db *db, enum fts_lmdb_dbi dbi,
			   const void *prefix, size_t prefix_size,
			   const char **error_r);

/* Keys that begin with prefix, in key order. */
struct fts_lmdb_db_iter *
fts_lmdb_db_iter_init(struct fts_lmdb_db *db, enum fts_lmdb_dbi dbi,
		      const void *prefix, size_t prefix_size);
bool fts_lmdb_db_iter_next(struct fts_lmdb_db_iter *iter,
			   const void **key_r, size_t *key_size_r,
			   const void **data_r, size_t *size_r);
int fts_lmdb_db_iter_deinit(struct fts_lmdb_db_iter **iter,
			    const char **error_r);

/* Bytes in use by the environment's data file. */
int fts_lmdb_db_file_size(struct fts_lmdb_db *db, uint64_t *size_r);

#endif
