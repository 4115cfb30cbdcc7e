/* The sorted token blocks of a mailbox, chained by their keys (a
   block's value: fts-lmdb-block-value.c).

   The first block of a mailbox has the empty token as its key, so that
   every token has a block whose key is at or below it. Every read
   checks what it relies on; damage is reported, never answered from. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "seq-range-array.h"
#include "fts-lmdb-db.h"
#include "fts-lmdb-find.h"
#include "fts-lmdb-backend.h"
#include "fts-lmdb-grams.h"
#include "fts-lmdb-block-value.h"
#include "fts-lmdb-blocks.h"

struct fts_lmdb_block_writer {
	struct fts_lmdb_db *db;
	uint32_t box_id;
	/* the key token of the block being built */
	buffer_t *low;
	struct fts_lmdb_block_builder builder;
	buffer_t *key, *value;
	/* scratch: a token's key and lists, the block being rewritten */
	buffer_t *list_key, *list, *list2, *copy;
	unsigned int count;
	unsigned int blocks;
	/* the tokens new to the mailbox */
	struct fts_lmdb_grams *grams;
};

static int fts_lmdb_blocks_damaged(struct fts_lmdb_db *db, const char *what,
				   const char **error_r)
{
	fts_lmdb_db_set_corrupted(db);
	*error_r = what;
	return -1;
}

/* The block whose range holds token, read into block_r: 1 if found, 0 if
   the mailbox has no blocks, -1 on error or damage. */
static int fts_lmdb_block_floor(struct fts_lmdb_db *db, uint32_t box_id,
				uint32_t block_count,
				const unsigned char *token, size_t size,
				buffer_t *key, buffer_t *text,
				struct fts_lmdb_block *block_r,
				const char **error_r)
{
	const void *k, *data;
	size_t key_size, data_size, prefix_size;
	int ret;

	fts_lmdb_token_key(key, box_id, token, size);
	prefix_size = key->used - size;
	ret = fts_lmdb_db_get_floor(db, FTS_LMDB_DBI_BLOCKS, key->data,
				    key->used, &k, &key_size, &data,
				    &data_size, error_r);
	if (ret < 0)
		return -1;
	if (ret == 0 || key_size < prefix_size ||
	    memcmp(k, key->data, prefix_size) != 0) {
		if (block_count == 0)
			return 0;
		return fts_lmdb_blocks_damaged(db,
			"the mailbox's first block is missing", error_r);
	}
	if (fts_lmdb_block_parse(prefix_size, k, key_size, data, data_size,
				 text, block_r) < 0)
		return fts_lmdb_blocks_damaged(db, "damaged block", error_r);
	/* had the block that the found one names been there, it would
	   have been found */
	if (!block_r->last &&
	    fts_lmdb_token_cmp(token, size, block_r->next,
			       block_r->next_size) >= 0) {
		return fts_lmdb_blocks_damaged(db,
			"a block of the chain is missing", error_r);
	}
	return 1;
}

static int fts_lmdb_block_scan(struct fts_lmdb_db *db,
			       const struct fts_lmdb_block *block,
			       const unsigned char *q, size_t q_size,
			       enum fts_lmdb_match match,
			       fts_lmdb_block_entry_callback_t *callback,
			       void *context, const char **error_r)
{
	struct fts_lmdb_block_iter iter;
	struct fts_lmdb_block_entry entry;
	const unsigned char *p, *hit;
	bool have = FALSE;

	fts_lmdb_block_iter_init(&iter, block);
	for (p = block->text; p < block->text_end; ) {
		hit = fts_lmdb_find(p, block->text_end - p, q, q_size);
		if (hit == NULL)
			break;
		/* q has no '\n': the hit is inside one token */
		while (!have || entry.token + entry.size <= hit) {
			if (fts_lmdb_block_iter_next(&iter, &entry) <= 0) {
				return fts_lmdb_blocks_damaged(db,
					"damaged block", error_r);
			}
			have = TRUE;
		}
		p = entry.token + entry.size + 1;
		if (match == FTS_LMDB_MATCH_SUFFIX &&
		    (entry.size < q_size ||
		     memcmp(entry.token + entry.size - q_size, q,
			    q_size) != 0))
			continue;
		if (callback(context, &entry, error_r) < 0)
			return -1;
	}
	return 0;
}

