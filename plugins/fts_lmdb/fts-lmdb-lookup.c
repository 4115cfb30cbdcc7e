/* Searching. A key without spaces matches exactly the messages that have
   a token containing it, which a scan of the mailbox's token blocks finds:
   that answer is definite, so the fts plugin reads no mail. A key with
   spaces spans tokens; the tokens around each space narrow it down to
   "maybe", which the plugin checks by reading those messages. Messages
   that could not be indexed are always "maybe". */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "str.h"
#include "seq-range-array.h"
#include "mail-search.h"
#include "mail-storage-private.h"
#include "fts-lmdb-db.h"
#include "fts-lmdb-postings.h"
#include "fts-lmdb-blocks.h"
#include "fts-lmdb-backend.h"
#include "fts-lmdb-search.h"

/* bit sets of UIDs 0..last_uid */
struct fts_lmdb_lookup {
	struct fts_lmdb_backend *backend;
	struct mailbox *box;
	struct fts_lmdb_box_record rec;
	normalizer_func_t *normalizer;
	unsigned int words;

	uint64_t *range, *unindexed, *expunged;
	buffer_t *key;
	const char *error;

	struct fts_lmdb_db_stamp stamp;
	bool stamped;
	/* the blocks were checked under this stamp */
	bool blocks_trusted;
};

struct fts_lmdb_piece_context {
	struct fts_lmdb_lookup *lk;
	uint32_t fields;
	uint64_t *set;
};

#define UIDSET_SET(set, uid) ((set)[(uid) / 64] |= 1ULL << ((uid) % 64))

static uint64_t *fts_lmdb_uidset(struct fts_lmdb_lookup *lk)
{
	return t_new(uint64_t, lk->words);
}

static void
fts_lmdb_uidset_and(struct fts_lmdb_lookup *lk, uint64_t *dest,
		    const uint64_t *src)
{
	for (unsigned int i = 0; i < lk->words; i++)
		dest[i] &= src[i];
}

static void
fts_lmdb_uidset_or(struct fts_lmdb_lookup *lk, uint64_t *dest,
		   const uint64_t *src)
{
	for (unsigned int i = 0; i < lk->words; i++)
		dest[i] |= src[i];
}

static void
fts_lmdb_uidset_and_not(struct fts_lmdb_lookup *lk, uint64_t *dest,
			const uint64_t *src)
{
	for (unsigned int i = 0; i < lk->words; i++)
		dest[i] &= ~src[i];
}

static int fts_lmdb_postings_add(struct fts_lmdb_lookup *lk,
				 const void *data, size_t size,
				 uint32_t fields, uint64_t *set,
				 uint32_t *count_r)
{
	struct fts_lmdb_postings_iter iter;
	uint32_t uid, mask, count = 0;

	fts_lmdb_postings_iter_init(&iter, data, size);
	while (fts_lmdb_postings_iter_next(&iter, &uid, &mask)) {
		if ((mask & fields) != 0 && uid <= lk->rec.last_uid)
			UIDSET_SET(set, uid);
		count++;
	}
	if (iter.failed) {
		lk->error = "damaged posting list";
		return -1;
	}
	if (count_r != NULL)
		*count_r = count;
	return 0;
}

static int fts_lmdb_token_add(struct fts_lmdb_lookup *lk,
			      const void *token, size_t size,
			      uint32_t fields, uint64_t *set)
{
	const void *data;
	size_t data_size;
	int ret;

	fts_lmdb_token_key(lk->key, lk->rec.box_id, token, size);
	ret = fts_lmdb_db_get(lk->backend->db, FTS_LMDB_DBI_TOKENS,
			      lk->key->data, lk->key->used, &data, &data_size,
			      &lk->error);
	if (ret <= 0)
		return ret;
	if (fts_lmdb_postings_add(lk, data, data_size, fields, set,
				  NULL) < 0)
		return -1;
	return 1;
}

/* Adds the messages of a list kept under a special key, which must hold
   as many as the mailbox's record counts: the key of an empty list is
   deleted, so only the count tells a lost list from an empty one. */
