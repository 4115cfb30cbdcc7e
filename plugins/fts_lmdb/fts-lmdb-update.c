/* Indexing. The fts plugin walks the new mail and announces each one
   through its build keys; the first key of a message makes us read and
   tokenize it ourselves (see fts-lmdb-extract.c), and every key is then
   declined, so that the plugin doesn't decode bodies we don't use.
   Tokens are collected in a batch bounded by fts_lmdb_batch_mb and
   written in one transaction together with the mailbox's last indexed
   UID: a crash loses at most the batch, which is then indexed again. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "hash.h"
#include "seq-range-array.h"
#include "mail-storage-private.h"
#include "fts-lmdb-db.h"
#include "fts-lmdb-postings.h"
#include "fts-lmdb-blocks.h"
#include "fts-lmdb-extract.h"
#include "fts-lmdb-partmap-build.h"
#include "fts-lmdb-backend.h"
#include "fts-lmdb-guids.h"

/* expunged messages stay in posting lists (filtered out by lookups)
   until they are this many and this share of the mailbox */
#define FTS_LMDB_PURGE_MIN_EXPUNGED 64
#define FTS_LMDB_PURGE_PERCENT 20

struct fts_lmdb_batch_token {
	char *token;
	uint32_t size;
	uint32_t rank;
	/* the entry of the message being tokenized, if it has one */
	uint32_t cur_uid;
	uint32_t cur_entry;
};

struct fts_lmdb_batch_entry {
	uint32_t token;
	uint32_t uid;
	uint32_t mask;
};

/* a part map in the batch: map_data[offset..offset+size) */
struct fts_lmdb_batch_map {
	uint32_t uid;
	size_t offset, size;
};

struct fts_lmdb_batch_guid {
	uint32_t uid;
	uint8_t hash[FTS_LMDB_GUID_HASH_SIZE];
};

struct fts_lmdb_update_context {
	struct fts_backend_update_context ctx;
	struct fts_lmdb_backend *backend;

	struct mailbox *box;
	guid_128_t guid;
	uint32_t uid_validity;
	/* everything up to this UID is indexed or in the batch */
	uint32_t indexed_last_uid;
	/* the last UID the index held when the batch began: a batch
	   written after less than that would leave a gap under it */
	uint32_t flushed_last_uid;
	bool box_ok;
	/* UIDVALIDITY changed: the next write clears the mailbox first */
	bool box_reset;

	struct mailbox_transaction_context *trans;
	struct mail *mail;
	uint32_t build_uid;

	pool_t pool;
	HASH_TABLE(char *, struct fts_lmdb_batch_token *) tokens;
	ARRAY(struct fts_lmdb_batch_token *) token_list;
	ARRAY(struct fts_lmdb_batch_entry) entries;
	ARRAY_TYPE(seq_range) expunged;
	ARRAY(struct fts_lmdb_batch_map) maps;
	ARRAY(struct fts_lmdb_batch_guid) guids;
	buffer_t *map_data;
	buffer_t *lookup_key;
	uint32_t batch_last_uid;
	unsigned int batch_docs;
	size_t batch_bytes;

	uint32_t mail_uid;
	unsigned int mail_first_entry, mail_tokens;
	uint32_t mail_long_mask;
	bool mail_stop;

	/* the first entry after the special lists', while flushing */
	unsigned int first_token_entry;

	/* a batch was committed: maybe worth compacting at the end */
	bool written;
	/* the index lost what this context wrote, see flush_txn */
	bool gap;
	bool failed;
};

static void fts_lmdb_batch_create(struct fts_lmdb_update_context *ctx)
{
	hash_table_create(&ctx->tokens, ctx->pool, 0, str_hash, strcmp);
}