/* Walks every block of a mailbox in key order, requiring each to be the
   one the previous block named, the first to have the empty key, the
   last to name none, and as many as the mailbox's record counts. */
/* Blocks read ahead of the one being scanned: each is a page of its
   own, which a scan after other work (its caches cold) waits for, page
   walk and all. Asking for them a few blocks early overlaps those
   waits. */
#define FTS_LMDB_CHAIN_AHEAD 4

struct fts_lmdb_chain_entry {
	const void *key, *data;
	size_t key_size, size;
};

struct fts_lmdb_chain {
	struct fts_lmdb_db *db;
	struct fts_lmdb_db_iter *iter;
	buffer_t *prefix, *expected, *text;
	uint32_t block_count, seen;
	struct fts_lmdb_chain_entry ahead[FTS_LMDB_CHAIN_AHEAD];
	unsigned int ahead_first, ahead_count, ahead_max;
	bool iter_done;
	bool more;
	bool failed;
};

static void fts_lmdb_chain_fill(struct fts_lmdb_chain *chain)
{
	struct fts_lmdb_chain_entry *e;

	while (!chain->iter_done && chain->ahead_count < chain->ahead_max) {
		e = &chain->ahead[(chain->ahead_first + chain->ahead_count) %
				  FTS_LMDB_CHAIN_AHEAD];
		if (!fts_lmdb_db_iter_next(chain->iter, &e->key, &e->key_size,
					   &e->data, &e->size)) {
			chain->iter_done = TRUE;
			break;
		}
		__builtin_prefetch(e->data);
		__builtin_prefetch(CONST_PTR_OFFSET(e->data, 64));
		chain->ahead_count++;
	}
}

/* read_ahead only in a read transaction: a write changes the pages that
   blocks read ahead lie in. */
static void fts_lmdb_chain_init(struct fts_lmdb_chain *chain,
				struct fts_lmdb_db *db, uint32_t box_id,
				uint32_t block_count, bool read_ahead)
{
	i_zero(chain);
	chain->db = db;
	chain->ahead_max = read_ahead ? FTS_LMDB_CHAIN_AHEAD : 1;
	chain->block_count = block_count;
	chain->more = TRUE;
	chain->prefix = t_buffer_create(8);
	chain->expected = t_buffer_create(FTS_LMDB_TOKEN_MAX);
	chain->text = t_buffer_create(FTS_LMDB_BLOCK_MAX * 2);
	fts_lmdb_token_key(chain->prefix, box_id, "", 0);
	chain->iter = fts_lmdb_db_iter_init(db, FTS_LMDB_DBI_BLOCKS,
					    chain->prefix->data,
					    chain->prefix->used);
}

/* FALSE at the end, or on damage (chain->failed, error_r set) */
static bool fts_lmdb_chain_next(struct fts_lmdb_chain *chain,
				struct fts_lmdb_block *block_r,
				const char **error_r)
{
	const struct fts_lmdb_chain_entry *e;

	if (chain->failed)
		return FALSE;
	fts_lmdb_chain_fill(chain);
	if (chain->ahead_count == 0)
		return FALSE;
	e = &chain->ahead[chain->ahead_first];
	chain->ahead_first = (chain->ahead_first + 1) % FTS_LMDB_CHAIN_AHEAD;
	chain->ahead_count--;
	if (fts_lmdb_block_parse(chain->prefix->used, e->key, e->key_size,
				 e->data, e->size, chain->text, block_r) < 0) {
		chain->failed = TRUE;
		(void)fts_lmdb_blocks_damaged(chain->db, "damaged block",
					      error_r);
		return FALSE;
	}
	if (!chain->more ||
	    fts_lmdb_token_cmp(block_r->low, block_r->low_size,
			       chain->expected->data,
			       chain->expected->used) != 0) {
		chain->failed = TRUE;
		(void)fts_lmdb_blocks_damaged(chain->db,
			"a block of the chain is missing", error_r);
		return FALSE;
	}
	chain->seen++;
	chain->more = !block_r->last;
	buffer_set_used_size(chain->expected, 0);
	if (!block_r->last) {
		buffer_append(chain->expected, block_r->next,
			      block_r->next_size);
	}
	return TRUE;
}

