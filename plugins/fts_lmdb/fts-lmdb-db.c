/* LMDB access, and nothing else includes lmdb.h. Errors that mean the
   file is damaged are remembered, so that callers can fall back to
   reading mail and rebuild instead of trusting the index. */

#include "lib.h"
#include "array.h"
#include "llist.h"
#include "mkdir-parents.h"
#include "fts-lmdb-db.h"

#include <sys/stat.h>
#include <unistd.h>
#include <lmdb.h>

#define FTS_LMDB_DB_MAX_MAP_MB (1024U * 1024U)

static const char *const fts_lmdb_dbi_names[FTS_LMDB_DBI_COUNT] = {
	[FTS_LMDB_DBI_META] = "meta",
	[FTS_LMDB_DBI_BOXES] = "boxes",
	[FTS_LMDB_DBI_PARTS] = "parts",
	[FTS_LMDB_DBI_TOKENS] = "tokens",
	[FTS_LMDB_DBI_VOCAB] = "vocab",
};

struct fts_lmdb_db {
	struct fts_lmdb_db *prev, *next;
	int refcount;
	char *dir;
	struct event *event;
	unsigned int initial_map_mb;

	MDB_env *env;
	MDB_dbi dbi[FTS_LMDB_DBI_COUNT];
	MDB_txn *rtxn, *wtxn;
	bool rtxn_active;

	bool map_full;
	bool corrupted;
};

struct fts_lmdb_db_iter {
	struct fts_lmdb_db *db;
	MDB_cursor *cursor;
	unsigned char *prefix;
	size_t prefix_size;
	bool started;
	int error;
};

static struct fts_lmdb_db *fts_lmdb_dbs = NULL;

static const char *
fts_lmdb_db_error(struct fts_lmdb_db *db, const char *func, int rc)
{
	switch (rc) {
	case MDB_MAP_FULL:
		db->map_full = TRUE;
		break;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH:
	case MDB_BAD_DBI:
	case MDB_INCOMPATIBLE:
		db->corrupted = TRUE;
		break;
	default:
		break;
	}
	return t_strdup_printf("%s(%s) failed: %s", func, db->dir,
			       mdb_strerror(rc));
}

static bool fts_lmdb_db_truncated(struct fts_lmdb_db *db)
{
	MDB_envinfo info;
	MDB_stat st;
	struct stat stt;
	const char *path = t_strconcat(db->dir, "/data.mdb", NULL);

	/* LMDB maps the file and trusts it; a page past the end of a
	   truncated file would be SIGBUS, not an error. */
	if (mdb_env_info(db->env, &info) != 0 ||
	    mdb_env_stat(db->env, &st) != 0 || stat(path, &stt) < 0)
		return TRUE;
	return (uint64_t)stt.st_size <
		((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
}

static int fts_lmdb_db_open_dbis(struct fts_lmdb_db *db, const char **error_r)
{
	MDB_txn *txn;
	unsigned int i;
	int rc;

	/* Opening existing databases needs no write lock; only a new
	   environment takes one to create them. */
	rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_txn_begin", rc);
		return -1;
	}
	for (i = 0; i < FTS_LMDB_DBI_COUNT; i++) {
		rc = mdb_dbi_open(txn, fts_lmdb_dbi_names[i], 0, &db->dbi[i]);
		if (rc != 0)
			break;
	}
	if (rc == 0) {
		rc = mdb_txn_commit(txn);
		if (rc != 0) {
			*error_r = fts_lmdb_db_error(db, "mdb_txn_commit", rc);
			return -1;
		}
		return 0;
	}
	mdb_txn_abort(txn);
	if (rc != MDB_NOTFOUND) {
		*error_r = fts_lmdb_db_error(db, "mdb_dbi_open", rc);
		return -1;
	}

	rc = mdb_txn_begin(db->env, NULL, 0, &txn);
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_txn_begin", rc);
		return -1;
	}
	for (i = 0; i < FTS_LMDB_DBI_COUNT && rc == 0; i++) {
		rc = mdb_dbi_open(txn, fts_lmdb_dbi_names[i], MDB_CREATE,
				  &db->dbi[i]);
	}
	if (rc != 0) {
		mdb_txn_abort(txn);
		*error_r = fts_lmdb_db_error(db, "mdb_dbi_open", rc);
		return -1;
	}
	rc = mdb_txn_commit(txn);
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_txn_commit", rc);
		return -1;
	}
	return 0;
}

