/* The backend object: where the index lives, its format, the mailbox
   records, and the maintenance that doveadm fts rescan/optimize ask for.
   Indexing is in fts-lmdb-update.c and searching in fts-lmdb-lookup.c. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "str.h"
#include "numpack.h"
#include "seq-range-array.h"
#include "mail-namespace.h"
#include "mail-storage-private.h"
#include "mailbox-list-iter.h"
#include "fts-lmdb-plugin.h"
#include "fts-lmdb-db.h"
#include "fts-lmdb-postings.h"
#include "fts-lmdb-blocks.h"
#include "fts-lmdb-backend.h"
#include "fts-lmdb-guids.h"

#define FTS_LMDB_INDEX_DIR_NAME "fts-lmdb"

ARRAY_DEFINE_TYPE(fts_lmdb_guid, guid_128_t);
static const char fts_lmdb_meta_format[] = "format";
static const char fts_lmdb_meta_next_box_id[] = "next_box_id";

static struct fts_backend *fts_lmdb_backend_alloc(void)
{
	struct fts_lmdb_backend *backend;
	pool_t pool;

	/* i_new(): when init fails, the fts plugin i_free()s it */
	pool = pool_alloconly_create("fts-lmdb backend", 1024);
	backend = i_new(struct fts_lmdb_backend, 1);
	backend->pool = pool;
	backend->backend = fts_backend_lmdb;
	return &backend->backend;
}

static int fts_lmdb_backend_init(struct fts_backend *_backend,
				 const char **error_r)
{
	struct fts_lmdb_backend *backend =
		container_of(_backend, struct fts_lmdb_backend, backend);
	struct mail_namespace *ns = _backend->ns;
	const char *error, *root;

	backend->event = event_create(ns->user->event);
	event_add_category(backend->event, &event_category_fts_lmdb);
	event_set_append_log_prefix(backend->event, "fts-lmdb: ");

	if (fts_lmdb_settings_read(ns->user, backend->pool, &backend->set,
				   &error) < 0) {
		*error_r = t_strdup_printf("fts-lmdb: %s", error);
		event_unref(&backend->event);
		pool_unref(&backend->pool);
		return -1;
	}
	if (backend->set.path != NULL)
		backend->dir = backend->set.path;
	else {
		root = mailbox_list_get_root_forced(ns->list,
						    MAILBOX_LIST_PATH_TYPE_INDEX);
		backend->dir = p_strconcat(backend->pool, root, "/",
					   FTS_LMDB_INDEX_DIR_NAME, NULL);
	}
	return 0;
}

static void fts_lmdb_backend_deinit(struct fts_backend *_backend)
{
	struct fts_lmdb_backend *backend =
		container_of(_backend, struct fts_lmdb_backend, backend);

	if (backend->db != NULL)
		fts_lmdb_db_unref(&backend->db);
	event_unref(&backend->event);
	pool_unref(&backend->pool);
	i_free(backend);
}

static int fts_lmdb_format_write(void *context, const char **error_r)
{
	struct fts_lmdb_backend *backend = context;

	return fts_lmdb_db_put(backend->db, FTS_LMDB_DBI_META,
			       fts_lmdb_meta_format,
			       strlen(fts_lmdb_meta_format),
			       backend->set.format,
			       strlen(backend->set.format), error_r);
}

static bool fts_lmdb_format_is_ours(struct fts_lmdb_backend *backend,
				    const void *data, size_t size)
{
	return size == strlen(backend->set.format) &&
		memcmp(data, backend->set.format, size) == 0;
}

/* The format is written first, into an empty environment: one that
   has anything else without it lost a page to garbage, and a write into
   that page would let LMDB copy it by its garbage offsets. Returns 0 if
   empty, -1 if not (damage). */
static int fts_lmdb_backend_check_empty(struct fts_lmdb_backend *backend,
					const char **error_r)
{
	static const enum fts_lmdb_dbi dbis[] = {
		FTS_LMDB_DBI_META, FTS_LMDB_DBI_BOXES
	};
	struct fts_lmdb_db_iter *iter;
	const void *key, *data;
	size_t key_size, size;
	unsigned int i;
	bool found;

	for (i = 0; i < N_ELEMENTS(dbis); i++) {
		iter = fts_lmdb_db_iter_init(backend->db, dbis[i], "", 0);
		found = fts_lmdb_db_iter_next(iter, &key, &key_size,
					      &data, &size);
		if (fts_lmdb_db_iter_deinit(&iter, error_r) < 0)
			return -1;
		if (found) {
			fts_lmdb_db_set_corrupted(backend->db);
			*error_r = t_strdup_printf("%s has records but no "
						   "format", backend->dir);
			return -1;
		}
	}
	return 0;
}