/* ret is the caller's result so far: -1 stays -1 */
static int fts_lmdb_chain_deinit(struct fts_lmdb_chain *chain, int ret,
				 const char **error_r)
{
	if (fts_lmdb_db_iter_deinit(&chain->iter, error_r) < 0)
		return -1;
	if (chain->failed || ret < 0)
		return -1;
	if (chain->seen != chain->block_count ||
	    (chain->seen > 0 && chain->more)) {
		return fts_lmdb_blocks_damaged(chain->db,
			"a block of the chain is missing", error_r);
	}
	return 0;
}

static int fts_lmdb_blocks_scan(struct fts_lmdb_db *db, uint32_t box_id,
				uint32_t block_count,
				const unsigned char *q, size_t q_size,
				enum fts_lmdb_match match,
				fts_lmdb_block_entry_callback_t *callback,
				void *context, const char **error_r)
{
	struct fts_lmdb_chain chain;
	struct fts_lmdb_block block;
	int ret = 0;

	fts_lmdb_chain_init(&chain, db, box_id, block_count, TRUE);
	while (fts_lmdb_chain_next(&chain, &block, error_r)) {
		if (fts_lmdb_block_scan(db, &block, q, q_size, match,
					callback, context, error_r) < 0) {
			ret = -1;
			break;
		}
	}
	return fts_lmdb_chain_deinit(&chain, ret, error_r);
}

/* Exact and prefix lookups: from the block whose range holds q, along
   the chain while tokens may start with q. */
static int fts_lmdb_blocks_seek(struct fts_lmdb_db *db, uint32_t box_id,
				uint32_t block_count,
				const unsigned char *q, size_t q_size,
				enum fts_lmdb_match match,
				buffer_t *key, buffer_t *text,
				fts_lmdb_block_entry_callback_t *callback,
				void *context, const char **error_r)
{
	struct fts_lmdb_block block;
	struct fts_lmdb_block_iter iter;
	struct fts_lmdb_block_entry entry;
	const void *data;
	size_t size;
	int ret, cmp;

	ret = fts_lmdb_block_floor(db, box_id, block_count, q, q_size, key,
				   text, &block, error_r);
	if (ret <= 0)
		return ret;
	for (;;) {
		fts_lmdb_block_iter_init(&iter, &block);
		while ((ret = fts_lmdb_block_iter_next(&iter, &entry)) > 0) {
			cmp = fts_lmdb_token_cmp(entry.token, entry.size,
						 q, q_size);
			if (cmp < 0)
				continue;
			if (match == FTS_LMDB_MATCH_EXACT) {
				if (cmp > 0)
					return 0;
			} else if (entry.size < q_size ||
				   memcmp(entry.token, q, q_size) != 0)
				return 0;
			if (callback(context, &entry, error_r) < 0)
				return -1;
			if (match == FTS_LMDB_MATCH_EXACT)
				return 0;
		}
		if (ret < 0)
			return fts_lmdb_blocks_damaged(db, "damaged block",
						       error_r);
		if (match == FTS_LMDB_MATCH_EXACT || block.last ||
		    block.next_size < q_size ||
		    memcmp(block.next, q, q_size) != 0)
			return 0;
		fts_lmdb_token_key(key, box_id, block.next, block.next_size);
		ret = fts_lmdb_db_get(db, FTS_LMDB_DBI_BLOCKS, key->data,
				      key->used, &data, &size, error_r);
		if (ret < 0)
			return -1;
		if (ret == 0) {
			return fts_lmdb_blocks_damaged(db,
				"a block of the chain is missing", error_r);
		}
		if (fts_lmdb_block_parse(key->used - block.next_size,
					 key->data, key->used, data, size,
					 text, &block) < 0)
			return fts_lmdb_blocks_damaged(db, "damaged block",
						       error_r);
	}
}

