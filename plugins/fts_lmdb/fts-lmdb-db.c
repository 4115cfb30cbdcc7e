/* LMDB access, and nothing else includes lmdb.h. Errors that mean the
   file is damaged are remembered, so that callers can fall back to
   reading mail and rebuild instead of trusting the index. */

#include "lib.h"
#include "array.h"
#include "llist.h"
#include "buffer.h"
#include "fts-lmdb-checksum.h"
#include "mkdir-parents.h"
#include "fts-lmdb-db.h"

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <stdio.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <unistd.h>
#include <lmdb.h>

#define FTS_LMDB_DB_MAX_MAP_MB (1024U * 1024U)

/* An automatic compaction is worth its copy when at least this share of
   the file is LMDB's free list, and at least this many pages: after a
   build in many batches, most of it. */
#define FTS_LMDB_DB_COMPACT_FREE_PERCENT 50
#define FTS_LMDB_DB_COMPACT_MIN_PAGES 256

/* LMDB 0.9 has no page checksums, and garbage that still looks like
   valid pages would be read as data: every value but meta's ends in a
   CRC32C of its key and itself. (meta holds the format, which must stay
   readable by any version, so that an older index is rebuilt as
   such.) */
#define FTS_LMDB_DB_CHECKSUM_SIZE 4

static const char *const fts_lmdb_dbi_names[FTS_LMDB_DBI_COUNT] = {
	[FTS_LMDB_DBI_META] = "meta",
	[FTS_LMDB_DBI_BOXES] = "boxes",
	[FTS_LMDB_DBI_PARTS] = "parts",
	[FTS_LMDB_DBI_GUIDS] = "guids",
	[FTS_LMDB_DBI_BLOCKS] = "blocks",
	[FTS_LMDB_DBI_TOKENS] = "tokens",
	[FTS_LMDB_DBI_GRAMS] = "grams",
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

	/* What the open environment mapped: a file changed under the map
	   is a SIGBUS at the next access, so it is compared before each
	   transaction. */
	dev_t data_dev, lock_dev;
	ino_t data_ino, lock_ino;
	off_t lock_size;
	unsigned int page_size;
	/* the map and how much of it the file held when the transaction
	   began, for fts_lmdb_db_value_valid() */
	const char *map_addr;
	size_t map_size, map_used;

	/* The lock file of an environment closed with its write
	   transaction still holding the write lock (it faulted): LMDB's
	   mutex is not recursive, so those files must not be opened again
	   by this process. Cleared once they are replaced. */
	bool stuck;
	dev_t stuck_lock_dev;
	ino_t stuck_lock_ino;

	/* a value and its checksum, for mdb_put() */
	buffer_t *put_buf;

	/* dbis (bits) whose values are read without their checksums,
	   see fts_lmdb_db_set_trusted() */
	unsigned int trusted_dbis;

	/* pages on LMDB's free list and the last page in use, as the last
	   fts_lmdb_db_check_free() counted them */
	uint64_t free_pages, last_pgno;

	bool map_full;
	bool corrupted;
};

struct fts_lmdb_db_iter {
	struct fts_lmdb_db *db;
	enum fts_lmdb_dbi dbi;
	MDB_cursor *cursor;
	unsigned char *prefix;
	size_t prefix_size;
	bool started;
	int error;
};

static struct fts_lmdb_db *fts_lmdb_dbs = NULL;

/* LMDB trusts the pages it reads: garbage written into the middle of
   data.mdb can make it follow an offset out of the page or the file, a
   SIGSEGV or SIGBUS. The LMDB calls that walk the tree run under
   FTS_LMDB_GUARDED(), which turns such a fault into MDB_CORRUPTED, so
   that the index is dropped and rebuilt as for any damage LMDB reports.
   Only the LMDB call itself runs guarded: the jump skips no Dovecot data
   stack frame and no allocation of ours. A fault outside a guarded call
   goes to whatever handler was there before (the default: a crash). */
static sigjmp_buf *volatile fts_lmdb_fault_jmp = NULL;
/* A guarded call faulted since the write transaction began. LMDB's
   writes keep a cursor of their stack frame on the transaction's list
   while they run, and aborting the transaction frees that list: after
   the jump, that would be free() of a stack address. Such a transaction
   is never aborted; see fts_lmdb_db_drop_write(). */
static bool fts_lmdb_faulted = FALSE;
static struct sigaction fts_lmdb_old_segv, fts_lmdb_old_bus;
static bool fts_lmdb_fault_handler_set = FALSE;

static void fts_lmdb_fault_restore(void)
{
	if (!fts_lmdb_fault_handler_set)
		return;
	fts_lmdb_fault_handler_set = FALSE;
	(void)sigaction(SIGSEGV, &fts_lmdb_old_segv, NULL);
	(void)sigaction(SIGBUS, &fts_lmdb_old_bus, NULL);
}

static void fts_lmdb_fault_handler(int signo, siginfo_t *si ATTR_UNUSED,
				   void *context ATTR_UNUSED)
{
	sigjmp_buf *jmp = fts_lmdb_fault_jmp;

	if (jmp != NULL) {
		fts_lmdb_fault_jmp = NULL;
		siglongjmp(*jmp, signo);
	}
	/* Not in LMDB: returning runs the faulting instruction again,
	   this time under the previous handler. */
	fts_lmdb_fault_restore();
}