struct fts_backend_update_context *
fts_lmdb_update_init(struct fts_backend *_backend)
{
	struct fts_lmdb_update_context *ctx;

	ctx = i_new(struct fts_lmdb_update_context, 1);
	ctx->ctx.backend = _backend;
	ctx->backend = container_of(_backend, struct fts_lmdb_backend,
				    backend);
	ctx->pool = pool_alloconly_create("fts-lmdb batch", 1024 * 64);
	fts_lmdb_batch_create(ctx);
	i_array_init(&ctx->token_list, 1024);
	i_array_init(&ctx->entries, 4096);
	i_array_init(&ctx->expunged, 16);
	i_array_init(&ctx->maps, 16);
	i_array_init(&ctx->guids, 64);
	ctx->map_data = buffer_create_dynamic(default_pool, 1024);
	ctx->lookup_key = buffer_create_dynamic(default_pool,
						FTS_LMDB_TOKEN_MAX + 1);
	return &ctx->ctx;
}

static void fts_lmdb_batch_clear(struct fts_lmdb_update_context *ctx)
{
	hash_table_destroy(&ctx->tokens);
	p_clear(ctx->pool);
	fts_lmdb_batch_create(ctx);
	array_clear(&ctx->token_list);
	array_clear(&ctx->entries);
	array_clear(&ctx->expunged);
	array_clear(&ctx->maps);
	array_clear(&ctx->guids);
	buffer_set_used_size(ctx->map_data, 0);
	ctx->batch_last_uid = 0;
	ctx->batch_docs = 0;
	ctx->batch_bytes = 0;
}

static void fts_lmdb_batch_add(struct fts_lmdb_update_context *ctx,
			       const unsigned char *data, size_t size,
			       uint32_t mask)
{
	struct fts_lmdb_batch_token *bt;
	struct fts_lmdb_batch_entry *entry;

	buffer_set_used_size(ctx->lookup_key, 0);
	buffer_append(ctx->lookup_key, data, size);
	buffer_append_c(ctx->lookup_key, '\0');
	bt = hash_table_lookup(ctx->tokens,
			       (const char *)ctx->lookup_key->data);
	if (bt == NULL) {
		bt = p_new(ctx->pool, struct fts_lmdb_batch_token, 1);
		bt->token = p_strndup(ctx->pool, data, size);
		bt->size = size;
		bt->rank = array_count(&ctx->token_list);
		hash_table_insert(ctx->tokens, bt->token, bt);
		array_push_back(&ctx->token_list, &bt);
		ctx->batch_bytes += size + 64;
	} else if (bt->cur_uid == ctx->mail_uid) {
		entry = array_idx_modifiable(&ctx->entries, bt->cur_entry);
		entry->mask |= mask;
		return;
	}
	if (++ctx->mail_tokens > ctx->backend->set.max_mail_tokens) {
		ctx->mail_stop = TRUE;
		return;
	}
	bt->cur_uid = ctx->mail_uid;
	bt->cur_entry = array_count(&ctx->entries);
	entry = array_append_space(&ctx->entries);
	entry->token = bt->rank;
	entry->uid = ctx->mail_uid;
	entry->mask = mask;
	ctx->batch_bytes += sizeof(*entry);
}

static void fts_lmdb_update_token(void *context, const unsigned char *data,
				  size_t size, uint32_t mask, bool chunk)
{
	struct fts_lmdb_update_context *ctx = context;

	if (ctx->mail_stop)
		return;
	if (chunk)
		ctx->mail_long_mask |= mask;
	fts_lmdb_batch_add(ctx, data, size, mask);
}

static void fts_lmdb_batch_add_special(struct fts_lmdb_update_context *ctx,
				       const char *key, uint32_t mask)
{
	ctx->mail_stop = FALSE;
	ctx->mail_tokens = 0;
	fts_lmdb_batch_add(ctx, (const unsigned char *)key, strlen(key),
			   mask);
}

static int fts_lmdb_batch_token_cmp(struct fts_lmdb_batch_token *const *t1,
				    struct fts_lmdb_batch_token *const *t2)
{
	return strcmp((*t1)->token, (*t2)->token);
}

static int fts_lmdb_batch_entry_cmp(const struct fts_lmdb_batch_entry *e1,
				    const struct fts_lmdb_batch_entry *e2)
{
	if (e1->token != e2->token)
		return e1->token < e2->token ? -1 : 1;
	if (e1->uid != e2->uid)
		return e1->uid < e2->uid ? -1 : 1;
	return 0;
}