static int fts_lmdb_backend_check_format(struct fts_lmdb_backend *backend,
					 const char **error_r)
{
	const void *data;
	size_t size;
	int ret;

	if (fts_lmdb_db_read_renew(backend->db, error_r) < 0)
		return -1;
	ret = fts_lmdb_db_get(backend->db, FTS_LMDB_DBI_META,
			      fts_lmdb_meta_format,
			      strlen(fts_lmdb_meta_format), &data, &size,
			      error_r);
	if (ret == 0)
		ret = fts_lmdb_backend_check_empty(backend, error_r);
	if (ret > 0 && fts_lmdb_format_is_ours(backend, data, size)) {
		fts_lmdb_db_read_release(backend->db);
		return 0;
	}
	fts_lmdb_db_read_release(backend->db);
	if (ret < 0)
		return -1;
	if (ret > 0) {
		e_info(backend->event, "Index %s was built with other "
		       "settings (%.*s), rebuilding it", backend->dir,
		       (int)size, (const char *)data);
		if (fts_lmdb_db_rebuild(backend->db, error_r) < 0)
			return -1;
	}
	return fts_lmdb_backend_write(backend, fts_lmdb_format_write,
				      backend, error_r);
}

int fts_lmdb_backend_open(struct fts_lmdb_backend *backend,
			  const char **error_r)
{
	const char *error;

	if (backend->db != NULL)
		return 0;
	if (fts_lmdb_db_open(backend->dir, backend->set.map_mb,
			     backend->event, &backend->db, &error) < 0) {
		*error_r = error;
		return -1;
	}
	if (fts_lmdb_backend_check_format(backend, &error) < 0) {
		if (fts_lmdb_db_is_corrupted(backend->db)) {
			e_error(backend->event,
				"Index %s damaged, rebuilding it: %s",
				backend->dir, error);
			if (fts_lmdb_db_rebuild(backend->db, &error) == 0 &&
			    fts_lmdb_backend_check_format(backend,
							  &error) == 0)
				return 0;
		}
		*error_r = error;
		fts_lmdb_db_unref(&backend->db);
		return -1;
	}
	return 0;
}

void fts_lmdb_backend_damaged(struct fts_lmdb_backend *backend,
			      const char *error)
{
	e_error(backend->event, "Index %s damaged, searching without it "
		"and rebuilding it: %s", backend->dir, error);
	backend->rebuild_pending = TRUE;
	backend->blocks_checked = FALSE;
}

static int fts_lmdb_backend_rebuild(struct fts_lmdb_backend *backend)
{
	const char *error;

	backend->rebuild_pending = FALSE;
	if (fts_lmdb_db_rebuild(backend->db, &error) < 0 ||
	    fts_lmdb_backend_check_format(backend, &error) < 0) {
		e_error(backend->event, "Rebuilding %s failed: %s",
			backend->dir, error);
		fts_lmdb_db_unref(&backend->db);
		return -1;
	}
	return 0;
}

/* In the write transaction: the environment may have been replaced
   since this process checked its format (removed by an admin, rebuilt by
   another process), and it is written only in this process's format. */
static int fts_lmdb_backend_write_format(struct fts_lmdb_backend *backend,
					 const char **error_r)
{
	const void *data;
	size_t size;
	int ret;

	ret = fts_lmdb_db_get(backend->db, FTS_LMDB_DBI_META,
			      fts_lmdb_meta_format,
			      strlen(fts_lmdb_meta_format), &data, &size,
			      error_r);
	if (ret < 0)
		return -1;
	if (ret > 0) {
		if (fts_lmdb_format_is_ours(backend, data, size))
			return 0;
		*error_r = t_strdup_printf("%s was rebuilt with other "
					   "settings (%.*s) by another process",
					   backend->dir, (int)size,
					   (const char *)data);
		return -1;
	}
	if (fts_lmdb_backend_check_empty(backend, error_r) < 0)
		return -1;
	return fts_lmdb_format_write(backend, error_r);
}

