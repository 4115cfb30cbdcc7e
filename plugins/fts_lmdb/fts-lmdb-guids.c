/* A guids value: the hash, then for a tombstone one byte
   FTS_LMDB_GUIDS_EXPUNGED. The key is the box id and the UID, big
   endian, so a mailbox's values come in UID order. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "fts-lmdb-db.h"
#include "fts-lmdb-backend.h"
#include "fts-lmdb-guids.h"

#define FTS_LMDB_GUIDS_EXPUNGED 0x01

static bool fts_lmdb_guids_is_tombstone(const void *data, size_t size)
{
	return size == FTS_LMDB_GUID_HASH_SIZE + 1 &&
		((const uint8_t *)data)[FTS_LMDB_GUID_HASH_SIZE] ==
		FTS_LMDB_GUIDS_EXPUNGED;
}

static int fts_lmdb_guids_check(const void *data, size_t size,
				uint32_t uid, const char **error_r)
{
	if (size == FTS_LMDB_GUID_HASH_SIZE ||
	    fts_lmdb_guids_is_tombstone(data, size))
		return 0;
	*error_r = t_strdup_printf("GUID record of UID %u has %zu bytes",
				   uid, size);
	return -1;
}

/* uid's value into data_r (1), 0 if there is none; key is left as
   uid's key. */
static int fts_lmdb_guids_read(struct fts_lmdb_db *db, buffer_t *key,
			       uint32_t box_id, uint32_t uid,
			       const void **data_r, size_t *size_r,
			       const char **error_r)
{
	int ret;

	fts_lmdb_uid_key(key, box_id, uid);
	ret = fts_lmdb_db_get(db, FTS_LMDB_DBI_GUIDS, key->data, key->used,
			      data_r, size_r, error_r);
	if (ret <= 0)
		return ret;
	if (fts_lmdb_guids_check(*data_r, *size_r, uid, error_r) < 0)
		return -1;
	return 1;
}

int fts_lmdb_guids_get(struct fts_lmdb_db *db, uint32_t box_id, uint32_t uid,
		       uint8_t hash_r[FTS_LMDB_GUID_HASH_SIZE],
		       const char **error_r)
{
	const void *data;
	size_t size;
	int ret;

	ret = fts_lmdb_guids_read(db, t_buffer_create(16), box_id, uid,
				  &data, &size, error_r);
	if (ret > 0)
		memcpy(hash_r, data, FTS_LMDB_GUID_HASH_SIZE);
	return ret;
}

int fts_lmdb_guids_put(struct fts_lmdb_db *db, uint32_t box_id, uint32_t uid,
		       const uint8_t hash[FTS_LMDB_GUID_HASH_SIZE],
		       const char **error_r)
{
	buffer_t *key = t_buffer_create(16);

	fts_lmdb_uid_key(key, box_id, uid);
	return fts_lmdb_db_put(db, FTS_LMDB_DBI_GUIDS, key->data, key->used,
			       hash, FTS_LMDB_GUID_HASH_SIZE, error_r);
}

int fts_lmdb_guids_expunge(struct fts_lmdb_db *db,
			   struct fts_lmdb_box_record *rec, uint32_t uid,
			   const char **error_r)
{
	uint8_t value[FTS_LMDB_GUID_HASH_SIZE + 1];
	buffer_t *key = t_buffer_create(16);
	const void *data;
	size_t size;
	int ret;

	ret = fts_lmdb_guids_read(db, key, rec->box_id, uid, &data, &size,
				  error_r);
	if (ret <= 0 || size != FTS_LMDB_GUID_HASH_SIZE)
		return ret < 0 ? -1 : 0;
	memcpy(value, data, FTS_LMDB_GUID_HASH_SIZE);
	value[FTS_LMDB_GUID_HASH_SIZE] = FTS_LMDB_GUIDS_EXPUNGED;
	if (fts_lmdb_db_put(db, FTS_LMDB_DBI_GUIDS, key->data, key->used,
			    value, sizeof(value), error_r) < 0)
		return -1;
	rec->tombstone_count++;
	return 0;
}

static uint32_t fts_lmdb_guids_tombstones_max(const struct fts_lmdb_box_record *rec)
{
	return I_MAX(rec->doc_count, FTS_LMDB_GUIDS_TOMBSTONES_MIN);
}

int fts_lmdb_guids_prune(struct fts_lmdb_db *db,
			 struct fts_lmdb_box_record *rec,
			 const char **error_r)
{
	struct fts_lmdb_db_iter *iter;
	ARRAY(uint32_t) drop;
	buffer_t *prefix, *key_buf;
	const uint32_t *uidp;
	const void *key, *data;
	size_t key_size, size;
	uint32_t max = fts_lmdb_guids_tombstones_max(rec), need, uid;
	bool all, bad_key = FALSE;

	if (rec->tombstone_count <= max)
		return 0;
	need = rec->tombstone_count - max / 2;
	/* the lowest UIDs' first: a copy's check looks at the newest
	   messages, and tombstones far below them are the least use */
	prefix = t_buffer_create(16);
	fts_lmdb_token_key(prefix, rec->box_id, "", 0);
	t_array_init(&drop, I_MIN(need, 1024));
	iter = fts_lmdb_db_iter_init(db, FTS_LMDB_DBI_GUIDS, prefix->data,
				     prefix->used);
	while (array_count(&drop) < need &&
	       fts_lmdb_db_iter_next(iter, &key, &key_size, &data, &size)) {
		if (!fts_lmdb_guids_is_tombstone(data, size))
			continue;
		if (key_size != prefix->used + sizeof(uint32_t)) {
			bad_key = TRUE;
			break;
		}
		uid = be32_to_cpu_unaligned(CONST_PTR_OFFSET(key,
							     prefix->used));
		array_push_back(&drop, &uid);
	}
	if (fts_lmdb_db_iter_deinit(&iter, error_r) < 0)
		return -1;
	if (bad_key) {
		fts_lmdb_db_set_corrupted(db);
		*error_r = t_strdup_printf("GUID key of %zu bytes", key_size);
		return -1;
	}
	/* Fewer than counted can only be a lost tombstone: it weakens the
	   copy check for one UID, and never changes an answer, so the
	   count is simply set right. */
	all = array_count(&drop) < need;
	key_buf = t_buffer_create(16);
	array_foreach(&drop, uidp) {
		fts_lmdb_uid_key(key_buf, rec->box_id, *uidp);
		if (fts_lmdb_db_del(db, FTS_LMDB_DBI_GUIDS, key_buf->data,
				    key_buf->used, error_r) < 0)
			return -1;
	}
	rec->tombstone_count = all ? 0 : rec->tombstone_count - need;
	return 0;
}