/* The posting list under key, copied into value to be appended to.
   1 if it existed, 0 if value is a new empty list, -1 on error. */
static int fts_lmdb_posting_load(struct fts_lmdb_db *db, const buffer_t *key,
				 buffer_t *value,
				 struct fts_lmdb_posting_header *hdr_r,
				 const char **error_r)
{
	const void *data;
	size_t size;
	int ret;

	ret = fts_lmdb_db_get(db, FTS_LMDB_DBI_TOKENS, key->data, key->used,
			      &data, &size, error_r);
	if (ret < 0)
		return -1;
	buffer_set_used_size(value, 0);
	i_zero(hdr_r);
	if (ret == 0) {
		return 0;
	}
	if (fts_lmdb_postings_header(data, size, hdr_r) < 0) {
		*error_r = "damaged posting list";
		return -1;
	}
	buffer_append(value, data, size);
	return 1;
}

static int fts_lmdb_flush_expunged(struct fts_lmdb_update_context *ctx,
				   struct fts_lmdb_box_record *rec,
				   const char **error_r)
{
	struct fts_lmdb_posting_header hdr;
	struct fts_lmdb_postings_iter piter;
	const struct seq_range *range;
	ARRAY_TYPE(seq_range) all;
	buffer_t *key, *value, *uid_key;
	uint32_t uid, mask;

	if (array_count(&ctx->expunged) == 0)
		return 0;
	key = t_buffer_create(8);
	uid_key = t_buffer_create(8);
	value = t_buffer_create(256);
	fts_lmdb_token_key(key, rec->box_id, FTS_LMDB_KEY_EXPUNGED,
			   strlen(FTS_LMDB_KEY_EXPUNGED));
	if (fts_lmdb_posting_load(ctx->backend->db, key, value, &hdr,
				  error_r) < 0)
		return -1;
	if (fts_lmdb_box_list_check(ctx->backend->db, rec->expunged_count,
				    hdr.count, error_r) < 0)
		return -1;
	/* Expunges come in any UID order, and a posting list can only be
	   appended to in UID order: merge them into the list so far. */
	t_array_init(&all, 64);
	fts_lmdb_postings_iter_init(&piter, value->data, value->used);
	while (fts_lmdb_postings_iter_next(&piter, &uid, &mask))
		seq_range_array_add(&all, uid);
	if (piter.failed) {
		*error_r = "damaged expunge list";
		return -1;
	}
	array_foreach(&ctx->expunged, range) {
		/* only what was indexed; the rest never will be */
		for (uid = range->seq1; uid <= range->seq2 &&
		     uid <= rec->last_uid; uid++) {
			/* part maps go at once: nothing filters them at
			   fetch time */
			fts_lmdb_uid_key(uid_key, rec->box_id, uid);
			if (fts_lmdb_db_del(ctx->backend->db,
					    FTS_LMDB_DBI_PARTS, uid_key->data,
					    uid_key->used, error_r) < 0 ||
			    fts_lmdb_guids_expunge(ctx->backend->db, rec,
						   uid, error_r) < 0)
				return -1;
			if (!seq_range_array_add(&all, uid))
				rec->expunged_count++;
		}
	}
	buffer_set_used_size(value, 0);
	i_zero(&hdr);
	array_foreach(&all, range) {
		for (uid = range->seq1; uid <= range->seq2; uid++)
			fts_lmdb_postings_append(value, &hdr, uid, 0);
	}
	return fts_lmdb_db_put(ctx->backend->db, FTS_LMDB_DBI_TOKENS,
			       key->data, key->used, value->data, value->used,
			       error_r);
}