static void fts_lmdb_fault_handler_init(void)
{
	struct sigaction act;

	if (fts_lmdb_fault_handler_set)
		return;
	i_zero(&act);
	act.sa_sigaction = fts_lmdb_fault_handler;
	/* SA_NODEFER: the jump leaves the handler without restoring the
	   signal mask, and sigsetjmp(, 0) saves none (no syscall) */
	act.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&act.sa_mask);
	if (sigaction(SIGSEGV, &act, &fts_lmdb_old_segv) < 0)
		return;
	if (sigaction(SIGBUS, &act, &fts_lmdb_old_bus) < 0) {
		(void)sigaction(SIGSEGV, &fts_lmdb_old_segv, NULL);
		return;
	}
	fts_lmdb_fault_handler_set = TRUE;
}

#define FTS_LMDB_GUARDED(rc, call) STMT_START { \
	sigjmp_buf fts_lmdb_jmp; \
	if (sigsetjmp(fts_lmdb_jmp, 0) == 0) { \
		fts_lmdb_fault_jmp = &fts_lmdb_jmp; \
		(rc) = (call); \
	} else { \
		(rc) = MDB_CORRUPTED; \
		fts_lmdb_faulted = TRUE; \
	} \
	fts_lmdb_fault_jmp = NULL; \
	} STMT_END

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

/* Returns " (disk full ...)" if an error may have been the file system
   filling up, else "". LMDB reports a write cut short as EIO, so the
   errno alone doesn't say it. */
static const char *fts_lmdb_db_space_note(struct fts_lmdb_db *db, int err)
{
	struct statvfs vfs;
	unsigned long long free_bytes;

	if (err != ENOSPC && err != EIO && err != EDQUOT)
		return "";
	if (statvfs(db->dir, &vfs) < 0)
		return err == ENOSPC ? " (disk full)" : "";
	free_bytes = (unsigned long long)vfs.f_bavail * vfs.f_frsize;
	if (err != ENOSPC && free_bytes >= 1024 * 1024)
		return "";
	return t_strdup_printf(" (disk full: %llu bytes free in %s)",
			       free_bytes, db->dir);
}

static const char *fts_lmdb_db_lock_path(struct fts_lmdb_db *db)
{
	return t_strconcat(db->dir, "/lock.mdb", NULL);
}

static const char *fts_lmdb_db_data_path(struct fts_lmdb_db *db)
{
	return t_strconcat(db->dir, "/data.mdb", NULL);
}

static int fts_lmdb_db_data_size(struct fts_lmdb_db *db, off_t *size_r)
{
	mdb_filehandle_t fd;
	struct stat st;

	/* the mapped file itself: the path may name another one by now */
	if (mdb_env_get_fd(db->env, &fd) != 0 || fstat(fd, &st) < 0)
		return -1;
	*size_r = st.st_size;
	return 0;
}

static bool fts_lmdb_db_truncated(struct fts_lmdb_db *db)
{
	MDB_envinfo info;
	off_t size;

	/* LMDB maps the file and trusts it; a page past the end of a
	   truncated file would be SIGBUS, not an error. Even the meta pages
	   that mdb_env_info() reads are read through the map. */
	if (fts_lmdb_db_data_size(db, &size) < 0 ||
	    (uint64_t)size < 2 * (uint64_t)db->page_size)
		return TRUE;
	if (mdb_env_info(db->env, &info) != 0)
		return TRUE;
	return (uint64_t)size <
		((uint64_t)info.me_last_pgno + 1) * db->page_size;
}

/* Remember what was mapped, for fts_lmdb_db_check_files(). */
static int fts_lmdb_db_note_files(struct fts_lmdb_db *db,
				  const char **error_r)
{
	MDB_stat mst;
	struct stat st;
	mdb_filehandle_t fd;
	const char *path;
	int rc;

	rc = mdb_env_stat(db->env, &mst);
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_env_stat", rc);
		return -1;
	}
	db->page_size = mst.ms_psize;
	rc = mdb_env_get_fd(db->env, &fd);
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_env_get_fd", rc);
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		*error_r = t_strdup_printf("fstat(%s) failed: %m",
					   fts_lmdb_db_data_path(db));
		return -1;
	}
	db->data_dev = st.st_dev;
	db->data_ino = st.st_ino;
	path = fts_lmdb_db_lock_path(db);
	if (stat(path, &st) < 0) {
		*error_r = t_strdup_printf("stat(%s) failed: %m", path);
		return -1;
	}
	db->lock_dev = st.st_dev;
	db->lock_ino = st.st_ino;
	db->lock_size = st.st_size;
	return 0;
}

/* LMDB creates lock.mdb with ftruncate() and initializes it through a
   shared map: on a full file system that write finds no block to
   allocate and the process dies of SIGBUS. Allocating the blocks first
   turns that into ENOSPC. Returns 0 if done, -1 on error. */