static int fts_lmdb_special_add(struct fts_lmdb_lookup *lk, const char *name,
				uint32_t fields, uint64_t *set)
{
	const uint32_t *expected =
		fts_lmdb_box_record_list_count(&lk->rec, name, strlen(name));
	const void *data;
	size_t size;
	uint32_t count = 0;
	int ret;

	fts_lmdb_token_key(lk->key, lk->rec.box_id, name, strlen(name));
	ret = fts_lmdb_db_get(lk->backend->db, FTS_LMDB_DBI_TOKENS,
			      lk->key->data, lk->key->used, &data, &size,
			      &lk->error);
	if (ret < 0)
		return -1;
	if (ret > 0 &&
	    fts_lmdb_postings_add(lk, data, size, fields, set, &count) < 0)
		return -1;
	if (count != *expected) {
		lk->error = t_strdup_printf(
			"a list of %u messages holds %u", *expected, count);
		return -1;
	}
	return 0;
}

static int fts_lmdb_piece_entry(void *context,
				const struct fts_lmdb_block_entry *entry,
				const char **error_r)
{
	struct fts_lmdb_piece_context *pc = context;
	struct fts_lmdb_lookup *lk = pc->lk;
	int ret;

	if (entry->postings != NULL) {
		ret = fts_lmdb_postings_add(lk, entry->postings,
					    entry->postings_size, pc->fields,
					    pc->set, NULL);
	} else {
		ret = fts_lmdb_token_add(lk, entry->token, entry->size,
					 pc->fields, pc->set);
		if (ret == 0) {
			/* written in one transaction with its block */
			lk->error = "a block's token has no posting list";
			ret = -1;
		}
	}
	if (ret < 0) {
		*error_r = lk->error;
		return -1;
	}
	return 0;
}

/* Adds the postings of the tokens that match q to set. */
static int fts_lmdb_match_tokens(struct fts_lmdb_lookup *lk,
				 const unsigned char *q, size_t q_size,
				 enum fts_lmdb_match match, uint32_t fields,
				 uint64_t *set)
{
	struct fts_lmdb_backend *backend = lk->backend;
	struct fts_lmdb_piece_context pc = {
		.lk = lk, .fields = fields, .set = set,
	};
	bool chain_checked;
	int ret;

	fts_lmdb_db_set_trusted(backend->db, FTS_LMDB_DBI_BLOCKS,
				lk->blocks_trusted);
	ret = fts_lmdb_blocks_find(backend->db, lk->rec.box_id,
				   lk->rec.block_count, q, q_size, match,
				   fts_lmdb_piece_entry, &pc, &chain_checked,
				   &lk->error);
	fts_lmdb_db_set_trusted(backend->db, FTS_LMDB_DBI_BLOCKS, FALSE);
	if (ret == 0 && !lk->blocks_trusted && lk->stamped && chain_checked) {
		/* a scan read and checked the whole chain */
		backend->blocks_checked_stamp = lk->stamp;
		backend->blocks_checked_box_id = lk->rec.box_id;
		backend->blocks_checked = TRUE;
		lk->blocks_trusted = TRUE;
	}
	return ret;
}

static int fts_lmdb_piece(struct fts_lmdb_lookup *lk,
			  const unsigned char *q, size_t q_size,
			  enum fts_lmdb_match match, uint32_t fields,
			  uint64_t *set)
{
	if (fts_lmdb_match_tokens(lk, q, q_size, match, fields, set) < 0)
		return -1;
	if (q_size > FTS_LMDB_EXACT_MAX) {
		/* may lie across the chunks of a long token */
		return fts_lmdb_special_add(lk, FTS_LMDB_KEY_LONG, fields,
					    set);
	}
	return 0;
}