static void fts_lmdb_db_close_env(struct fts_lmdb_db *db)
{
	if (db->wtxn != NULL) {
		mdb_txn_abort(db->wtxn);
		db->wtxn = NULL;
	}
	if (db->rtxn != NULL) {
		mdb_txn_abort(db->rtxn);
		db->rtxn = NULL;
		db->rtxn_active = FALSE;
	}
	if (db->env != NULL) {
		mdb_env_close(db->env);
		db->env = NULL;
	}
}

static int fts_lmdb_db_open_env(struct fts_lmdb_db *db, const char **error_r)
{
	int rc;

	if (mkdir_parents(db->dir, 0700) < 0 && errno != EEXIST) {
		*error_r = t_strdup_printf("mkdir(%s) failed: %m", db->dir);
		return -1;
	}
	rc = mdb_env_create(&db->env);
	if (rc == 0)
		rc = mdb_env_set_maxdbs(db->env, FTS_LMDB_DBI_COUNT + 4);
	if (rc == 0) {
		rc = mdb_env_set_mapsize(db->env,
			(size_t)db->initial_map_mb * 1024 * 1024);
	}
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_env_create", rc);
		fts_lmdb_db_close_env(db);
		return -1;
	}
	/* NOTLS: the reused read transaction is not tied to a thread,
	   and a write transaction may run beside it. */
	rc = mdb_env_open(db->env, db->dir, MDB_NOTLS | MDB_NORDAHEAD, 0600);
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_env_open", rc);
		fts_lmdb_db_close_env(db);
		return -1;
	}
	if (fts_lmdb_db_truncated(db)) {
		db->corrupted = TRUE;
		*error_r = t_strdup_printf("%s/data.mdb is shorter than its "
					   "last page: truncated", db->dir);
		fts_lmdb_db_close_env(db);
		return -1;
	}
	if (fts_lmdb_db_open_dbis(db, error_r) < 0) {
		fts_lmdb_db_close_env(db);
		return -1;
	}
	return 0;
}

static int fts_lmdb_db_unlink_files(struct fts_lmdb_db *db,
				    const char **error_r)
{
	static const char *const names[] = { "data.mdb", "lock.mdb" };
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(names); i++) {
		const char *path = t_strconcat(db->dir, "/", names[i], NULL);

		if (unlink(path) < 0 && errno != ENOENT) {
			*error_r = t_strdup_printf("unlink(%s) failed: %m",
						   path);
			return -1;
		}
	}
	return 0;
}

int fts_lmdb_db_open(const char *dir, unsigned int initial_map_mb,
		     struct event *event, struct fts_lmdb_db **db_r,
		     const char **error_r)
{
	struct fts_lmdb_db *db;
	const char *error;

	for (db = fts_lmdb_dbs; db != NULL; db = db->next) {
		if (strcmp(db->dir, dir) == 0) {
			db->refcount++;
			*db_r = db;
			return 0;
		}
	}

	db = i_new(struct fts_lmdb_db, 1);
	db->refcount = 1;
	db->dir = i_strdup(dir);
	db->event = event;
	db->initial_map_mb = initial_map_mb;
	if (fts_lmdb_db_open_env(db, &error) < 0) {
		if (!db->corrupted) {
			*error_r = error;
			i_free(db->dir);
			i_free(db);
			return -1;
		}
		/* A damaged index is only a cache of the mail: start over. */
		e_error(event, "Index damaged, rebuilding it: %s", error);
		db->corrupted = FALSE;
		if (fts_lmdb_db_unlink_files(db, error_r) < 0 ||
		    fts_lmdb_db_open_env(db, error_r) < 0) {
			i_free(db->dir);
			i_free(db);
			return -1;
		}
	}
	DLLIST_PREPEND(&fts_lmdb_dbs, db);
	*db_r = db;
	return 0;
}

void fts_lmdb_db_unref(struct fts_lmdb_db **_db)
{
	struct fts_lmdb_db *db = *_db;

	*_db = NULL;
	i_assert(db->refcount > 0);
	if (--db->refcount > 0)
		return;
	DLLIST_REMOVE(&fts_lmdb_dbs, db);
	fts_lmdb_db_close_env(db);
	i_free(db->dir);
	i_free(db);
}

const char *fts_lmdb_db_path(struct fts_lmdb_db *db)
{
	return db->dir;
}

int fts_lmdb_db_rebuild(struct fts_lmdb_db *db, const char **error_r)
{
	fts_lmdb_db_close_env(db);
	db->corrupted = FALSE;
	db->map_full = FALSE;
	if (fts_lmdb_db_unlink_files(db, error_r) < 0)
		return -1;
	return fts_lmdb_db_open_env(db, error_r);
}

bool fts_lmdb_db_is_corrupted(struct fts_lmdb_db *db)
{
	return db->corrupted;
}