struct fts_lmdb_substring {
	const unsigned char *q;
	size_t q_size;
	enum fts_lmdb_match match;
	fts_lmdb_block_entry_callback_t *callback;
	void *context;
};

/* The tokens of a prefix that hold the substring, as a scan finds them */
static int fts_lmdb_substring_entry(void *context,
				    const struct fts_lmdb_block_entry *entry,
				    const char **error_r)
{
	struct fts_lmdb_substring *sub = context;

	if (sub->match == FTS_LMDB_MATCH_SUFFIX) {
		if (entry->size < sub->q_size ||
		    memcmp(entry->token + entry->size - sub->q_size, sub->q,
			   sub->q_size) != 0)
			return 0;
	} else if (fts_lmdb_find(entry->token, entry->size, sub->q,
				 sub->q_size) == NULL)
		return 0;
	return sub->callback(sub->context, entry, error_r);
}

/* Substring lookups through the trigram filter: the tokens of each
   prefix it names, from the block whose range holds the prefix. */
static int fts_lmdb_blocks_filtered(struct fts_lmdb_db *db, uint32_t box_id,
				    uint32_t block_count,
				    const unsigned char *q, size_t q_size,
				    enum fts_lmdb_match match,
				    const ARRAY_TYPE(fts_lmdb_prefix) *prefixes,
				    fts_lmdb_block_entry_callback_t *callback,
				    void *context, const char **error_r)
{
	struct fts_lmdb_substring sub = {
		.q = q, .q_size = q_size, .match = match,
		.callback = callback, .context = context,
	};
	buffer_t *key = t_buffer_create(FTS_LMDB_TOKEN_MAX + 8);
	buffer_t *text = t_buffer_create(FTS_LMDB_BLOCK_MAX * 2);
	unsigned char prefix[3];
	uint32_t p;

	array_foreach_elem(prefixes, p) {
		prefix[0] = p >> 16;
		prefix[1] = (p >> 8) & 0xff;
		prefix[2] = p & 0xff;
		if (fts_lmdb_blocks_seek(db, box_id, block_count, prefix,
					 sizeof(prefix), FTS_LMDB_MATCH_PREFIX,
					 key, text, fts_lmdb_substring_entry, &sub,
					 error_r) < 0)
			return -1;
	}
	return 0;
}

int fts_lmdb_blocks_find(struct fts_lmdb_db *db, uint32_t box_id,
			 uint32_t block_count,
			 const unsigned char *q, size_t q_size,
			 enum fts_lmdb_match match,
			 fts_lmdb_block_entry_callback_t *callback,
			 void *context, bool *chain_checked_r,
			 const char **error_r)
{
	ARRAY_TYPE(fts_lmdb_prefix) prefixes;
	int ret;

	*chain_checked_r = FALSE;
	switch (match) {
	case FTS_LMDB_MATCH_CONTAINS:
	case FTS_LMDB_MATCH_SUFFIX:
		t_array_init(&prefixes, 64);
		ret = fts_lmdb_grams_find(db, box_id, q, q_size, &prefixes,
					  error_r);
		if (ret < 0)
			return -1;
		if (ret > 0 && array_count(&prefixes) *
		    FTS_LMDB_BLOCKS_FILTER_RATIO <= block_count) {
			return fts_lmdb_blocks_filtered(db, box_id,
				block_count, q, q_size, match, &prefixes,
				callback, context, error_r);
		}
		*chain_checked_r = TRUE;
		return fts_lmdb_blocks_scan(db, box_id, block_count, q,
					    q_size, match, callback, context,
					    error_r);
	case FTS_LMDB_MATCH_PREFIX:
	case FTS_LMDB_MATCH_EXACT:
		return fts_lmdb_blocks_seek(db, box_id, block_count, q,
					    q_size, match,
					    t_buffer_create(FTS_LMDB_TOKEN_MAX + 8),
					    t_buffer_create(FTS_LMDB_BLOCK_MAX * 2),
					    callback, context, error_r);
	}
	i_unreached();
}