static uint32_t fts_lmdb_arg_fields(struct fts_lmdb_backend *backend,
				    const struct mail_search_arg *arg)
{
	switch (arg->type) {
	case SEARCH_BODY:
		return FTS_LMDB_FIELD_BODY;
	case SEARCH_TEXT:
		return FTS_LMDB_FIELD_BODY | FTS_LMDB_FIELD_HEADERS;
	case SEARCH_HEADER:
	case SEARCH_HEADER_COMPRESS_LWSP:
		/* an empty value asks whether the header exists */
		if (arg->value.str[0] == '\0')
			return 0;
		return fts_lmdb_settings_header_mask(&backend->set,
						     arg->hdr_field_name);
	case SEARCH_HEADER_ADDRESS:
		if (arg->value.str[0] == '\0')
			return 0;
		return fts_lmdb_settings_address_mask(&backend->set,
						      arg->hdr_field_name);
	default:
		return 0;
	}
}

/* The messages that match the key with certainty, and those that may. */
static int fts_lmdb_lookup_key(struct fts_lmdb_lookup *lk,
			       const unsigned char *q, size_t q_size,
			       uint32_t fields,
			       uint64_t *definite, uint64_t *maybe)
{
	const unsigned char *p, *end = q + q_size, *piece;
	uint64_t *set;
	bool first = TRUE;

	for (p = q; p < end && !FTS_LMDB_IS_SPACE(*p); p++) ;
	if (p == end) {
		if (fts_lmdb_match_tokens(lk, q, q_size,
					  FTS_LMDB_MATCH_CONTAINS, fields,
					  definite) < 0)
			return -1;
		if (q_size > FTS_LMDB_EXACT_MAX) {
			return fts_lmdb_special_add(lk, FTS_LMDB_KEY_LONG,
						    fields, maybe);
		}
		return 0;
	}

	/* "a b c": a token ending in "a", a token "b", one starting with
	   "c" must all be there */
	memcpy(maybe, lk->range, lk->words * sizeof(uint64_t));
	set = fts_lmdb_uidset(lk);
	for (p = q; p <= end;) {
		enum fts_lmdb_match match;

		piece = p;
		while (p < end && !FTS_LMDB_IS_SPACE(*p))
			p++;
		match = first ? FTS_LMDB_MATCH_SUFFIX :
			(p == end ? FTS_LMDB_MATCH_PREFIX :
			 FTS_LMDB_MATCH_EXACT);
		first = FALSE;
		if (p > piece) {
			memset(set, 0, lk->words * sizeof(uint64_t));
			if (fts_lmdb_piece(lk, piece, p - piece, match, fields,
					   set) < 0)
				return -1;
			fts_lmdb_uidset_and(lk, maybe, set);
		}
		if (p == end)
			break;
		while (p < end && FTS_LMDB_IS_SPACE(*p))
			p++;
	}
	return 0;
}

/* 1 if the arg is answered from the index, 0 if it is left to the fts
   plugin's normal search, -1 on error */
static int fts_lmdb_lookup_arg(struct fts_lmdb_lookup *lk,
			       struct mail_search_arg *arg,
			       uint64_t *definite, uint64_t *maybe)
{
	string_t *key;
	uint32_t fields;
	uint64_t *not_definite;

	fields = fts_lmdb_arg_fields(lk->backend, arg);
	if (fields == 0)
		return 0;
	key = t_str_new(strlen(arg->value.str) + 16);
	if (lk->normalizer(arg->value.str, strlen(arg->value.str), key) < 0)
		return 0;

	/* a key that normalizes to nothing matches nothing, as in
	   Dovecot's own search */
	if (str_len(key) > 0 &&
	    fts_lmdb_lookup_key(lk, str_data(key), str_len(key), fields,
				definite, maybe) < 0)
		return -1;

	fts_lmdb_uidset_or(lk, maybe, lk->unindexed);
	fts_lmdb_uidset_and_not(lk, definite, maybe);
	if (arg->match_not) {
		not_definite = fts_lmdb_uidset(lk);
		memcpy(not_definite, lk->range, lk->words * sizeof(uint64_t));
		fts_lmdb_uidset_and_not(lk, not_definite, definite);
		fts_lmdb_uidset_and_not(lk, not_definite, maybe);
		memcpy(definite, not_definite, lk->words * sizeof(uint64_t));
	}
	fts_lmdb_uidset_and(lk, definite, lk->range);
	fts_lmdb_uidset_and(lk, maybe, lk->range);
	arg->match_always = TRUE;
	return 1;
}