int fts_lmdb_backend_write(struct fts_lmdb_backend *backend,
			   int (*fn)(void *context, const char **error_r),
			   void *context, const char **error_r)
{
	unsigned int attempt;
	int ret;

	for (attempt = 0;; attempt++) {
		if (fts_lmdb_db_write_begin(backend->db, error_r) < 0)
			return -1;
		ret = fts_lmdb_backend_write_format(backend, error_r);
		if (ret == 0)
			ret = fn(context, error_r);
		if (ret < 0)
			fts_lmdb_db_write_abort(backend->db);
		else
			ret = fts_lmdb_db_write_commit(backend->db, error_r);
		if (ret == 0)
			return 0;
		if (!fts_lmdb_db_map_full(backend->db) || attempt == 20)
			return -1;
		if (fts_lmdb_db_grow(backend->db, error_r) < 0)
			return -1;
	}
}

void fts_lmdb_backend_compact(struct fts_lmdb_backend *backend, bool force)
{
	const char *error;

	if (backend->db == NULL || backend->rebuild_pending)
		return;
	if (fts_lmdb_db_compact(backend->db, force, &error) < 0) {
		if (fts_lmdb_db_is_corrupted(backend->db))
			fts_lmdb_backend_damaged(backend, error);
		else {
			e_warning(backend->event, "Compacting %s failed, "
				  "it stays as it was: %s", backend->dir,
				  error);
		}
	}
}

int fts_lmdb_box_guid(struct mailbox *box, guid_128_t guid_r)
{
	struct mailbox_metadata metadata;

	if (mailbox_get_metadata(box, MAILBOX_METADATA_GUID, &metadata) < 0)
		return -1;
	memcpy(guid_r, metadata.guid, GUID_128_SIZE);
	return 0;
}

bool fts_lmdb_mail_guid_hash(struct mail *mail,
			     uint8_t hash_r[FTS_LMDB_GUID_HASH_SIZE])
{
	const char *guid;
	guid_128_t hash;

	if (mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0 ||
	    guid[0] == '\0')
		return FALSE;
	mail_generate_guid_128_hash(guid, hash);
	memcpy(hash_r, hash, FTS_LMDB_GUID_HASH_SIZE);
	return TRUE;
}

int fts_lmdb_box_record_get(struct fts_lmdb_backend *backend,
			    const guid_128_t guid,
			    struct fts_lmdb_box_record *rec_r,
			    const char **error_r)
{
	const void *data;
	size_t size;
	int ret;

	ret = fts_lmdb_db_get(backend->db, FTS_LMDB_DBI_BOXES, guid,
			      GUID_128_SIZE, &data, &size, error_r);
	if (ret <= 0)
		return ret;
	if (size != sizeof(*rec_r)) {
		*error_r = t_strdup_printf("mailbox record of %zu bytes", size);
		return -1;
	}
	memcpy(rec_r, data, sizeof(*rec_r));
	return 1;
}

int fts_lmdb_box_record_put(struct fts_lmdb_backend *backend,
			    const guid_128_t guid,
			    const struct fts_lmdb_box_record *rec,
			    const char **error_r)
{
	struct fts_lmdb_box_record new_rec = *rec;
	const void *data;
	size_t size;
	uint32_t next_id;
	int ret;

	if (new_rec.box_id == 0) {
		ret = fts_lmdb_db_get(backend->db, FTS_LMDB_DBI_META,
				      fts_lmdb_meta_next_box_id,
				      strlen(fts_lmdb_meta_next_box_id),
				      &data, &size, error_r);
		if (ret < 0)
			return -1;
		next_id = 1;
		if (ret > 0 && size == sizeof(next_id))
			memcpy(&next_id, data, sizeof(next_id));
		new_rec.box_id = next_id++;
		if (fts_lmdb_db_put(backend->db, FTS_LMDB_DBI_META,
				    fts_lmdb_meta_next_box_id,
				    strlen(fts_lmdb_meta_next_box_id),
				    &next_id, sizeof(next_id), error_r) < 0)
			return -1;
	}
	return fts_lmdb_db_put(backend->db, FTS_LMDB_DBI_BOXES, guid,
			       GUID_128_SIZE, &new_rec, sizeof(new_rec),
			       error_r);
}

void fts_lmdb_token_key(buffer_t *key, uint32_t box_id,
			const void *token, size_t size)
{
	/* numpack is prefix-free, so one box's keys are one range, and
	   the first 127 boxes cost one byte per key */
	buffer_set_used_size(key, 0);
	numpack_encode(key, box_id);
	buffer_append(key, token, size);
}

void fts_lmdb_uid_key(buffer_t *key, uint32_t box_id, uint32_t uid)
{
	uint8_t uid_be[4];

	cpu32_to_be_unaligned(uid, uid_be);
	fts_lmdb_token_key(key, box_id, uid_be, sizeof(uid_be));
}