/* ------------------------------------------------------------ writing */

static void fts_lmdb_block_writer_init(struct fts_lmdb_block_writer *w,
				       struct fts_lmdb_db *db,
				       uint32_t box_id)
{
	i_zero(w);
	w->db = db;
	w->box_id = box_id;
	w->low = t_buffer_create(FTS_LMDB_TOKEN_MAX);
	fts_lmdb_block_builder_init(&w->builder);
	w->key = t_buffer_create(FTS_LMDB_TOKEN_MAX + 8);
	w->value = t_buffer_create(FTS_LMDB_BLOCK_MAX * 2);
	w->list_key = t_buffer_create(FTS_LMDB_TOKEN_MAX + 8);
	w->list = t_buffer_create(256);
	w->list2 = t_buffer_create(256);
	w->copy = t_buffer_create(FTS_LMDB_BLOCK_MAX * 2);
}

static void fts_lmdb_block_writer_start(struct fts_lmdb_block_writer *w,
					const unsigned char *low,
					size_t low_size)
{
	buffer_set_used_size(w->low, 0);
	buffer_append(w->low, low, low_size);
	fts_lmdb_block_builder_start(&w->builder);
}

static int fts_lmdb_block_writer_put(struct fts_lmdb_block_writer *w,
				     const unsigned char *next,
				     size_t next_size, bool last,
				     const char **error_r)
{
	fts_lmdb_block_builder_finish(&w->builder, next, next_size, last,
				      w->value);
	fts_lmdb_token_key(w->key, w->box_id, w->low->data, w->low->used);
	w->blocks++;
	return fts_lmdb_db_put(w->db, FTS_LMDB_DBI_BLOCKS, w->key->data,
			       w->key->used, w->value->data, w->value->used,
			       error_r);
}

static int fts_lmdb_block_writer_add(struct fts_lmdb_block_writer *w,
				     const struct fts_lmdb_block_entry *entry,
				     const char **error_r)
{
	if (!fts_lmdb_block_builder_fits(&w->builder, entry)) {
		if (fts_lmdb_block_writer_put(w, entry->token, entry->size,
					      FALSE, error_r) < 0)
			return -1;
		fts_lmdb_block_writer_start(w, entry->token, entry->size);
	}
	fts_lmdb_block_builder_add(&w->builder, entry);
	return 0;
}

/* The list kept under the token's own key, copied into value. */
static int fts_lmdb_blocks_external(struct fts_lmdb_db *db, uint32_t box_id,
				    const unsigned char *token, size_t size,
				    buffer_t *key, buffer_t *value,
				    const char **error_r)
{
	const void *data;
	size_t data_size;
	int ret;

	fts_lmdb_token_key(key, box_id, token, size);
	ret = fts_lmdb_db_get(db, FTS_LMDB_DBI_TOKENS, key->data, key->used,
			      &data, &data_size, error_r);
	if (ret < 0)
		return -1;
	if (ret == 0) {
		return fts_lmdb_blocks_damaged(db,
			"a block's token has no posting list", error_r);
	}
	buffer_set_used_size(value, 0);
	buffer_append(value, data, data_size);
	return 0;
}

/* Writes value as the list of token: in the block if it is short and
   was there, else under the token's key. */