static int fts_lmdb_db_prealloc_lock(struct fts_lmdb_db *db,
				     const char **error_r)
{
	const char *path = fts_lmdb_db_lock_path(db);
	unsigned int max_readers;
	struct stat st;
	off_t size;
	int fd, ret;

	if (mdb_env_get_maxreaders(db->env, &max_readers) != 0)
		max_readers = 126;
	/* At least LMDB's own size (mdb.c's MDB_txninfo: two blocks padded
	   to 64-byte cache lines, one with a mutex and 24 bytes of counters,
	   the other with a mutex, then a 64-byte slot per reader), so that
	   LMDB never extends it itself. More is harmless: LMDB sizes its
	   reader table from the file. */
	size = (off_t)max_readers * 64 +
		2 * ((sizeof(pthread_mutex_t) + 24 + 63) & ~(size_t)63);

	/* This process has no environment open on the directory now (one
	   per path, see fts_lmdb_dbs), so closing this descriptor drops no
	   lock of LMDB's. */
	fd = open(path, O_RDWR | O_CREAT, 0600);
	if (fd < 0) {
		*error_r = t_strdup_printf("open(%s) failed: %m", path);
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		*error_r = t_strdup_printf("fstat(%s) failed: %m", path);
		i_close_fd(&fd);
		return -1;
	}
	/* Never resize a lock file that has content: processes that have
	   it open mapped it at its size. Only fill its holes. */
	if (st.st_size > 0)
		size = st.st_size;
	ret = posix_fallocate(fd, 0, size);
	if (ret != 0 && ret != EOPNOTSUPP && ret != EINVAL) {
		errno = ret;
		*error_r = t_strdup_printf("posix_fallocate(%s, %lld) "
			"failed: %m%s", path, (long long)size,
			fts_lmdb_db_space_note(db, ret));
		i_close_fd(&fd);
		return -1;
	}
	i_close_fd(&fd);
	return 0;
}

/* Ends the write transaction; one that faulted can't be aborted
   (fts_lmdb_faulted), and its environment is left open and unused: the
   write lock stays with this process, and the lock is a robust mutex,
   which stays on the thread's list of held robust mutexes, so lock.mdb
   must stay mapped (closing the environment made the next lock of
   another environment follow that list into the unmapped page: a
   SIGSEGV in pthread_mutex_lock). Other processes' writes wait for the
   lock until the files are replaced (the index is rebuilt, as for any
   fault) or this process exits. */
static void fts_lmdb_db_drop_write(struct fts_lmdb_db *db, MDB_txn **_txn)
{
	MDB_txn *txn = *_txn;

	*_txn = NULL;
	if (!fts_lmdb_faulted) {
		mdb_txn_abort(txn);
		return;
	}
	db->corrupted = TRUE;
	db->stuck = TRUE;
	db->stuck_lock_dev = db->lock_dev;
	db->stuck_lock_ino = db->lock_ino;
	if (db->rtxn != NULL) {
		mdb_txn_abort(db->rtxn);
		db->rtxn = NULL;
		db->rtxn_active = FALSE;
	}
	db->env = NULL;
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
		FTS_LMDB_GUARDED(rc, mdb_dbi_open(txn, fts_lmdb_dbi_names[i],
						  0, &db->dbi[i]));
		if (rc != 0)
			break;
	}
	if (rc == 0) {
		FTS_LMDB_GUARDED(rc, mdb_txn_commit(txn));
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

	fts_lmdb_faulted = FALSE;
	rc = mdb_txn_begin(db->env, NULL, 0, &txn);
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_txn_begin", rc);
		return -1;
	}
	for (i = 0; i < FTS_LMDB_DBI_COUNT && rc == 0; i++) {
		FTS_LMDB_GUARDED(rc, mdb_dbi_open(txn, fts_lmdb_dbi_names[i],
						  MDB_CREATE, &db->dbi[i]));
	}
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_dbi_open", rc);
		fts_lmdb_db_drop_write(db, &txn);
		return -1;
	}
	FTS_LMDB_GUARDED(rc, mdb_txn_commit(txn));
	if (rc != 0 && fts_lmdb_faulted)
		fts_lmdb_db_drop_write(db, &txn);
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_txn_commit", rc);
		return -1;
	}
	return 0;
}