/* Deletes the keys of dbi that start with the box id. */
static int fts_lmdb_box_delete_keys(struct fts_lmdb_backend *backend,
				    enum fts_lmdb_dbi dbi, uint32_t box_id,
				    const char **error_r)
{
	buffer_t *prefix = t_buffer_create(8);

	fts_lmdb_token_key(prefix, box_id, "", 0);
	return fts_lmdb_db_del_prefix(backend->db, dbi, prefix->data,
				      prefix->used, error_r);
}

int fts_lmdb_box_clear(struct fts_lmdb_backend *backend,
		       struct fts_lmdb_box_record *rec, const char **error_r)
{
	int ret = 0;

	if (fts_lmdb_box_delete_keys(backend, FTS_LMDB_DBI_BLOCKS,
				     rec->box_id, error_r) < 0 ||
	    fts_lmdb_box_delete_keys(backend, FTS_LMDB_DBI_TOKENS,
				     rec->box_id, error_r) < 0 ||
	    fts_lmdb_box_delete_keys(backend, FTS_LMDB_DBI_PARTS,
				     rec->box_id, error_r) < 0 ||
	    fts_lmdb_box_delete_keys(backend, FTS_LMDB_DBI_GUIDS,
				     rec->box_id, error_r) < 0 ||
	    fts_lmdb_box_delete_keys(backend, FTS_LMDB_DBI_GRAMS,
				     rec->box_id, error_r) < 0)
		ret = -1;
	rec->last_uid = 0;
	rec->doc_count = 0;
	rec->expunged_count = 0;
	rec->block_count = 0;
	rec->unindexed_count = 0;
	rec->long_count = 0;
	rec->tombstone_count = 0;
	return ret;
}

uint32_t *fts_lmdb_box_record_list_count(struct fts_lmdb_box_record *rec,
					 const void *token, size_t size)
{
	if (size == strlen(FTS_LMDB_KEY_UNINDEXED) &&
	    memcmp(token, FTS_LMDB_KEY_UNINDEXED, size) == 0)
		return &rec->unindexed_count;
	if (size == strlen(FTS_LMDB_KEY_LONG) &&
	    memcmp(token, FTS_LMDB_KEY_LONG, size) == 0)
		return &rec->long_count;
	if (size == strlen(FTS_LMDB_KEY_EXPUNGED) &&
	    memcmp(token, FTS_LMDB_KEY_EXPUNGED, size) == 0)
		return &rec->expunged_count;
	return NULL;
}

int fts_lmdb_box_list_check(struct fts_lmdb_db *db, uint32_t expected,
			    uint32_t count, const char **error_r)
{
	if (count == expected)
		return 0;
	fts_lmdb_db_set_corrupted(db);
	*error_r = t_strdup_printf("a list of %u messages holds %u",
				   expected, count);
	return -1;
}

static int
fts_lmdb_box_expunged(struct fts_lmdb_backend *backend,
		      const struct fts_lmdb_box_record *rec,
		      ARRAY_TYPE(seq_range) *expunged, const char **error_r)
{
	struct fts_lmdb_postings_iter piter;
	buffer_t *key = t_buffer_create(8);
	const void *data;
	size_t size;
	uint32_t uid, mask, count = 0;
	int ret;

	fts_lmdb_token_key(key, rec->box_id, FTS_LMDB_KEY_EXPUNGED,
			   strlen(FTS_LMDB_KEY_EXPUNGED));
	ret = fts_lmdb_db_get(backend->db, FTS_LMDB_DBI_TOKENS, key->data,
			      key->used, &data, &size, error_r);
	if (ret < 0)
		return -1;
	if (ret > 0) {
		fts_lmdb_postings_iter_init(&piter, data, size);
		while (fts_lmdb_postings_iter_next(&piter, &uid, &mask)) {
			seq_range_array_add(expunged, uid);
			count++;
		}
		if (piter.failed) {
			*error_r = "damaged expunge list";
			return -1;
		}
	}
	if (fts_lmdb_box_list_check(backend->db, rec->expunged_count, count,
				    error_r) < 0)
		return -1;
	return ret;
}

int fts_lmdb_box_purge(struct fts_lmdb_backend *backend,
		       struct fts_lmdb_box_record *rec, const char **error_r)
{
	struct fts_lmdb_db_iter *iter;
	struct fts_lmdb_postings_iter piter;
	struct fts_lmdb_posting_header hdr;
	ARRAY_TYPE(seq_range) expunged;
	buffer_t *prefix, *value, *key;
	const void *k, *data;
	size_t key_size, size;
	struct fts_lmdb_box_record old_rec = *rec, seen;
	uint32_t uid, mask;
	uint32_t *seen_count, *rec_count;
	unsigned int removed_docs = 0;
	int ret;