static int fts_lmdb_blocks_write_list(struct fts_lmdb_block_writer *w,
				      const unsigned char *token, size_t size,
				      const buffer_t *value, bool external,
				      const char **error_r)
{
	struct fts_lmdb_block_entry entry;

	entry.token = token;
	entry.size = size;
	if (!external && value->used <= FTS_LMDB_BLOCK_POSTINGS_MAX) {
		entry.postings = value->data;
		entry.postings_size = value->used;
	} else {
		entry.postings = NULL;
		entry.postings_size = 0;
		fts_lmdb_token_key(w->list_key, w->box_id, token, size);
		if (fts_lmdb_db_put(w->db, FTS_LMDB_DBI_TOKENS,
				    w->list_key->data, w->list_key->used,
				    value->data, value->used, error_r) < 0)
			return -1;
	}
	return fts_lmdb_block_writer_add(w, &entry, error_r);
}

/* One token of the input, merged with its entry in the block if any. */
static int fts_lmdb_blocks_merge(struct fts_lmdb_block_writer *w,
				 const struct fts_lmdb_block_entry *old,
				 const unsigned char *token, size_t size,
				 const struct fts_lmdb_blocks_input *input,
				 unsigned int idx, const char **error_r)
{
	struct fts_lmdb_posting_header hdr;
	buffer_t *value = w->list;
	bool external = FALSE;

	i_zero(&hdr);
	buffer_set_used_size(value, 0);
	if (old != NULL) {
		if (old->postings == NULL) {
			external = TRUE;
			if (fts_lmdb_blocks_external(w->db, w->box_id, token,
						     size, w->list_key, value,
						     error_r) < 0)
				return -1;
		} else {
			buffer_append(value, old->postings,
				      old->postings_size);
		}
		if (fts_lmdb_postings_header(value->data, value->used,
					     &hdr) < 0 || hdr.count == 0) {
			return fts_lmdb_blocks_damaged(w->db,
				"damaged posting list", error_r);
		}
	}
	input->append(input->context, idx, value, &hdr);
	if (old == NULL)
		fts_lmdb_grams_add_token(w->grams, token, size);
	return fts_lmdb_blocks_write_list(w, token, size, value, external,
					  error_r);
}

/* A copy of what the block has in the map into buf: the writes move
   what the map holds. (Its text is decoded already.) */
static void fts_lmdb_block_copy(struct fts_lmdb_block *block, buffer_t *buf)
{
	const unsigned char *p;

	buffer_set_used_size(buf, 0);
	buffer_append(buf, block->low, block->low_size);
	if (!block->last)
		buffer_append(buf, block->next, block->next_size);
	buffer_append(buf, block->postings, block->end - block->postings);
	p = buf->data;
	block->low = p;
	if (!block->last)
		block->next = p + block->low_size;
	block->postings = p + block->low_size + block->next_size;
	block->end = p + buf->used;
}

/* Every token of the mailbox into grams, along the chain (in a write
   transaction: no read-ahead). */
static int fts_lmdb_blocks_all_grams(struct fts_lmdb_db *db, uint32_t box_id,
				     uint32_t block_count,
				     struct fts_lmdb_grams *grams,
				     const char **error_r)
{
	struct fts_lmdb_chain chain;
	struct fts_lmdb_block block;
	struct fts_lmdb_block_iter iter;
	struct fts_lmdb_block_entry entry;
	int ret = 0;

	fts_lmdb_chain_init(&chain, db, box_id, block_count, FALSE);
	while (ret == 0 && fts_lmdb_chain_next(&chain, &block, error_r)) {
		fts_lmdb_block_iter_init(&iter, &block);
		while ((ret = fts_lmdb_block_iter_next(&iter, &entry)) > 0)
			fts_lmdb_grams_add_token(grams, entry.token,
						 entry.size);
		if (ret < 0)
			ret = fts_lmdb_blocks_damaged(db, "damaged block",
						      error_r);
	}
	return fts_lmdb_chain_deinit(&chain, ret, error_r);
}