static int fts_lmdb_flush_maps(struct fts_lmdb_update_context *ctx,
			       uint32_t box_id, const char **error_r)
{
	const struct fts_lmdb_batch_map *map;
	buffer_t *key = t_buffer_create(8);

	array_foreach(&ctx->maps, map) {
		fts_lmdb_uid_key(key, box_id, map->uid);
		if (fts_lmdb_db_put(ctx->backend->db, FTS_LMDB_DBI_PARTS,
				    key->data, key->used,
				    CONST_PTR_OFFSET(ctx->map_data->data,
						     map->offset),
				    map->size, error_r) < 0)
			return -1;
	}
	return 0;
}

static int fts_lmdb_flush_guids(struct fts_lmdb_update_context *ctx,
				uint32_t box_id, const char **error_r)
{
	const struct fts_lmdb_batch_guid *guid;

	array_foreach(&ctx->guids, guid) {
		if (fts_lmdb_guids_put(ctx->backend->db, box_id, guid->uid,
				       guid->hash, error_r) < 0)
			return -1;
	}
	return 0;
}

/* The special lists (FTS_LMDB_KEY_*), which sort before every token. */
static int fts_lmdb_flush_special(struct fts_lmdb_update_context *ctx,
				  struct fts_lmdb_box_record *rec,
				  const char **error_r)
{
	struct fts_lmdb_db *db = ctx->backend->db;
	struct fts_lmdb_posting_header hdr;
	struct fts_lmdb_batch_token *const *tokens;
	const struct fts_lmdb_batch_entry *entries;
	buffer_t *key, *value;
	unsigned int i, count, token_count;
	uint32_t *list_count;
	int ret;

	key = t_buffer_create(FTS_LMDB_TOKEN_MAX + 8);
	value = t_buffer_create(1024);
	tokens = array_get(&ctx->token_list, &token_count);
	entries = array_get(&ctx->entries, &count);
	for (i = 0; i < count;) {
		const struct fts_lmdb_batch_token *bt = tokens[entries[i].token];

		if (bt->token[0] != '\n')
			break;
		fts_lmdb_token_key(key, rec->box_id, bt->token, bt->size);
		ret = fts_lmdb_posting_load(db, key, value, &hdr, error_r);
		if (ret < 0)
			return -1;
		list_count = fts_lmdb_box_record_list_count(rec, bt->token,
							    bt->size);
		if (list_count != NULL &&
		    fts_lmdb_box_list_check(db, *list_count, hdr.count,
					    error_r) < 0)
			return -1;
		for (; i < count && tokens[entries[i].token] == bt; i++) {
			/* already there if an earlier batch had it */
			if (entries[i].uid > hdr.last_uid) {
				fts_lmdb_postings_append(value, &hdr,
							 entries[i].uid,
							 entries[i].mask);
			}
		}
		if (list_count != NULL)
			*list_count = hdr.count;
		if (fts_lmdb_db_put(db, FTS_LMDB_DBI_TOKENS, key->data,
				    key->used, value->data, value->used,
				    error_r) < 0)
			return -1;
	}
	ctx->first_token_entry = i;
	return 0;
}

/* the batch's tokens with entries, after the special ones */
struct fts_lmdb_flush_run {
	const struct fts_lmdb_batch_token *token;
	unsigned int first, count;
};

struct fts_lmdb_flush_input {
	const struct fts_lmdb_batch_entry *entries;
	const struct fts_lmdb_flush_run *runs;
};

static void fts_lmdb_flush_input_token(void *context, unsigned int idx,
				       const unsigned char **token_r,
				       size_t *size_r)
{
	struct fts_lmdb_flush_input *in = context;

	*token_r = (const unsigned char *)in->runs[idx].token->token;
	*size_r = in->runs[idx].token->size;
}

static void fts_lmdb_flush_input_append(void *context, unsigned int idx,
					buffer_t *postings,
					struct fts_lmdb_posting_header *hdr)
{
	struct fts_lmdb_flush_input *in = context;
	const struct fts_lmdb_flush_run *run = &in->runs[idx];
	const struct fts_lmdb_batch_entry *entry;
	unsigned int i;

	for (i = 0; i < run->count; i++) {
		entry = &in->entries[run->first + i];
		/* already there if an earlier batch had it */
		if (entry->uid > hdr->last_uid) {
			fts_lmdb_postings_append(postings, hdr, entry->uid,
						 entry->mask);
		}
	}
}