	i_zero(&seen);
	t_array_init(&expunged, 64);
	ret = fts_lmdb_box_expunged(backend, rec, &expunged, error_r);
	if (ret < 0)
		return -1;
	if (array_count(&expunged) > 0 &&
	    fts_lmdb_blocks_purge(backend->db, rec->box_id, rec->block_count,
				  &expunged, error_r) < 0)
		return -1;

	/* the special lists, which sort before every token */
	prefix = t_buffer_create(8);
	value = t_buffer_create(256);
	key = t_buffer_create(FTS_LMDB_TOKEN_MAX + 8);
	fts_lmdb_token_key(prefix, rec->box_id, "", 0);
	iter = fts_lmdb_db_iter_init(backend->db, FTS_LMDB_DBI_TOKENS,
				     prefix->data, prefix->used);
	/* LMDB keeps the cursor valid across puts and deletes of the
	   same write transaction */
	while (fts_lmdb_db_iter_next(iter, &k, &key_size, &data, &size)) {
		const unsigned char *token;
		size_t token_size = key_size - prefix->used;
		bool is_all;

		/* a put or delete may move the page k points into */
		buffer_set_used_size(key, 0);
		buffer_append(key, k, key_size);
		token = CONST_PTR_OFFSET(key->data, prefix->used);
		if (token_size == 0 || token[0] != '\n')
			break;
		if (token_size == strlen(FTS_LMDB_KEY_EXPUNGED) &&
		    memcmp(token, FTS_LMDB_KEY_EXPUNGED, token_size) == 0) {
			if (fts_lmdb_db_del(backend->db, FTS_LMDB_DBI_TOKENS,
					    key->data, key->used,
					    error_r) < 0) {
				ret = -1;
				break;
			}
			continue;
		}
		is_all = token_size == strlen(FTS_LMDB_KEY_ALL) &&
			memcmp(token, FTS_LMDB_KEY_ALL, token_size) == 0;
		seen_count = fts_lmdb_box_record_list_count(&seen, token,
							    token_size);
		rec_count = fts_lmdb_box_record_list_count(rec, token,
							   token_size);
		if (seen_count != NULL) {
			if (fts_lmdb_postings_header(data, size, &hdr) < 0) {
				*error_r = "damaged posting list";
				ret = -1;
				break;
			}
			*seen_count = hdr.count;
		}
		if (array_count(&expunged) == 0)
			continue;
		i_zero(&hdr);
		buffer_set_used_size(value, 0);
		fts_lmdb_postings_iter_init(&piter, data, size);
		while (fts_lmdb_postings_iter_next(&piter, &uid, &mask)) {
			if (!seq_range_exists(&expunged, uid))
				fts_lmdb_postings_append(value, &hdr, uid,
							 mask);
			else if (is_all)
				removed_docs++;
		}
		if (piter.failed) {
			*error_r = "damaged posting list";
			ret = -1;
			break;
		}
		if (rec_count != NULL)
			*rec_count = hdr.count;
		if (hdr.count == 0) {
			if (fts_lmdb_db_del(backend->db, FTS_LMDB_DBI_TOKENS,
					    key->data, key->used,
					    error_r) < 0) {
				ret = -1;
				break;
			}
			continue;
		}
		if (value->used != size &&
		    fts_lmdb_db_put(backend->db, FTS_LMDB_DBI_TOKENS,
				    key->data, key->used, value->data,
				    value->used, error_r) < 0) {
			ret = -1;
			break;
		}
	}
	if (fts_lmdb_db_iter_deinit(&iter, error_r) < 0)
		ret = -1;
	if (ret < 0)
		return -1;
	if (fts_lmdb_box_list_check(backend->db, old_rec.unindexed_count,
				    seen.unindexed_count, error_r) < 0 ||
	    fts_lmdb_box_list_check(backend->db, old_rec.long_count,
				    seen.long_count, error_r) < 0)
		return -1;
	rec->doc_count = rec->doc_count > removed_docs ?
		rec->doc_count - removed_docs : 0;
	rec->expunged_count = 0;
	return 0;
}

/* How far down from the newest message the index covers a check looks
   for one the index has a GUID of (the others came after a rebuild
   that skipped them, or lost their tombstone to pruning). */