static int fts_lmdb_blocks_add_input(struct fts_lmdb_db *db, uint32_t box_id,
				     uint32_t *block_count,
				     const struct fts_lmdb_blocks_input *input,
				     struct fts_lmdb_grams *grams,
				     const char **error_r)
{
	struct fts_lmdb_block_writer w;
	struct fts_lmdb_block block;
	struct fts_lmdb_block_iter iter;
	struct fts_lmdb_block_entry old;
	buffer_t *key = t_buffer_create(FTS_LMDB_TOKEN_MAX + 8);
	buffer_t *text = t_buffer_create(FTS_LMDB_BLOCK_MAX * 2);
	const unsigned char *token;
	size_t size;
	unsigned int i = 0;
	bool existed, have_old, have_new;
	int ret, cmp;

	fts_lmdb_block_writer_init(&w, db, box_id);
	w.grams = grams;
	while (i < input->count) {
		input->token(input->context, i, &token, &size);
		ret = fts_lmdb_block_floor(db, box_id, *block_count, token,
					   size, key, text, &block, error_r);
		if (ret < 0)
			return -1;
		existed = ret > 0;
		if (existed)
			fts_lmdb_block_copy(&block, w.copy);
		else {
			i_zero(&block);
			block.low = (const unsigned char *)"";
			block.last = TRUE;
		}
		w.blocks = 0;
		fts_lmdb_block_writer_start(&w, block.low, block.low_size);
		fts_lmdb_block_iter_init(&iter, &block);
		if ((ret = fts_lmdb_block_iter_next(&iter, &old)) < 0)
			return fts_lmdb_blocks_damaged(db, "damaged block",
						       error_r);
		have_old = ret > 0;
		for (;;) {
			have_new = i < input->count;
			if (have_new) {
				input->token(input->context, i, &token, &size);
				have_new = block.last ||
					fts_lmdb_token_cmp(token, size,
							   block.next,
							   block.next_size) < 0;
			}
			if (!have_old && !have_new)
				break;
			cmp = !have_new ? 1 : (!have_old ? -1 :
				fts_lmdb_token_cmp(token, size, old.token,
						   old.size));
			if (cmp > 0)
				ret = fts_lmdb_block_writer_add(&w, &old,
								error_r);
			else {
				ret = fts_lmdb_blocks_merge(&w,
					cmp == 0 ? &old : NULL, token, size,
					input, i, error_r);
				i++;
			}
			if (ret < 0)
				return -1;
			if (cmp >= 0) {
				if ((ret = fts_lmdb_block_iter_next(&iter,
								    &old)) < 0)
					return fts_lmdb_blocks_damaged(db,
						"damaged block", error_r);
				have_old = ret > 0;
			}
		}
		if (fts_lmdb_block_writer_put(&w, block.next, block.next_size,
					      block.last, error_r) < 0)
			return -1;
		*block_count += w.blocks - (existed ? 1 : 0);
	}
	return 0;
}

int fts_lmdb_blocks_add(struct fts_lmdb_db *db, uint32_t box_id,
			uint32_t *block_count, uint32_t grams_min_blocks,
			const struct fts_lmdb_blocks_input *input,
			const char **error_r)
{
	struct fts_lmdb_grams *grams = fts_lmdb_grams_init();
	uint32_t old_count = *block_count;
	int ret;

	ret = fts_lmdb_blocks_add_input(db, box_id, block_count, input,
					grams, error_r);
	/* in the same transaction as the blocks: a token in a block is
	   always under its trigrams */
	if (ret == 0)
		ret = fts_lmdb_grams_exist(db, box_id, error_r);
	if (ret == 0 && *block_count >= grams_min_blocks && old_count > 0) {
		/* the mailbox grew past the threshold: the filter needs
		   all of its tokens, not only the new ones */
		fts_lmdb_grams_reset(grams);
		ret = fts_lmdb_blocks_all_grams(db, box_id, *block_count,
						grams, error_r);
		if (ret == 0)
			ret = 1;
	} else if (ret == 0 && *block_count >= grams_min_blocks)
		ret = 1;
	if (ret > 0)
		ret = fts_lmdb_grams_write(grams, db, box_id, error_r);
	fts_lmdb_grams_deinit(&grams);
	return ret;
}