static int fts_lmdb_flush_blocks(struct fts_lmdb_update_context *ctx,
				 struct fts_lmdb_box_record *rec,
				 const char **error_r)
{
	struct fts_lmdb_batch_token *const *tokens;
	struct fts_lmdb_flush_input in;
	struct fts_lmdb_blocks_input input;
	ARRAY(struct fts_lmdb_flush_run) runs;
	struct fts_lmdb_flush_run *run = NULL;
	unsigned int i, count, token_count;

	tokens = array_get(&ctx->token_list, &token_count);
	in.entries = array_get(&ctx->entries, &count);
	t_array_init(&runs, 1024);
	for (i = ctx->first_token_entry; i < count; i++) {
		if (run == NULL || run->token != tokens[in.entries[i].token]) {
			run = array_append_space(&runs);
			run->token = tokens[in.entries[i].token];
			run->first = i;
		}
		run->count++;
	}
	if (array_count(&runs) == 0)
		return 0;
	in.runs = array_front(&runs);
	i_zero(&input);
	input.count = array_count(&runs);
	input.token = fts_lmdb_flush_input_token;
	input.append = fts_lmdb_flush_input_append;
	input.context = &in;
	return fts_lmdb_blocks_add(ctx->backend->db, rec->box_id,
				   &rec->block_count,
				   ctx->backend->set.trigram_min_blocks,
				   &input, error_r);
}

static int fts_lmdb_flush_txn(void *context, const char **error_r)
{
	struct fts_lmdb_update_context *ctx = context;
	struct fts_lmdb_box_record rec;
	int ret;

	ret = fts_lmdb_box_record_get(ctx->backend, ctx->guid, &rec, error_r);
	if (ret < 0)
		return -1;
	/* An earlier batch failed, or another process rebuilt the index
	   since: this batch's mail would be recorded as indexed beside
	   unindexed mail under it. The record stays where it is, and the
	   next search indexes from there. */
	if ((ret == 0 || rec.uid_validity != ctx->uid_validity ?
	     0 : rec.last_uid) < ctx->flushed_last_uid) {
		ctx->gap = TRUE;
		return 0;
	}
	if (ret == 0) {
		i_zero(&rec);
		rec.uid_validity = ctx->uid_validity;
		if (fts_lmdb_box_record_put(ctx->backend, ctx->guid, &rec,
					    error_r) < 0 ||
		    fts_lmdb_box_record_get(ctx->backend, ctx->guid, &rec,
					    error_r) <= 0)
			return -1;
	}
	if (rec.uid_validity != ctx->uid_validity) {
		if (fts_lmdb_box_clear(ctx->backend, &rec, error_r) < 0)
			return -1;
		rec.uid_validity = ctx->uid_validity;
	}

	if (fts_lmdb_flush_special(ctx, &rec, error_r) < 0 ||
	    fts_lmdb_flush_blocks(ctx, &rec, error_r) < 0)
		return -1;

	if (ctx->batch_last_uid > rec.last_uid)
		rec.last_uid = ctx->batch_last_uid;
	rec.doc_count += ctx->batch_docs;
	if (fts_lmdb_flush_maps(ctx, rec.box_id, error_r) < 0 ||
	    fts_lmdb_flush_guids(ctx, rec.box_id, error_r) < 0 ||
	    fts_lmdb_flush_expunged(ctx, &rec, error_r) < 0 ||
	    fts_lmdb_guids_prune(ctx->backend->db, &rec, error_r) < 0)
		return -1;
	if (rec.expunged_count >= FTS_LMDB_PURGE_MIN_EXPUNGED &&
	    rec.expunged_count * 100 >=
	    (uint64_t)rec.doc_count * FTS_LMDB_PURGE_PERCENT) {
		if (fts_lmdb_box_purge(ctx->backend, &rec, error_r) < 0)
			return -1;
	}
	return fts_lmdb_box_record_put(ctx->backend, ctx->guid, &rec,
				       error_r);
}