#define FTS_LMDB_COPY_CHECK_MAX 32

/* A mailbox restored or synced from a copy that had diverged when the
   index was taken has the same GUID and UIDVALIDITY but other mail under
   the UIDs both copies assigned since. Compares the newest message this
   session's view and the index both know, with the hash the index kept
   of it, expunged since or not (fts-lmdb-guids.h): a view that lags
   behind an expunge holds the same message. The view may lag behind
   what other processes indexed, so UIDs beyond it prove nothing and are
   not looked at. Runs in the read transaction, never inside a mailbox
   sync (the fts plugin asks for the last UID only when searching or
   indexing). Returns 1 if the index is of this mail, 0 if not, -1 on
   error. */
static int
fts_lmdb_box_check_copy(struct fts_lmdb_backend *backend, struct mailbox *box,
			const struct fts_lmdb_box_record *rec,
			uint32_t *other_uid_r, const char **error_r)
{
	struct mailbox_transaction_context *trans;
	struct mail *mail;
	uint8_t hash[FTS_LMDB_GUID_HASH_SIZE];
	uint8_t known[FTS_LMDB_GUID_HASH_SIZE];
	uint32_t seq, seq1, seq2;
	unsigned int checked = 0;
	int ret = 1;

	mailbox_get_seq_range(box, 1, rec->last_uid, &seq1, &seq2);
	if (seq2 == 0)
		return 1;
	trans = mailbox_transaction_begin(box, 0, "fts-lmdb copy check");
	mail = mail_alloc(trans, 0, NULL);
	for (seq = seq2; seq >= seq1 && checked < FTS_LMDB_COPY_CHECK_MAX;
	     seq--, checked++) {
		mail_set_seq(mail, seq);
		ret = fts_lmdb_guids_get(backend->db, rec->box_id, mail->uid,
					 known, error_r);
		if (ret < 0)
			break;
		/* nothing kept of it, or no GUID to compare: try the next
		   older one */
		if (ret == 0 || !fts_lmdb_mail_guid_hash(mail, hash)) {
			ret = 1;
			continue;
		}
		if (memcmp(hash, known, sizeof(hash)) != 0) {
			*other_uid_r = mail->uid;
			ret = 0;
		}
		break;
	}
	mail_free(&mail);
	mailbox_transaction_rollback(&trans);
	return ret;
}

struct fts_lmdb_box_reset_context {
	struct fts_lmdb_backend *backend;
	const uint8_t *guid;
};

static int fts_lmdb_box_reset_txn(void *context, const char **error_r)
{
	struct fts_lmdb_box_reset_context *ctx = context;
	struct fts_lmdb_box_record rec;
	int ret;

	ret = fts_lmdb_box_record_get(ctx->backend, ctx->guid, &rec, error_r);
	if (ret <= 0)
		return ret;
	if (fts_lmdb_box_clear(ctx->backend, &rec, error_r) < 0)
		return -1;
	return fts_lmdb_box_record_put(ctx->backend, ctx->guid, &rec, error_r);
}