/* The list without the expunged UIDs, into value. */
static int fts_lmdb_blocks_filter(const unsigned char *data, size_t size,
				  const ARRAY_TYPE(seq_range) *expunged,
				  buffer_t *value)
{
	struct fts_lmdb_postings_iter piter;
	struct fts_lmdb_posting_header hdr;
	uint32_t uid, mask;

	i_zero(&hdr);
	buffer_set_used_size(value, 0);
	fts_lmdb_postings_iter_init(&piter, data, size);
	while (fts_lmdb_postings_iter_next(&piter, &uid, &mask)) {
		if (!seq_range_exists(expunged, uid))
			fts_lmdb_postings_append(value, &hdr, uid, mask);
	}
	return piter.failed ? -1 : 0;
}

static int fts_lmdb_block_purge(struct fts_lmdb_block_writer *w,
				const struct fts_lmdb_block *block,
				const ARRAY_TYPE(seq_range) *expunged,
				const char **error_r)
{
	struct fts_lmdb_block_iter iter;
	struct fts_lmdb_block_entry entry;
	buffer_t *list = w->list, *value = w->list2, *key = w->list_key;
	bool external;
	int ret;

	fts_lmdb_block_writer_start(w, block->low, block->low_size);
	fts_lmdb_block_iter_init(&iter, block);
	while ((ret = fts_lmdb_block_iter_next(&iter, &entry)) > 0) {
		external = entry.postings == NULL;
		if (!external) {
			buffer_set_used_size(list, 0);
			buffer_append(list, entry.postings,
				      entry.postings_size);
		} else if (fts_lmdb_blocks_external(w->db, w->box_id,
						    entry.token, entry.size,
						    key, list, error_r) < 0)
			return -1;
		if (fts_lmdb_blocks_filter(list->data, list->used, expunged,
					   value) < 0) {
			return fts_lmdb_blocks_damaged(w->db,
				"damaged posting list", error_r);
		}
		if (value->used > 0) {
			if (fts_lmdb_blocks_write_list(w, entry.token,
						       entry.size, value,
						       external, error_r) < 0)
				return -1;
		} else if (external) {
			fts_lmdb_token_key(key, w->box_id, entry.token,
					   entry.size);
			if (fts_lmdb_db_del(w->db, FTS_LMDB_DBI_TOKENS,
					    key->data, key->used,
					    error_r) < 0)
				return -1;
		}
	}
	if (ret < 0)
		return fts_lmdb_blocks_damaged(w->db, "damaged block", error_r);
	return fts_lmdb_block_writer_put(w, block->next, block->next_size,
					 block->last, error_r);
}

int fts_lmdb_blocks_purge(struct fts_lmdb_db *db, uint32_t box_id,
			  uint32_t block_count,
			  const ARRAY_TYPE(seq_range) *expunged,
			  const char **error_r)
{
	struct fts_lmdb_chain chain;
	struct fts_lmdb_block_writer w;
	struct fts_lmdb_block block;
	int ret = 0;

	fts_lmdb_block_writer_init(&w, db, box_id);
	fts_lmdb_chain_init(&chain, db, box_id, block_count, FALSE);
	/* Each block is rewritten under its own key with less in it, so
	   the chain stays as it is (an emptied block stays, empty) and no
	   block is split. LMDB keeps the cursor valid across the puts. */
	while (fts_lmdb_chain_next(&chain, &block, error_r)) {
		fts_lmdb_block_copy(&block, w.copy);
		if (fts_lmdb_block_purge(&w, &block, expunged, error_r) < 0) {
			ret = -1;
			break;
		}
	}
	return fts_lmdb_chain_deinit(&chain, ret, error_r);
}