static void fts_lmdb_uidset_export(struct fts_lmdb_lookup *lk,
				   const uint64_t *set,
				   ARRAY_TYPE(seq_range) *dest)
{
	uint32_t uid, start = 0;
	bool in_run = FALSE;

	for (uid = 1; uid <= lk->rec.last_uid; uid++) {
		bool bit;

		/* a word of 64 UIDs that doesn't change the run */
		if (uid % 64 == 0 &&
		    set[uid / 64] == (in_run ? (uint64_t)-1 : 0)) {
			uid += 63;
			continue;
		}
		bit = (set[uid / 64] & (1ULL << (uid % 64))) != 0;

		if (bit && !in_run) {
			start = uid;
			in_run = TRUE;
		} else if (!bit && in_run) {
			seq_range_array_add_range(dest, start, uid - 1);
			in_run = FALSE;
		}
	}
	if (in_run)
		seq_range_array_add_range(dest, start, lk->rec.last_uid);
}

static int fts_lmdb_special(struct fts_lmdb_lookup *lk, const char *name,
			    uint64_t **set_r)
{
	*set_r = fts_lmdb_uidset(lk);
	return fts_lmdb_special_add(lk, name, (uint32_t)-1, *set_r);
}

static int fts_lmdb_lookup_level(struct fts_lmdb_lookup *lk,
				 struct mail_search_arg *args, bool and_args,
				 struct fts_result *result)
{
	struct mail_search_arg *arg;
	uint64_t *definite, *maybe, *arg_definite, *arg_maybe;
	ARRAY_TYPE(seq_range) possible;
	uint32_t uid;
	bool handled = FALSE;
	int ret;

	lk->range = fts_lmdb_uidset(lk);
	for (uid = 1; uid <= lk->rec.last_uid; uid++)
		UIDSET_SET(lk->range, uid);
	if (fts_lmdb_special(lk, FTS_LMDB_KEY_UNINDEXED, &lk->unindexed) < 0 ||
	    fts_lmdb_special(lk, FTS_LMDB_KEY_EXPUNGED, &lk->expunged) < 0)
		return -1;
	fts_lmdb_uidset_and_not(lk, lk->range, lk->expunged);

	definite = fts_lmdb_uidset(lk);
	/* for AND: definite, and definite-or-maybe */
	maybe = fts_lmdb_uidset(lk);
	if (and_args) {
		memcpy(definite, lk->range, lk->words * sizeof(uint64_t));
		memcpy(maybe, lk->range, lk->words * sizeof(uint64_t));
	}
	arg_definite = fts_lmdb_uidset(lk);
	arg_maybe = fts_lmdb_uidset(lk);
	for (arg = args; arg != NULL; arg = arg->next) {
		memset(arg_definite, 0, lk->words * sizeof(uint64_t));
		memset(arg_maybe, 0, lk->words * sizeof(uint64_t));
		ret = fts_lmdb_lookup_arg(lk, arg, arg_definite, arg_maybe);
		if (ret < 0)
			return -1;
		if (ret == 0)
			continue;
		handled = TRUE;
		if (and_args) {
			fts_lmdb_uidset_and(lk, definite, arg_definite);
			fts_lmdb_uidset_or(lk, arg_maybe, arg_definite);
			fts_lmdb_uidset_and(lk, maybe, arg_maybe);
		} else {
			fts_lmdb_uidset_or(lk, definite, arg_definite);
			fts_lmdb_uidset_or(lk, maybe, arg_maybe);
		}
	}
	if (!handled)
		return 0;
	fts_lmdb_uidset_or(lk, maybe, definite);
	t_array_init(&possible, 64);
	fts_lmdb_uidset_export(lk, maybe, &possible);
	fts_lmdb_search_level_answered(lk->box, args, &possible,
				       lk->rec.last_uid);

	fts_lmdb_uidset_and_not(lk, maybe, definite);
	fts_lmdb_uidset_export(lk, definite, &result->definite_uids);
	fts_lmdb_uidset_export(lk, maybe, &result->maybe_uids);
	return 0;
}