static int fts_lmdb_db_adopt_mapsize(struct fts_lmdb_db *db,
				     const char **error_r)
{
	/* another process grew the map */
	int rc = mdb_env_set_mapsize(db->env, 0);

	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_env_set_mapsize", rc);
		return -1;
	}
	return 0;
}

int fts_lmdb_db_read_renew(struct fts_lmdb_db *db, const char **error_r)
{
	int rc;

	if (db->env == NULL) {
		*error_r = t_strdup_printf("%s: index not open", db->dir);
		return -1;
	}
	fts_lmdb_db_read_release(db);
	if (db->rtxn != NULL) {
		rc = mdb_txn_renew(db->rtxn);
		if (rc == MDB_MAP_RESIZED) {
			if (fts_lmdb_db_adopt_mapsize(db, error_r) < 0)
				return -1;
			rc = mdb_txn_renew(db->rtxn);
		}
	} else {
		rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &db->rtxn);
		if (rc == MDB_MAP_RESIZED) {
			if (fts_lmdb_db_adopt_mapsize(db, error_r) < 0)
				return -1;
			rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY,
					   &db->rtxn);
		}
		if (rc != 0)
			db->rtxn = NULL;
	}
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_txn_renew", rc);
		return -1;
	}
	db->rtxn_active = TRUE;
	return 0;
}

int fts_lmdb_db_read_ensure(struct fts_lmdb_db *db, const char **error_r)
{
	return db->rtxn_active ? 0 : fts_lmdb_db_read_renew(db, error_r);
}

void fts_lmdb_db_read_release(struct fts_lmdb_db *db)
{
	/* a reader left open would keep LMDB from reusing freed pages */
	if (db->rtxn_active) {
		mdb_txn_reset(db->rtxn);
		db->rtxn_active = FALSE;
	}
}

int fts_lmdb_db_write_begin(struct fts_lmdb_db *db, const char **error_r)
{
	int rc;

	i_assert(db->wtxn == NULL);
	if (db->env == NULL) {
		*error_r = t_strdup_printf("%s: index not open", db->dir);
		return -1;
	}
	db->map_full = FALSE;
	rc = mdb_txn_begin(db->env, NULL, 0, &db->wtxn);
	if (rc == MDB_MAP_RESIZED) {
		fts_lmdb_db_read_release(db);
		if (fts_lmdb_db_adopt_mapsize(db, error_r) < 0)
			return -1;
		rc = mdb_txn_begin(db->env, NULL, 0, &db->wtxn);
	}
	if (rc != 0) {
		db->wtxn = NULL;
		*error_r = fts_lmdb_db_error(db, "mdb_txn_begin", rc);
		return -1;
	}
	return 0;
}

int fts_lmdb_db_write_commit(struct fts_lmdb_db *db, const char **error_r)
{
	int rc;

	i_assert(db->wtxn != NULL);
	rc = mdb_txn_commit(db->wtxn);
	db->wtxn = NULL;
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_txn_commit", rc);
		return -1;
	}
	return 0;
}

void fts_lmdb_db_write_abort(struct fts_lmdb_db *db)
{
	if (db->wtxn != NULL) {
		mdb_txn_abort(db->wtxn);
		db->wtxn = NULL;
	}
}

bool fts_lmdb_db_map_full(struct fts_lmdb_db *db)
{
	return db->map_full;
}

int fts_lmdb_db_grow(struct fts_lmdb_db *db, const char **error_r)
{
	MDB_envinfo info;
	size_t new_size;
	int rc;

	i_assert(db->wtxn == NULL);
	/* mdb_env_set_mapsize() wants no live transaction in the process */
	fts_lmdb_db_read_release(db);
	if (db->rtxn != NULL) {
		mdb_txn_abort(db->rtxn);
		db->rtxn = NULL;
	}
	rc = mdb_env_info(db->env, &info);
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_env_info", rc);
		return -1;
	}
	if (info.me_mapsize >= (size_t)FTS_LMDB_DB_MAX_MAP_MB * 1024 * 1024) {
		*error_r = t_strdup_printf("%s: map size limit reached (%zu)",
					   db->dir, info.me_mapsize);
		return -1;
	}
	new_size = info.me_mapsize * 2;
	rc = mdb_env_set_mapsize(db->env, new_size);
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_env_set_mapsize", rc);
		return -1;
	}
	e_debug(db->event, "Map of %s grown to %zu MB", db->dir,
		new_size / (1024 * 1024));
	db->map_full = FALSE;
	return 0;
}