static void fts_lmdb_db_close_env(struct fts_lmdb_db *db)
{
	if (db->wtxn != NULL)
		fts_lmdb_db_drop_write(db, &db->wtxn);
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
	fts_lmdb_fault_handler_init();
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
	if (fts_lmdb_db_prealloc_lock(db, error_r) < 0) {
		fts_lmdb_db_close_env(db);
		return -1;
	}
	/* NOTLS: the reused read transaction is not tied to a thread,
	   and a write transaction may run beside it. */
	rc = mdb_env_open(db->env, db->dir, MDB_NOTLS | MDB_NORDAHEAD, 0600);
	if (rc != 0) {
		*error_r = t_strconcat(fts_lmdb_db_error(db, "mdb_env_open", rc),
				       fts_lmdb_db_space_note(db, rc), NULL);
		fts_lmdb_db_close_env(db);
		return -1;
	}
	if (fts_lmdb_db_note_files(db, error_r) < 0) {
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

/* The environment can't be closed without writing to this process's
   reader slot through the map of lock.mdb, so a lock file cut short
   gets its size back first: zeros, which LMDB doesn't take for a valid
   lock file. Returns 0 if done, -1 if the map must be left alone. */
static int fts_lmdb_db_restore_lock_size(struct fts_lmdb_db *db,
					 const char *path)
{
	int fd, ret;

	/* closing fd drops LMDB's fcntl() locks on the file, but the
	   environment is closed right after this anyway */
	fd = open(path, O_RDWR);
	if (fd < 0) {
		e_error(db->event, "open(%s) failed: %m", path);
		return -1;
	}
	ret = posix_fallocate(fd, 0, db->lock_size);
	if (ret == EOPNOTSUPP || ret == EINVAL)
		ret = ftruncate(fd, db->lock_size) < 0 ? errno : 0;
	i_close_fd(&fd);
	if (ret != 0) {
		errno = ret;
		e_error(db->event, "Restoring the size of %s failed: %m%s",
			path, fts_lmdb_db_space_note(db, ret));
		return -1;
	}
	return 0;
}

/* Returns 0 if the files are those the environment mapped, at their
   sizes; 1 if another process replaced them (it rebuilt the index:
   open them again); -1 if one was cut short under the map, which the
   next access would turn into SIGBUS (db->corrupted is set). */
static int fts_lmdb_db_check_files(struct fts_lmdb_db *db,
				   const char **error_r)
{
	const char *path = fts_lmdb_db_lock_path(db);
	struct stat st;

	if (stat(path, &st) < 0) {
		if (errno == ENOENT)
			return 1;
		*error_r = t_strdup_printf("stat(%s) failed: %m", path);
		return -1;
	}
	if (st.st_dev != db->lock_dev || st.st_ino != db->lock_ino)
		return 1;
	if (st.st_size != db->lock_size) {
		db->corrupted = TRUE;
		*error_r = t_strdup_printf("%s damaged: its size changed "
			"under the open environment (%lld bytes, was %lld)",
			path, (long long)st.st_size, (long long)db->lock_size);
		if (st.st_size < db->lock_size &&
		    fts_lmdb_db_restore_lock_size(db, path) < 0) {
			/* leaked rather than a SIGBUS in mdb_env_close() */
			db->env = NULL;
			db->rtxn = NULL;
			db->rtxn_active = FALSE;
			db->wtxn = NULL;
		}
		return -1;
	}

	path = fts_lmdb_db_data_path(db);
	if (stat(path, &st) < 0) {
		if (errno == ENOENT)
			return 1;
		*error_r = t_strdup_printf("stat(%s) failed: %m", path);
		return -1;
	}
	if (st.st_dev != db->data_dev || st.st_ino != db->data_ino)
		return 1;
	if (fts_lmdb_db_truncated(db)) {
		db->corrupted = TRUE;
		*error_r = t_strdup_printf("%s is shorter than its last page: "
					   "truncated", path);
		return -1;
	}
	return 0;
}

static bool fts_lmdb_db_still_stuck(struct fts_lmdb_db *db,
				    const char **error_r)
{
	struct stat st;

	if (!db->stuck)
		return FALSE;
	if (stat(fts_lmdb_db_lock_path(db), &st) == 0 &&
	    st.st_dev == db->stuck_lock_dev &&
	    st.st_ino == db->stuck_lock_ino) {
		db->corrupted = TRUE;
		*error_r = t_strdup_printf("%s damaged: a write faulted and "
					   "holds its lock until the index "
					   "is rebuilt", db->dir);
		return TRUE;
	}
	db->stuck = FALSE;
	return FALSE;
}

/* Opens the environment if a failure closed it, else checks its files
   first. may_close is FALSE while a read transaction's data may still
   be in use: then damage is only reported, and replaced files are
   opened at a later call. */
static int fts_lmdb_db_ensure_env(struct fts_lmdb_db *db, bool may_close,
				  const char **error_r)
{
	int ret;

	if (db->env != NULL) {
		ret = fts_lmdb_db_check_files(db, error_r);
		if (ret == 0 || (ret > 0 && !may_close))
			return 0;
		if (ret < 0) {
			if (may_close)
				fts_lmdb_db_close_env(db);
			return -1;
		}
		e_debug(db->event, "Index %s was replaced, opening it again",
			db->dir);
		fts_lmdb_db_close_env(db);
	}
	if (db->env == NULL) {
		if (fts_lmdb_db_still_stuck(db, error_r))
			return -1;
		db->corrupted = FALSE;
		db->map_full = FALSE;
		if (fts_lmdb_db_open_env(db, error_r) < 0)
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
	buffer_free(&db->put_buf);
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

void fts_lmdb_db_set_corrupted(struct fts_lmdb_db *db)
{
	db->corrupted = TRUE;
}

static void fts_lmdb_db_note_map(struct fts_lmdb_db *db)
{
	MDB_envinfo info;

	if (mdb_env_info(db->env, &info) != 0) {
		db->map_addr = NULL;
		return;
	}
	db->map_addr = info.me_mapaddr;
	db->map_size = info.me_mapsize;
	db->map_used = (info.me_last_pgno + 1) * (size_t)db->page_size;
}

/* A value LMDB returns lies in the part of the map the file holds, or
   (in a write transaction) in a page it copied to memory. A size read
   from a damaged page could point past the file: reading that would be
   a SIGBUS in our own code. */
static bool fts_lmdb_db_value_valid(struct fts_lmdb_db *db, const MDB_val *v)
{
	const char *p = v->mv_data;
	size_t offset;

	if (db->map_addr == NULL || v->mv_size == 0)
		return TRUE;
	if (p >= db->map_addr && p < db->map_addr + db->map_size) {
		offset = p - db->map_addr;
		return offset <= db->map_used &&
			v->mv_size <= db->map_used - offset;
	}
	return db->wtxn != NULL;
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

	/* before the release: mdb_txn_reset() writes to lock.mdb's map */
	if (fts_lmdb_db_ensure_env(db, db->wtxn == NULL, error_r) < 0)
		return -1;
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
		/* with MDB_NOTLS the slot is this transaction's alone: only
		   a write into lock.mdb from outside LMDB changes it */
		if (rc == MDB_BAD_RSLOT) {
			*error_r = t_strdup_printf("%s damaged: %s",
				fts_lmdb_db_lock_path(db), *error_r);
		}
		/* Opening the environment again at the next call
		   reinitializes the lock file, or finds the index damaged. */
		if (db->wtxn == NULL)
			fts_lmdb_db_close_env(db);
		return -1;
	}
	db->rtxn_active = TRUE;
	fts_lmdb_db_note_map(db);
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

static int fts_lmdb_db_write_begin_once(struct fts_lmdb_db *db,
					const char **error_r)
{
	int rc, ret;

	if (db->rtxn_active)
		ret = fts_lmdb_db_check_free(db, error_r);
	else if ((ret = fts_lmdb_db_read_renew(db, error_r)) == 0) {
		ret = fts_lmdb_db_check_free(db, error_r);
		fts_lmdb_db_read_release(db);
	}
	if (ret < 0)
		return -1;
	if (fts_lmdb_db_ensure_env(db, !db->rtxn_active, error_r) < 0)
		return -1;
	db->map_full = FALSE;
	fts_lmdb_faulted = FALSE;
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
	/* A compaction replaces data.mdb while it holds the write lock
	   that this transaction may have waited for: what it wrote to the
	   file it had open would be lost. */
	ret = fts_lmdb_db_check_files(db, error_r);
	if (ret != 0) {
		mdb_txn_abort(db->wtxn);
		db->wtxn = NULL;
		if (ret < 0) {
			if (!db->rtxn_active)
				fts_lmdb_db_close_env(db);
			return -1;
		}
		if (db->rtxn_active) {
			*error_r = t_strdup_printf("%s was replaced during a "
						   "read", db->dir);
			return -1;
		}
		e_debug(db->event, "Index %s was replaced while waiting "
			"to write, opening it again", db->dir);
		fts_lmdb_db_close_env(db);
		return 0;
	}
	fts_lmdb_db_note_map(db);
	return 1;
}

int fts_lmdb_db_write_begin(struct fts_lmdb_db *db, const char **error_r)
{
	unsigned int attempt;
	int ret;

	i_assert(db->wtxn == NULL);
	for (attempt = 0; attempt < 3; attempt++) {
		if ((ret = fts_lmdb_db_write_begin_once(db, error_r)) != 0)
			return ret < 0 ? -1 : 0;
	}
	*error_r = t_strdup_printf("%s was replaced at every attempt to "
				   "write", db->dir);
	return -1;
}

int fts_lmdb_db_write_commit(struct fts_lmdb_db *db, const char **error_r)
{
	int rc;

	i_assert(db->wtxn != NULL);
	FTS_LMDB_GUARDED(rc, mdb_txn_commit(db->wtxn));
	/* a commit that failed has aborted itself, unless it faulted */
	if (rc != 0 && fts_lmdb_faulted)
		fts_lmdb_db_drop_write(db, &db->wtxn);
	db->wtxn = NULL;
	if (rc != 0) {
		*error_r = t_strconcat(
			fts_lmdb_db_error(db, "mdb_txn_commit", rc),
			fts_lmdb_db_space_note(db, rc), NULL);
		return -1;
	}
	return 0;
}

void fts_lmdb_db_write_abort(struct fts_lmdb_db *db)
{
	if (db->wtxn != NULL)
		fts_lmdb_db_drop_write(db, &db->wtxn);
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

/* LMDB 0.9's meta page, data format 1 (mdb.c: MDB_page's header, then
   MDB_meta), for fts_lmdb_db_compact_metas() */
#define FTS_LMDB_META_MAGIC 0xBEEFC0DE
#define FTS_LMDB_META_VERSION 1
#define FTS_LMDB_META_PAGE_FLAG 0x08
struct fts_lmdb_meta_tree {
	uint32_t pad;
	uint16_t flags, depth;
	size_t branch_pages, leaf_pages, overflow_pages, entries, root;
};
struct fts_lmdb_meta_page {
	size_t pgno;
	uint16_t pad, flags, lower, upper;
	uint32_t magic, version;
	void *address;
	size_t mapsize;
	struct fts_lmdb_meta_tree trees[2];
	size_t last_pgno;
	size_t txnid;
};

/* Runs in a child process: LMDB's compacting copy walks every page, and
   a damaged one would fault in the middle of it, beside the thread that
   writes the copy. The child fails alone, and the parent's map, stack
   and threads stay as they were. */
static void ATTR_NORETURN
fts_lmdb_db_copy_child(struct fts_lmdb_db *db, int fd, int status_fd)
{
	int rc;

	(void)signal(SIGSEGV, SIG_DFL);
	(void)signal(SIGBUS, SIG_DFL);
	rc = mdb_env_copyfd2(db->env, fd, MDB_CP_COMPACT);
	if (write(status_fd, &rc, sizeof(rc)) != sizeof(rc))
		_exit(1);
	_exit(0);
}

static int fts_lmdb_db_copy(struct fts_lmdb_db *db, int fd, const char *path,
			    const char **error_r)
{
	int status_fd[2], rc, status;
	ssize_t ret;
	pid_t pid;

	if (pipe(status_fd) < 0) {
		*error_r = t_strdup_printf("pipe() failed: %m");
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		*error_r = t_strdup_printf("fork() failed: %m");
		i_close_fd(&status_fd[0]);
		i_close_fd(&status_fd[1]);
		return -1;
	}
	if (pid == 0) {
		(void)close(status_fd[0]);
		fts_lmdb_db_copy_child(db, fd, status_fd[1]);
	}
	i_close_fd(&status_fd[1]);
	do {
		ret = read(status_fd[0], &rc, sizeof(rc));
	} while (ret < 0 && errno == EINTR);
	i_close_fd(&status_fd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR) ;

	if (ret != sizeof(rc)) {
		/* died before it could say: a fault on a damaged page */
		db->corrupted = TRUE;
		*error_r = t_strdup_printf("Copying %s to %s failed: the copying "
					   "process died", db->dir, path);
		return -1;
	}
	if (rc != 0) {
		*error_r = t_strconcat(
			fts_lmdb_db_error(db, "mdb_env_copyfd2", rc),
			fts_lmdb_db_space_note(db, rc), NULL);
		return -1;
	}
	return 0;
}

/* The copy's meta pages say transaction 0 (empty) and 1. Processes that
   have lock.mdb open keep it, and its last transaction id, which picks
   the meta page they read: both pages get the copied tree and that id,
   so that either one is right. Anything but the layout of LMDB 0.9 is
   refused, and the copy is dropped. */
static int fts_lmdb_db_compact_metas(struct fts_lmdb_db *db, int fd,
				     const char *path, size_t txnid,
				     const char **error_r)
{
	struct fts_lmdb_meta_page meta[2];
	unsigned int i;

	for (i = 0; i < 2; i++) {
		if (pread(fd, &meta[i], sizeof(meta[i]),
			  (off_t)i * db->page_size) != sizeof(meta[i])) {
			*error_r = t_strdup_printf("pread(%s) failed: %m",
						   path);
			return -1;
		}
		if (meta[i].pgno != i ||
		    (meta[i].flags & FTS_LMDB_META_PAGE_FLAG) == 0 ||
		    meta[i].magic != FTS_LMDB_META_MAGIC ||
		    meta[i].version != FTS_LMDB_META_VERSION ||
		    meta[i].txnid != i) {
			*error_r = t_strdup_printf("%s: meta page %u is not "
				"as LMDB 0.9 writes it, not using the copy",
				path, i);
			return -1;
		}
	}
	meta[1].txnid = txnid;
	meta[0] = meta[1];
	meta[0].pgno = 0;
	for (i = 0; i < 2; i++) {
		if (pwrite(fd, &meta[i], sizeof(meta[i]),
			   (off_t)i * db->page_size) != sizeof(meta[i])) {
			*error_r = t_strdup_printf("pwrite(%s) failed: %m%s",
				path, fts_lmdb_db_space_note(db, errno));
			return -1;
		}
	}
	return 0;
}

static int fts_lmdb_db_compact_locked(struct fts_lmdb_db *db,
				      const char *path, const char **error_r)
{
	const char *data_path = fts_lmdb_db_data_path(db);
	size_t txnid = mdb_txn_id(db->wtxn) - 1;
	int fd, ret = 0;

	/* what a compaction that was killed left is cut short here: no
	   other one runs while this process has the write lock */
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		*error_r = t_strdup_printf("open(%s) failed: %m%s", path,
					   fts_lmdb_db_space_note(db, errno));
		return -1;
	}
	if (fts_lmdb_db_copy(db, fd, path, error_r) < 0 ||
	    fts_lmdb_db_compact_metas(db, fd, path, txnid, error_r) < 0)
		ret = -1;
	else if (fdatasync(fd) < 0) {
		*error_r = t_strdup_printf("fdatasync(%s) failed: %m%s", path,
					   fts_lmdb_db_space_note(db, errno));
		ret = -1;
	} else if ((ret = fts_lmdb_db_check_files(db, error_r)) != 0) {
		/* a rebuild, which takes no write lock, replaced them: the
		   copy is of an index that is gone */
		if (ret > 0) {
			*error_r = t_strdup_printf("%s was replaced during "
						   "the copy", db->dir);
		}
		ret = -1;
	} else if (rename(path, data_path) < 0) {
		*error_r = t_strdup_printf("rename(%s, %s) failed: %m",
					   path, data_path);
		ret = -1;
	}
	i_close_fd(&fd);
	if (ret < 0)
		i_unlink_if_exists(path);
	return ret;
}

int fts_lmdb_db_compact(struct fts_lmdb_db *db, bool force,
			const char **error_r)
{
	const char *path;
	uint64_t pages;
	int fd, ret;

	/* a search in this process is still reading the file */
	if (db->rtxn_active)
		return 0;
	if (fts_lmdb_db_write_begin(db, error_r) < 0)
		return -1;
	/* write_begin counted the free list of the last commit: the write
	   lock keeps it the last one */
	pages = db->last_pgno + 1;
	if (db->free_pages == 0 ||
	    (!force && (db->free_pages < FTS_LMDB_DB_COMPACT_MIN_PAGES ||
			db->free_pages * 100 <
			pages * FTS_LMDB_DB_COMPACT_FREE_PERCENT))) {
		fts_lmdb_db_write_abort(db);
		return 0;
	}
	path = t_strconcat(fts_lmdb_db_data_path(db), ".compact", NULL);
	ret = fts_lmdb_db_compact_locked(db, path, error_r);
	if (ret == 0 && (fd = open(db->dir, O_RDONLY)) >= 0) {
		/* the rename itself, durable (it is safe either way) */
		(void)fsync(fd);
		i_close_fd(&fd);
	}
	/* The lock is released only now: any writer that waited for it
	   finds the new file (fts_lmdb_db_write_begin_once()). */
	fts_lmdb_db_write_abort(db);
	if (ret < 0)
		return -1;
	e_debug(db->event, "Compacted %s: %"PRIu64" of its %"PRIu64" pages "
		"were free", db->dir, db->free_pages, pages);
	fts_lmdb_db_close_env(db);
	if (fts_lmdb_db_open_env(db, error_r) < 0)
		return -1;
	return 1;
}

static MDB_txn *fts_lmdb_db_txn(struct fts_lmdb_db *db)
{
	if (db->wtxn != NULL)
		return db->wtxn;
	i_assert(db->rtxn_active);
	return db->rtxn;
}

/* One record of LMDB's free list: a transaction id, and the pages it
   freed as an IDL (their count, then the page numbers, descending). */
static bool fts_lmdb_db_free_record_valid(struct fts_lmdb_db *db,
					  const MDB_val *k, const MDB_val *v,
					  size_t last_pgno)
{
	size_t count, pgno, prev = (size_t)-1, i;

	if (!fts_lmdb_db_value_valid(db, k) || !fts_lmdb_db_value_valid(db, v) ||
	    k->mv_size != sizeof(size_t) || v->mv_size < sizeof(size_t) ||
	    v->mv_size % sizeof(size_t) != 0)
		return FALSE;
	memcpy(&count, v->mv_data, sizeof(count));
	if (count != v->mv_size / sizeof(size_t) - 1)
		return FALSE;
	for (i = 1; i <= count; i++) {
		memcpy(&pgno, CONST_PTR_OFFSET(v->mv_data, i * sizeof(pgno)),
		       sizeof(pgno));
		/* pages 0 and 1 are the meta pages */
		if (pgno < 2 || pgno > last_pgno || pgno >= prev)
			return FALSE;
		prev = pgno;
	}
	return TRUE;
}

bool fts_lmdb_db_stamp(struct fts_lmdb_db *db,
		       struct fts_lmdb_db_stamp *stamp_r)
{
	struct stat st;

	i_zero(stamp_r);
	if (!db->rtxn_active ||
	    stat(fts_lmdb_db_data_path(db), &st) < 0)
		return FALSE;
	stamp_r->dev = st.st_dev;
	stamp_r->ino = st.st_ino;
	stamp_r->size = st.st_size;
	stamp_r->ctime_sec = st.st_ctim.tv_sec;
	stamp_r->ctime_nsec = st.st_ctim.tv_nsec;
	stamp_r->txnid = mdb_txn_id(db->rtxn);
	return TRUE;
}

bool fts_lmdb_db_stamp_equal(const struct fts_lmdb_db_stamp *s1,
			     const struct fts_lmdb_db_stamp *s2)
{
	return s1->dev == s2->dev && s1->ino == s2->ino &&
		s1->size == s2->size && s1->ctime_sec == s2->ctime_sec &&
		s1->ctime_nsec == s2->ctime_nsec && s1->txnid == s2->txnid;
}

void fts_lmdb_db_set_trusted(struct fts_lmdb_db *db, enum fts_lmdb_dbi dbi,
			     bool trusted)
{
	if (trusted)
		db->trusted_dbis |= 1U << dbi;
	else
		db->trusted_dbis &= ~(1U << dbi);
}

int fts_lmdb_db_check_free(struct fts_lmdb_db *db, const char **error_r)
{
	MDB_envinfo info;
	MDB_cursor *cursor;
	MDB_val k, v;
	int rc;

	rc = mdb_env_info(db->env, &info);
	if (rc == 0) {
		/* dbi 0 is the free list, as mdb_stat -f reads it (LMDB
		   allows that in a read transaction only) */
		i_assert(db->rtxn_active);
		rc = mdb_cursor_open(db->rtxn, 0, &cursor);
	}
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_cursor_open", rc);
		return -1;
	}
	db->free_pages = 0;
	for (;;) {
		FTS_LMDB_GUARDED(rc, mdb_cursor_get(cursor, &k, &v, MDB_NEXT));
		if (rc != 0)
			break;
		if (!fts_lmdb_db_free_record_valid(db, &k, &v,
						   info.me_last_pgno)) {
			rc = MDB_CORRUPTED;
			break;
		}
		db->free_pages += v.mv_size / sizeof(size_t) - 1;
	}
	mdb_cursor_close(cursor);
	if (rc != 0 && rc != MDB_NOTFOUND) {
		*error_r = t_strdup_printf("free list: %s",
			fts_lmdb_db_error(db, "mdb_cursor_get", rc));
		return -1;
	}
	db->last_pgno = info.me_last_pgno;
	return 0;
}

static uint32_t fts_lmdb_db_checksum(const MDB_val *k,
				     const void *data, size_t size)
{
	return fts_lmdb_checksum(fts_lmdb_checksum(0, k->mv_data, k->mv_size),
				 data, size);
}

/* Checks a value read from dbi and leaves its checksum out of v. */
static bool fts_lmdb_db_value_checked(struct fts_lmdb_db *db,
				      enum fts_lmdb_dbi dbi,
				      const MDB_val *k, MDB_val *v)
{
	uint32_t crc;

	if (!fts_lmdb_db_value_valid(db, v))
		return FALSE;
	if (dbi == FTS_LMDB_DBI_META)
		return TRUE;
	if (v->mv_size < FTS_LMDB_DB_CHECKSUM_SIZE)
		return FALSE;
	v->mv_size -= FTS_LMDB_DB_CHECKSUM_SIZE;
	if ((db->trusted_dbis & (1U << dbi)) != 0)
		return TRUE;
	memcpy(&crc, CONST_PTR_OFFSET(v->mv_data, v->mv_size), sizeof(crc));
	return crc == fts_lmdb_db_checksum(k, v->mv_data, v->mv_size);
}

int fts_lmdb_db_get(struct fts_lmdb_db *db, enum fts_lmdb_dbi dbi,
		    const void *key, size_t key_size,
		    const void **data_r, size_t *size_r, const char **error_r)
{
	MDB_val k = { key_size, (void *)key }, v;
	int rc;

	FTS_LMDB_GUARDED(rc, mdb_get(fts_lmdb_db_txn(db), db->dbi[dbi], &k, &v));
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc == 0 && !fts_lmdb_db_value_checked(db, dbi, &k, &v))
		rc = MDB_CORRUPTED;
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_get", rc);
		return -1;
	}
	*data_r = v.mv_data;
	*size_r = v.mv_size;
	return 1;
}

int fts_lmdb_db_get_floor(struct fts_lmdb_db *db, enum fts_lmdb_dbi dbi,
			  const void *key, size_t key_size,
			  const void **key_r, size_t *key_size_r,
			  const void **data_r, size_t *size_r,
			  const char **error_r)
{
	MDB_cursor *cursor;
	MDB_val k = { key_size, (void *)key }, v;
	int rc;

	rc = mdb_cursor_open(fts_lmdb_db_txn(db), db->dbi[dbi], &cursor);
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_cursor_open", rc);
		return -1;
	}
	FTS_LMDB_GUARDED(rc, mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE));
	if (rc == MDB_NOTFOUND) {
		/* every key is smaller */
		FTS_LMDB_GUARDED(rc, mdb_cursor_get(cursor, &k, &v, MDB_LAST));
	} else if (rc == 0 && (k.mv_size != key_size ||
			       memcmp(k.mv_data, key, key_size) != 0)) {
		FTS_LMDB_GUARDED(rc, mdb_cursor_get(cursor, &k, &v, MDB_PREV));
	}
	mdb_cursor_close(cursor);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc == 0 && (!fts_lmdb_db_value_valid(db, &k) ||
			!fts_lmdb_db_value_checked(db, dbi, &k, &v)))
		rc = MDB_CORRUPTED;
	if (rc != 0) {
		*error_r = fts_lmdb_db_error(db, "mdb_cursor_get", rc);
		return -1;
	}
	*key_r = k.mv_data;
	*key_size_r = k.mv_size;
	*data_r = v.mv_data;
	*size_r = v.mv_size;
	return 1;
}