static int fts_lmdb_backend_get_last_uid(struct fts_backend *_backend,
					 struct mailbox *box,
					 uint32_t *last_uid_r)
{
	struct fts_lmdb_backend *backend =
		container_of(_backend, struct fts_lmdb_backend, backend);
	struct fts_lmdb_box_record rec;
	struct fts_lmdb_box_reset_context reset_ctx;
	struct mailbox_status status;
	guid_128_t guid;
	const char *error;
	uint32_t other_uid = 0;
	bool other_copy = FALSE;
	int ret;

	*last_uid_r = 0;
	if (fts_lmdb_box_guid(box, guid) < 0)
		return -1;
	mailbox_get_open_status(box, STATUS_UIDVALIDITY | STATUS_UIDNEXT,
				&status);
	if (fts_lmdb_backend_open(backend, &error) < 0) {
		/* Say everything is indexed, so that nothing waits for an
		   index that can't be written; lookups then answer "maybe"
		   for every message and Dovecot reads them all. */
		e_error(backend->event, "%s - searching without the index",
			error);
		*last_uid_r = status.uidnext - 1;
		return 0;
	}
	if (fts_lmdb_db_read_renew(backend->db, &error) < 0) {
		if (fts_lmdb_db_is_corrupted(backend->db)) {
			fts_lmdb_backend_damaged(backend, error);
			if (fts_lmdb_backend_rebuild(backend) == 0)
				return 0;
		} else {
			/* As when opening fails: failing here would fail the
			   SEARCH (fts_enforced). The next search opens the
			   environment again. */
			e_error(backend->event,
				"%s - searching without the index", error);
			fts_lmdb_db_unref(&backend->db);
		}
		*last_uid_r = status.uidnext - 1;
		return 0;
	}
	ret = fts_lmdb_box_record_get(backend, guid, &rec, &error);
	if (ret > 0 && rec.uid_validity == status.uidvalidity &&
	    rec.last_uid > 0) {
		ret = fts_lmdb_box_check_copy(backend, box, &rec, &other_uid,
					      &error);
		if (ret == 0) {
			other_copy = TRUE;
			ret = 1;
		}
	}
	fts_lmdb_db_read_release(backend->db);
	if (ret < 0) {
		/* the mail is all there: index it again */
		fts_lmdb_backend_damaged(backend, error);
		if (fts_lmdb_backend_rebuild(backend) == 0)
			return 0;
		*last_uid_r = status.uidnext - 1;
		return 0;
	}
	if (other_copy) {
		e_warning(backend->event, "Mailbox %s: UID %u is another "
			  "message than the index has under it (the mailbox "
			  "was restored or synced from a copy that had "
			  "diverged): indexing the mailbox again",
			  mailbox_get_vname(box), other_uid);
		reset_ctx.backend = backend;
		reset_ctx.guid = guid;
		if (fts_lmdb_backend_write(backend, fts_lmdb_box_reset_txn,
					   &reset_ctx, &error) < 0) {
			/* the index is wrong for this mailbox and can't be
			   changed: not using it is slow, not wrong */
			e_error(backend->event,
				"%s - searching without the index", error);
			fts_lmdb_db_unref(&backend->db);
			*last_uid_r = status.uidnext - 1;
		}
		return 0;
	}
	if (ret > 0 && rec.uid_validity == status.uidvalidity)
		*last_uid_r = rec.last_uid;
	return 0;
}

static int fts_lmdb_backend_refresh(struct fts_backend *_backend)
{
	struct fts_lmdb_backend *backend =
		container_of(_backend, struct fts_lmdb_backend, backend);
	const char *error;

	/* without the index, lookups answer "maybe" for everything */
	if (fts_lmdb_backend_open(backend, &error) < 0 ||
	    fts_lmdb_db_read_renew(backend->db, &error) < 0)
		e_error(backend->event, "%s", error);
	return 0;
}

static void fts_lmdb_backend_lookup_done(struct fts_backend *_backend)
{
	struct fts_lmdb_backend *backend =
		container_of(_backend, struct fts_lmdb_backend, backend);

	if (backend->db == NULL)
		return;
	fts_lmdb_db_read_release(backend->db);
	if (backend->rebuild_pending)
		(void)fts_lmdb_backend_rebuild(backend);
}

struct fts_lmdb_maintain_ctx {
	struct fts_lmdb_backend *backend;
	/* GUIDs of mailboxes that still exist; not created: keep all */
	ARRAY_TYPE(fts_lmdb_guid) existing;
};

static bool fts_lmdb_guid_exists(const ARRAY_TYPE(fts_lmdb_guid) *guids,
				 const guid_128_t guid)
{
	const guid_128_t *g;

	array_foreach(guids, g) {
		if (guid_128_equals(*g, guid))
			return TRUE;
	}
	return FALSE;
}

static int fts_lmdb_maintain(void *context, const char **error_r)
{
	struct fts_lmdb_maintain_ctx *ctx = context;
	struct fts_lmdb_backend *backend = ctx->backend;
	struct fts_lmdb_db_iter *iter;
	struct fts_lmdb_box_record rec;
	ARRAY(guid_128_t) guids;
	const guid_128_t *guidp;
	const void *key, *data;
	size_t key_size, size;

	t_array_init(&guids, 16);
	iter = fts_lmdb_db_iter_init(backend->db, FTS_LMDB_DBI_BOXES, "", 0);
	while (fts_lmdb_db_iter_next(iter, &key, &key_size, &data, &size)) {
		if (key_size == GUID_128_SIZE)
			array_push_back(&guids, (const guid_128_t *)key);
	}
	if (fts_lmdb_db_iter_deinit(&iter, error_r) < 0)
		return -1;

	array_foreach(&guids, guidp) {
		if (fts_lmdb_box_record_get(backend, *guidp, &rec,
					    error_r) <= 0)
			return -1;
		if (array_is_created(&ctx->existing) &&
		    !fts_lmdb_guid_exists(&ctx->existing, *guidp)) {
			/* the mailbox is gone */
			if (fts_lmdb_box_clear(backend, &rec, error_r) < 0 ||
			    fts_lmdb_db_del(backend->db, FTS_LMDB_DBI_BOXES,
					    *guidp, GUID_128_SIZE,
					    error_r) < 0)
				return -1;
			continue;
		}
		if (rec.expunged_count == 0)
			continue;
		if (fts_lmdb_box_purge(backend, &rec, error_r) < 0 ||
		    fts_lmdb_box_record_put(backend, *guidp, &rec,
					    error_r) < 0)
			return -1;
	}
	return 0;
}