static void fts_lmdb_update_flush(struct fts_lmdb_update_context *ctx)
{
	struct fts_lmdb_batch_token *const *tokens;
	ARRAY(struct fts_lmdb_batch_token *) sorted;
	struct fts_lmdb_batch_entry *entries;
	unsigned int i, count;
	const char *error;
	int ret;

	if (!ctx->box_ok ||
	    (array_count(&ctx->entries) == 0 && array_count(&ctx->maps) == 0 &&
	     array_count(&ctx->guids) == 0 &&
	     array_count(&ctx->expunged) == 0 && !ctx->box_reset)) {
		fts_lmdb_batch_clear(ctx);
		return;
	}

	T_BEGIN {
		/* keys in order: LMDB writes them into neighbouring pages */
		tokens = array_get(&ctx->token_list, &count);
		t_array_init(&sorted, I_MAX(count, 1));
		if (count > 0) {
			array_append(&sorted, tokens, count);
			array_sort(&sorted, fts_lmdb_batch_token_cmp);
			tokens = array_front_modifiable(&sorted);
			for (i = 0; i < count; i++)
				tokens[i]->rank = i;
		}
		entries = array_get_modifiable(&ctx->entries, &count);
		for (i = 0; i < count; i++) {
			entries[i].token =
				array_idx_elem(&ctx->token_list,
					       entries[i].token)->rank;
		}
		array_sort(&ctx->entries, fts_lmdb_batch_entry_cmp);
		array_clear(&ctx->token_list);
		array_append_array(&ctx->token_list, &sorted);

		ret = fts_lmdb_backend_write(ctx->backend, fts_lmdb_flush_txn,
					     ctx, &error);
		if (ret == 0 && ctx->gap) {
			e_debug(ctx->backend->event, "Mailbox %s: the index "
				"holds less than this process wrote to it "
				"(UID %u), indexing UIDs %u..%u later",
				mailbox_get_vname(ctx->box),
				ctx->flushed_last_uid,
				ctx->flushed_last_uid + 1,
				ctx->batch_last_uid);
			/* nothing more goes in for this mailbox */
			ctx->box_ok = FALSE;
		} else if (ret == 0) {
			ctx->written = TRUE;
			if (ctx->batch_last_uid > ctx->flushed_last_uid)
				ctx->flushed_last_uid = ctx->batch_last_uid;
		}
		if (ret < 0) {
			if (fts_lmdb_db_is_corrupted(ctx->backend->db))
				fts_lmdb_backend_damaged(ctx->backend, error);
			else {
				e_error(ctx->backend->event,
					"Writing to %s failed: %s",
					ctx->backend->dir, error);
			}
			ctx->failed = TRUE;
			/* later batches would leave this one's mail out */
			ctx->box_ok = FALSE;
		}
	} T_END;
	ctx->box_reset = FALSE;
	fts_lmdb_batch_clear(ctx);
}

static void fts_lmdb_update_close_mail(struct fts_lmdb_update_context *ctx)
{
	if (ctx->mail != NULL)
		mail_free(&ctx->mail);
	if (ctx->trans != NULL)
		mailbox_transaction_rollback(&ctx->trans);
}

int fts_lmdb_update_deinit(struct fts_backend_update_context *_ctx)
{
	struct fts_lmdb_update_context *ctx =
		container_of(_ctx, struct fts_lmdb_update_context, ctx);
	int ret;

	fts_lmdb_update_flush(ctx);
	fts_lmdb_update_close_mail(ctx);
	if (ctx->written)
		fts_lmdb_backend_compact(ctx->backend, FALSE);
	/* The index is a cache of the mail: failing here would fail the
	   delivery, APPEND or COPY that is being indexed. The errors are
	   logged, and what wasn't written is indexed again later. */
	ret = 0;
	hash_table_destroy(&ctx->tokens);
	pool_unref(&ctx->pool);
	array_free(&ctx->token_list);
	array_free(&ctx->entries);
	array_free(&ctx->expunged);
	array_free(&ctx->maps);
	array_free(&ctx->guids);
	buffer_free(&ctx->map_data);
	buffer_free(&ctx->lookup_key);
	i_free(ctx);
	return ret;
}