int fts_lmdb_db_put(struct fts_lmdb_db *db, enum fts_lmdb_dbi dbi,
		    const void *key, size_t key_size,
		    const void *data, size_t size, const char **error_r)
{
	MDB_val k = { key_size, (void *)key }, v = { size, (void *)data };
	uint32_t crc;
	int rc;

	i_assert(db->wtxn != NULL);
	if (dbi != FTS_LMDB_DBI_META) {
		/* copied first: data may point into the map, which the put
		   changes */
		if (db->put_buf == NULL)
			db->put_buf = buffer_create_dynamic(default_pool, 1024);
		buffer_set_used_size(db->put_buf, 0);
		buffer_append(db->put_buf, data, size);
		crc = fts_lmdb_db_checksum(&k, data, size);
		buffer_append(db->put_buf, &crc, sizeof(crc));
		v.mv_data = (void *)db->put_buf->data;
		v.mv_size = db->put_buf->used;
	}
	FTS_LMDB_GUARDED(rc, mdb_put(db->wtxn, db->dbi[dbi], &k, &v, 0));
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
	FTS_LMDB_GUARDED(rc, mdb_del(db->wtxn, db->dbi[dbi], &k, NULL));
	if (rc != 0 && rc != MDB_NOTFOUND) {
		*error_r = fts_lmdb_db_error(db, "mdb_del", rc);
		return -1;
	}
	return 0;
}