static int fts_lmdb_collect_guids(struct fts_lmdb_backend *backend,
				  struct fts_lmdb_maintain_ctx *ctx)
{
	struct mailbox_list_iterate_context *iter;
	const struct mailbox_info *info;
	struct mailbox *box;
	guid_128_t guid;
	int ret = 0;

	t_array_init(&ctx->existing, 16);
	iter = mailbox_list_iter_init(backend->backend.ns->list, "*",
				      MAILBOX_LIST_ITER_RETURN_NO_FLAGS);
	while ((info = mailbox_list_iter_next(iter)) != NULL) {
		if ((info->flags & (MAILBOX_NOSELECT |
				    MAILBOX_NONEXISTENT)) != 0)
			continue;
		box = mailbox_alloc(backend->backend.ns->list, info->vname, 0);
		if (fts_lmdb_box_guid(box, guid) == 0)
			array_push_back(&ctx->existing, &guid);
		else {
			ret = -1;
		}
		mailbox_free(&box);
	}
	if (mailbox_list_iter_deinit(&iter) < 0)
		ret = -1;
	return ret;
}

static int fts_lmdb_backend_maintain(struct fts_lmdb_backend *backend,
				     bool rescan)
{
	struct fts_lmdb_maintain_ctx ctx;
	const char *error;
	int ret;

	if (fts_lmdb_backend_open(backend, &error) < 0) {
		/* Nothing to maintain. Failing would also fail a mailbox
		   sync (force-resync optimizes). */
		e_error(backend->event, "%s", error);
		return 0;
	}
	i_zero(&ctx);
	ctx.backend = backend;
	T_BEGIN {
		/* if a mailbox can't be looked at, forget nothing */
		if (rescan && fts_lmdb_collect_guids(backend, &ctx) < 0)
			i_zero(&ctx.existing);
		ret = fts_lmdb_backend_write(backend, fts_lmdb_maintain, &ctx,
					     &error);
		if (ret < 0) {
			e_error(backend->event, "%s of %s failed: %s",
				rescan ? "Rescan" : "Optimize", backend->dir,
				error);
		} else if (!rescan) {
			fts_lmdb_backend_compact(backend, TRUE);
		}
	} T_END;
	return ret;
}

static int fts_lmdb_backend_rescan(struct fts_backend *_backend)
{
	struct fts_lmdb_backend *backend =
		container_of(_backend, struct fts_lmdb_backend, backend);

	/* Messages are indexed in UID order and each batch commits with
	   the last UID it holds, so what is missing is what comes after
	   it: the next search or doveadm index adds it. What rescan can
	   find is mailboxes that are gone and expunges to drop. */
	return fts_lmdb_backend_maintain(backend, TRUE);
}

static int fts_lmdb_backend_optimize(struct fts_backend *_backend)
{
	struct fts_lmdb_backend *backend =
		container_of(_backend, struct fts_lmdb_backend, backend);

	return fts_lmdb_backend_maintain(backend, FALSE);
}

struct fts_backend fts_backend_lmdb = {
	.name = "lmdb",
	.flags = 0,
	.v = {
		fts_lmdb_backend_alloc,
		fts_lmdb_backend_init,
		fts_lmdb_backend_deinit,
		fts_lmdb_backend_get_last_uid,
		fts_lmdb_update_init,
		fts_lmdb_update_deinit,
		fts_lmdb_update_set_mailbox,
		fts_lmdb_update_expunge,
		fts_lmdb_update_set_build_key,
		fts_lmdb_update_unset_build_key,
		fts_lmdb_update_build_more,
		fts_lmdb_backend_refresh,
		fts_lmdb_backend_rescan,
		fts_lmdb_backend_optimize,
		fts_backend_default_can_lookup,
		fts_lmdb_lookup,
		fts_lmdb_lookup_multi,
		fts_lmdb_backend_lookup_done,
	}
};