static void fts_lmdb_lookup_all_maybe(struct fts_lmdb_backend *backend,
				      struct mail_search_arg *args,
				      struct fts_result *result)
{
	struct mail_search_arg *arg;

	/* never a wrong answer: every message becomes "maybe" */
	array_clear(&result->definite_uids);
	array_clear(&result->maybe_uids);
	seq_range_array_add_range(&result->maybe_uids, 1, (uint32_t)-1);
	for (arg = args; arg != NULL; arg = arg->next) {
		if (fts_lmdb_arg_fields(backend, arg) != 0)
			arg->match_always = TRUE;
	}
}

int fts_lmdb_lookup(struct fts_backend *_backend, struct mailbox *box,
		    struct mail_search_arg *args, enum fts_lookup_flags flags,
		    struct fts_result *result)
{
	struct fts_lmdb_backend *backend =
		container_of(_backend, struct fts_lmdb_backend, backend);
	struct fts_lmdb_lookup lk;
	struct mailbox_status status;
	guid_128_t guid;
	int ret;

	i_zero(&lk);
	result->box = box;
	if (backend->db == NULL || backend->rebuild_pending ||
	    fts_lmdb_db_read_ensure(backend->db, &lk.error) < 0) {
		fts_lmdb_lookup_all_maybe(backend, args, result);
		return 0;
	}
	if (fts_lmdb_db_check_free(backend->db, &lk.error) < 0) {
		/* damage that no search reads, but the next write would */
		fts_lmdb_backend_damaged(backend, lk.error);
		fts_lmdb_lookup_all_maybe(backend, args, result);
		return 0;
	}
	if (fts_lmdb_box_guid(box, guid) < 0)
		return -1;
	mailbox_get_open_status(box, STATUS_UIDVALIDITY, &status);

	lk.backend = backend;
	lk.box = box;
	lk.normalizer = box->storage->user->default_normalizer;
	ret = fts_lmdb_box_record_get(backend, guid, &lk.rec, &lk.error);
	if (ret == 0 || (ret > 0 && lk.rec.uid_validity != status.uidvalidity))
		return 0; /* nothing indexed: the plugin reads every mail */
	if (ret > 0) {
		/* the checksums are the costliest part of a scan (half of a
		   search at 100,000 messages): checked once per change */
		lk.stamped = fts_lmdb_db_stamp(backend->db, &lk.stamp);
		lk.blocks_trusted = lk.stamped && backend->blocks_checked &&
			backend->blocks_checked_box_id == lk.rec.box_id &&
			fts_lmdb_db_stamp_equal(&backend->blocks_checked_stamp,
						&lk.stamp);
	}
	if (ret > 0) T_BEGIN {
		lk.words = lk.rec.last_uid / 64 + 1;
		lk.key = t_buffer_create(FTS_LMDB_TOKEN_MAX + 8);
		ret = fts_lmdb_lookup_level(&lk, args,
			(flags & FTS_LOOKUP_FLAG_AND_ARGS) != 0, result);
		if (ret < 0)
			lk.error = t_strdup(lk.error);
	} T_END_PASS_STR_IF(ret < 0, &lk.error);
	if (ret < 0) {
		fts_lmdb_backend_damaged(backend, lk.error);
		fts_lmdb_lookup_all_maybe(backend, args, result);
	}
	return 0;
}

int fts_lmdb_lookup_multi(struct fts_backend *backend,
			  struct mailbox *const boxes[],
			  struct mail_search_arg *args,
			  enum fts_lookup_flags flags,
			  struct fts_multi_result *result)
{
	struct fts_result *box_result;
	unsigned int i, count;

	for (count = 0; boxes[count] != NULL; count++) ;
	result->box_results = p_new(result->pool, struct fts_result,
				    count + 1);
	for (i = 0; i < count; i++) {
		box_result = &result->box_results[i];
		p_array_init(&box_result->definite_uids, result->pool, 32);
		p_array_init(&box_result->maybe_uids, result->pool, 32);
		p_array_init(&box_result->scores, result->pool, 1);
		if (fts_lmdb_lookup(backend, boxes[i], args, flags,
				    box_result) < 0)
			return -1;
	}
	return 0;
}