static MDB_txn *fts_lmdb_db_txn(struct fts_lmdb_db *db)
{
	if (db->wtxn != NULL)
		return db->wtxn;
	i_assert(db->rtxn_active);
	return db->rtxn;
}

int fts_lmdb_db_get(struct fts_lmdb_db *db, enum fts_lmdb_dbi dbi,
		    const void *key, size_t key_size,
		    const void **data_r, size_t *size_r, const char **error_r)
{
	MDB_val k = { key_size, (void *)key }, v;
	int rc;

	rc = mdb_get(fts_lmdb_db_txn(db), db->dbi[dbi], &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_get", rc);
		return -1;
	}
	*data_r = v.mv_data;
	*size_r = v.mv_size;
	return 1;
}

int fts_lmdb_db_put(struct fts_lmdb_db *db, enum fts_lmdb_dbi dbi,
		    const void *key, size_t key_size,
		    const void *data, size_t size, const char **error_r)
{
	MDB_val k = { key_size, (void *)key }, v = { size, (void *)data };
	int rc;

	i_assert(db->wtxn != NULL);
	rc = mdb_put(db->wtxn, db->dbi[dbi], &k, &v, 0);
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_put", rc);
		return -1;
	}
	return 0;
}

int fts_lmdb_db_del(struct fts_lmdb_db *db, enum fts_lmdb_dbi dbi,
		    const void *key, size_t key_size, const char **error_r)
{
	MDB_val k = { key_size, (void *)key };
	int rc;

	i_assert(db->wtxn != NULL);
	rc = mdb_del(db->wtxn, db->dbi[dbi], &k, NULL);
	if (rc != 0 && rc != MDB_NOTFOUND) {
		*error_r = fts_lmdb_db_error(db, "mdb_del", rc);
		return -1;
	}
	return 0;
}

struct fts_lmdb_db_iter *
fts_lmdb_db_iter_init(struct fts_lmdb_db *db, enum fts_lmdb_dbi dbi,
		      const void *prefix, size_t prefix_size)
{
	struct fts_lmdb_db_iter *iter;

	iter = i_new(struct fts_lmdb_db_iter, 1);
	iter->db = db;
	iter->prefix = i_malloc(prefix_size + 1);
	if (prefix_size > 0)
		memcpy(iter->prefix, prefix, prefix_size);
	iter->prefix_size = prefix_size;
	iter->error = mdb_cursor_open(fts_lmdb_db_txn(db), db->dbi[dbi],
				      &iter->cursor);
	if (iter->error != 0)
		iter->cursor = NULL;
	return iter;
}

bool fts_lmdb_db_iter_next(struct fts_lmdb_db_iter *iter,
			   const void **key_r, size_t *key_size_r,
			   const void **data_r, size_t *size_r)
{
	MDB_val k, v;
	int rc;

	if (iter->cursor == NULL || iter->error != 0)
		return FALSE;
	if (!iter->started) {
		iter->started = TRUE;
		k.mv_size = iter->prefix_size;
		k.mv_data = (void *)iter->prefix;
		rc = iter->prefix_size == 0 ?
			mdb_cursor_get(iter->cursor, &k, &v, MDB_FIRST) :
			mdb_cursor_get(iter->cursor, &k, &v, MDB_SET_RANGE);
	} else {
		rc = mdb_cursor_get(iter->cursor, &k, &v, MDB_NEXT);
	}
	if (rc != 0) {
		if (rc != MDB_NOTFOUND)
			iter->error = rc;
		return FALSE;
	}
	if (k.mv_size < iter->prefix_size ||
	    memcmp(k.mv_data, iter->prefix, iter->prefix_size) != 0)
		return FALSE;
	*key_r = k.mv_data;
	*key_size_r = k.mv_size;
	*data_r = v.mv_data;
	*size_r = v.mv_size;
	return TRUE;
}

int fts_lmdb_db_iter_deinit(struct fts_lmdb_db_iter **_iter,
			    const char **error_r)
{
	struct fts_lmdb_db_iter *iter = *_iter;
	int ret = 0;

	*_iter = NULL;
	if (iter->error != 0) {
		*error_r = fts_lmdb_db_error(iter->db, "mdb_cursor_get",
					     iter->error);
		ret = -1;
	}
	if (iter->cursor != NULL)
		mdb_cursor_close(iter->cursor);
	i_free(iter->prefix);
	i_free(iter);
	return ret;
}

int fts_lmdb_db_file_size(struct fts_lmdb_db *db, uint64_t *size_r)
{
	struct stat st;

	if (stat(t_strconcat(db->dir, "/data.mdb", NULL), &st) < 0)
		return -1;
	*size_r = st.st_size;
	return 0;
}