void fts_lmdb_update_set_mailbox(struct fts_backend_update_context *_ctx,
				 struct mailbox *box)
{
	struct fts_lmdb_update_context *ctx =
		container_of(_ctx, struct fts_lmdb_update_context, ctx);
	struct fts_lmdb_backend *backend = ctx->backend;
	struct fts_lmdb_box_record rec;
	struct mailbox_status status;
	const char *error;
	int ret;

	if (ctx->box == box)
		return;
	fts_lmdb_update_flush(ctx);
	fts_lmdb_update_close_mail(ctx);
	ctx->box = box;
	ctx->box_ok = FALSE;
	ctx->box_reset = FALSE;
	ctx->build_uid = 0;
	if (box == NULL)
		return;

	if (fts_lmdb_backend_open(backend, &error) < 0) {
		e_error(backend->event, "%s", error);
		ctx->failed = TRUE;
		return;
	}
	if (fts_lmdb_box_guid(box, ctx->guid) < 0) {
		ctx->failed = TRUE;
		return;
	}
	mailbox_get_open_status(box, STATUS_UIDVALIDITY, &status);
	ctx->uid_validity = status.uidvalidity;
	if (fts_lmdb_db_read_renew(backend->db, &error) < 0) {
		e_error(backend->event, "%s", error);
		ctx->failed = TRUE;
		return;
	}
	ret = fts_lmdb_box_record_get(backend, ctx->guid, &rec, &error);
	fts_lmdb_db_read_release(backend->db);
	if (ret < 0) {
		fts_lmdb_backend_damaged(backend, error);
		ctx->failed = TRUE;
		return;
	}
	ctx->indexed_last_uid = 0;
	if (ret > 0) {
		if (rec.uid_validity == ctx->uid_validity)
			ctx->indexed_last_uid = rec.last_uid;
		else
			ctx->box_reset = TRUE;
	}
	ctx->flushed_last_uid = ctx->indexed_last_uid;
	ctx->gap = FALSE;
	ctx->box_ok = TRUE;
}

void fts_lmdb_update_expunge(struct fts_backend_update_context *_ctx,
			     uint32_t uid)
{
	struct fts_lmdb_update_context *ctx =
		container_of(_ctx, struct fts_lmdb_update_context, ctx);

	seq_range_array_add(&ctx->expunged, uid);
}

/* Recorded for every message the index covers, so that a copy of the
   mailbox with other mail under the same UIDs can be told apart (see
   fts_lmdb_box_check_copy()). */
static void fts_lmdb_update_guid_mail(struct fts_lmdb_update_context *ctx,
				      uint32_t uid)
{
	struct fts_lmdb_batch_guid *guid;
	uint8_t hash[FTS_LMDB_GUID_HASH_SIZE];

	if (!fts_lmdb_mail_guid_hash(ctx->mail, hash))
		return;
	guid = array_append_space(&ctx->guids);
	guid->uid = uid;
	memcpy(guid->hash, hash, sizeof(guid->hash));
	ctx->batch_bytes += sizeof(*guid) + 16;
}

static void fts_lmdb_update_map_mail(struct fts_lmdb_update_context *ctx,
				     uint32_t uid)
{
	struct fts_lmdb_batch_map *map;
	size_t start = ctx->map_data->used;
	const char *error;
	int ret;

	T_BEGIN {
		ret = fts_lmdb_partmap_build(ctx->mail, ctx->map_data, &error);
		if (ret < 0) {
			e_warning(ctx->backend->event, "Mailbox %s UID %u: no "
				  "part map, partial fetches of it parse the "
				  "mail: %s", mailbox_get_vname(ctx->box),
				  uid, error);
		}
	} T_END;
	if (ret <= 0) {
		buffer_set_used_size(ctx->map_data, start);
		return;
	}
	map = array_append_space(&ctx->maps);
	map->uid = uid;
	map->offset = start;
	map->size = ctx->map_data->used - start;
	ctx->batch_bytes += map->size + sizeof(*map);
}