int fts_lmdb_db_del_prefix(struct fts_lmdb_db *db, enum fts_lmdb_dbi dbi,
			   const void *prefix, size_t prefix_size,
			   const char **error_r)
{
	struct fts_lmdb_db_iter *iter;
	const void *key, *data;
	size_t key_size, size;
	ARRAY(buffer_t *) keys;
	buffer_t *const *keyp;

	/* the keys first: a delete moves what the cursor stands on */
	t_array_init(&keys, 256);
	iter = fts_lmdb_db_iter_init(db, dbi, prefix, prefix_size);
	while (fts_lmdb_db_iter_next(iter, &key, &key_size, &data, &size)) {
		buffer_t *k = t_buffer_create(key_size);

		buffer_append(k, key, key_size);
		array_push_back(&keys, &k);
	}
	if (fts_lmdb_db_iter_deinit(&iter, error_r) < 0)
		return -1;
	array_foreach(&keys, keyp) {
		if (fts_lmdb_db_del(db, dbi, (*keyp)->data, (*keyp)->used,
				    error_r) < 0)
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
	iter->dbi = dbi;
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
		FTS_LMDB_GUARDED(rc, mdb_cursor_get(iter->cursor, &k, &v,
			iter->prefix_size == 0 ? MDB_FIRST : MDB_SET_RANGE));
	} else {
		FTS_LMDB_GUARDED(rc, mdb_cursor_get(iter->cursor, &k, &v,
						    MDB_NEXT));
	}
	if (rc == 0 && (!fts_lmdb_db_value_valid(iter->db, &k) ||
			!fts_lmdb_db_value_checked(iter->db, iter->dbi,
						   &k, &v)))
		rc = MDB_CORRUPTED;
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