static void fts_lmdb_update_index_mail(struct fts_lmdb_update_context *ctx,
				       uint32_t uid)
{
	struct fts_lmdb_backend *backend = ctx->backend;
	const char *error = NULL;
	unsigned int count;
	int ret;

	if (!ctx->box_ok || uid <= ctx->indexed_last_uid)
		return;
	if (ctx->trans == NULL) {
		ctx->trans = mailbox_transaction_begin(ctx->box, 0,
						       "fts-lmdb indexing");
		ctx->mail = mail_alloc(ctx->trans, 0, NULL);
	}
	if (!mail_set_uid(ctx->mail, uid))
		return;

	ctx->mail_uid = uid;
	ctx->mail_first_entry = array_count(&ctx->entries);
	ctx->mail_tokens = 0;
	ctx->mail_long_mask = 0;
	ctx->mail_stop = FALSE;
	T_BEGIN {
		ret = fts_lmdb_extract_mail(ctx->mail, &backend->set,
					    ctx->ctx.normalizer != NULL ?
					    ctx->ctx.normalizer :
					    ctx->box->storage->user->default_normalizer,
					    fts_lmdb_update_token, ctx,
					    &ctx->mail_stop, &error);
		if (ret < 0)
			error = t_strdup(error);
	} T_END_PASS_STR_IF(ret < 0, &error);

	if (ret < 0 || ctx->mail_stop) {
		/* Not indexed, and searches read it: slower, still right. */
		count = array_count(&ctx->entries);
		array_delete(&ctx->entries, ctx->mail_first_entry,
			     count - ctx->mail_first_entry);
		if (ret < 0) {
			e_warning(backend->event, "Mailbox %s UID %u: can't "
				  "read the mail, searches will read it: %s",
				  mailbox_get_vname(ctx->box), uid, error);
		} else {
			e_warning(backend->event, "Mailbox %s UID %u: more "
				  "than %u distinct tokens, not indexed; "
				  "searches will read it",
				  mailbox_get_vname(ctx->box), uid,
				  backend->set.max_mail_tokens);
		}
		ctx->mail_uid = uid;
		fts_lmdb_batch_add_special(ctx, FTS_LMDB_KEY_UNINDEXED,
					   (uint32_t)-1);
	} else if (ctx->mail_long_mask != 0) {
		fts_lmdb_batch_add_special(ctx, FTS_LMDB_KEY_LONG,
					   ctx->mail_long_mask);
	}
	fts_lmdb_batch_add_special(ctx, FTS_LMDB_KEY_ALL, 1);
	if (ret >= 0 && backend->set.partial_fetch)
		fts_lmdb_update_map_mail(ctx, uid);
	fts_lmdb_update_guid_mail(ctx, uid);
	ctx->batch_last_uid = uid;
	ctx->batch_docs++;
	ctx->indexed_last_uid = uid;

	if (ctx->batch_bytes >= (size_t)backend->set.batch_mb * 1024 * 1024)
		fts_lmdb_update_flush(ctx);
}

bool fts_lmdb_update_set_build_key(struct fts_backend_update_context *_ctx,
				   const struct fts_backend_build_key *key)
{
	struct fts_lmdb_update_context *ctx =
		container_of(_ctx, struct fts_lmdb_update_context, ctx);

	if (key->uid != ctx->build_uid) {
		ctx->build_uid = key->uid;
		fts_lmdb_update_index_mail(ctx, key->uid);
	}
	/* we have read the mail ourselves */
	return FALSE;
}

void fts_lmdb_update_unset_build_key(struct fts_backend_update_context *ctx
				     ATTR_UNUSED)
{
}

int fts_lmdb_update_build_more(struct fts_backend_update_context *ctx
			       ATTR_UNUSED,
			       const unsigned char *data ATTR_UNUSED,
			       size_t size ATTR_UNUSED)
{
	return 0;
}
