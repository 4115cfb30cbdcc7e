/* The trigram filter's keys, per mailbox (the box id numpacked, as in
   every key):

     box id               the head: the mailbox has a filter
     box id + 3 bytes     a page: the lowest trigram it may hold

   A page, which fills about one 4 KB LMDB overflow page, holds
   trigrams and their lists of prefixes (fts-lmdb-grams-page.c).

   The first page's key is trigram 0, so that every trigram has a page
   at or below it, and every page names the next one's key: a lookup
   that finds a page naming a key at or below the trigram has lost the
   page between. Pages of one size pack LMDB's pages full, where a
   value per two-byte bucket filled them to 71% (docs/fts_lmdb.md
   "Trigrams"). Every read checks what it relies on; damage is
   reported, never answered from. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "sort.h"
#include "fts-lmdb-db.h"
#include "fts-lmdb-backend.h"
#include "fts-lmdb-grams-page.h"
#include "fts-lmdb-grams.h"

struct fts_lmdb_grams {
	/* trigram << 24 | prefix */
	ARRAY_TYPE(uint64_t) pairs;
	/* the trigrams of the tokens of group_prefix */
	ARRAY(uint32_t) group;
	uint32_t group_prefix;
};

static int fts_lmdb_grams_damaged(struct fts_lmdb_db *db, const char *what,
				  const char **error_r)
{
	fts_lmdb_db_set_corrupted(db);
	*error_r = what;
	return -1;
}

struct fts_lmdb_grams *fts_lmdb_grams_init(void)
{
	struct fts_lmdb_grams *grams;

	grams = i_new(struct fts_lmdb_grams, 1);
	i_array_init(&grams->pairs, 1024);
	i_array_init(&grams->group, 256);
	return grams;
}

void fts_lmdb_grams_deinit(struct fts_lmdb_grams **_grams)
{
	struct fts_lmdb_grams *grams = *_grams;

	*_grams = NULL;
	array_free(&grams->pairs);
	array_free(&grams->group);
	i_free(grams);
}

/* The tokens of one prefix share most of their trigrams: keeping each
   pair once per prefix is what keeps a build's pairs small. */
static void fts_lmdb_grams_flush_group(struct fts_lmdb_grams *grams)
{
	const uint32_t *g;
	unsigned int i, count;
	uint64_t pair;

	array_sort(&grams->group, uint32_cmp);
	g = array_get(&grams->group, &count);
	for (i = 0; i < count; i++) {
		if (i > 0 && g[i] == g[i - 1])
			continue;
		pair = ((uint64_t)g[i] << 24) | grams->group_prefix;
		array_push_back(&grams->pairs, &pair);
	}
	array_clear(&grams->group);
}

void fts_lmdb_grams_add_token(struct fts_lmdb_grams *grams,
			      const unsigned char *token, size_t size)
{
	uint32_t prefix, gram;
	size_t i;

	if (size < 3)
		return;
	prefix = fts_lmdb_gram_at(token);
	if (array_count(&grams->group) > 0 && prefix != grams->group_prefix)
		fts_lmdb_grams_flush_group(grams);
	grams->group_prefix = prefix;
	for (i = 0; i + 3 <= size; i++) {
		gram = fts_lmdb_gram_at(token + i);
		array_push_back(&grams->group, &gram);
	}
}

void fts_lmdb_grams_reset(struct fts_lmdb_grams *grams)
{
	array_clear(&grams->pairs);
	array_clear(&grams->group);
}

static void fts_lmdb_grams_unique(ARRAY_TYPE(uint64_t) *pairs)
{
	uint64_t *p;
	unsigned int i, n = 0, count;

	array_sort(pairs, uint64_cmp);
	p = array_get_modifiable(pairs, &count);
	for (i = 0; i < count; i++) {
		if (n == 0 || p[i] != p[n - 1])
			p[n++] = p[i];
	}
	array_delete(pairs, n, count - n);
}

/* The page whose range holds gram: 1 if found, -1 on error or damage
   (the caller knows the mailbox has a filter, so a lookup that lands
   outside its pages has lost one). */
static int fts_lmdb_grams_page_floor(struct fts_lmdb_db *db, uint32_t box_id,
				     uint32_t gram, buffer_t *key,
				     struct fts_lmdb_grams_page *page_r,
				     const char **error_r)
{
	const unsigned char bytes[3] = { gram >> 16, (gram >> 8) & 0xff,
					 gram & 0xff };
	const void *k, *data;
	size_t key_size, data_size, prefix_size;
	int ret;

	fts_lmdb_token_key(key, box_id, bytes, sizeof(bytes));
	prefix_size = key->used - sizeof(bytes);
	ret = fts_lmdb_db_get_floor(db, FTS_LMDB_DBI_GRAMS, key->data,
				    key->used, &k, &key_size, &data,
				    &data_size, error_r);
	if (ret < 0)
		return -1;
	if (ret == 0 || key_size != key->used ||
	    memcmp(k, key->data, prefix_size) != 0) {
		/* the head, or another mailbox's key */
		return fts_lmdb_grams_damaged(db,
			"a trigram page is missing", error_r);
	}
	if (fts_lmdb_grams_page_parse(CONST_PTR_OFFSET(k, prefix_size), data,
				      data_size, page_r) < 0) {
		return fts_lmdb_grams_damaged(db, "damaged trigram page",
					      error_r);
	}
	/* had the page that the found one names been there, it would have
	   been found */
	if (!page_r->last && gram >= page_r->next) {
		return fts_lmdb_grams_damaged(db,
			"a trigram page is missing", error_r);
	}
	return 1;
}

/* 1 if the mailbox has a filter, 0 if not */
static int fts_lmdb_grams_head(struct fts_lmdb_db *db, uint32_t box_id,
			       buffer_t *key, const char **error_r)
{
	const void *data;
	size_t size;
	int ret;

	fts_lmdb_token_key(key, box_id, "", 0);
	ret = fts_lmdb_db_get(db, FTS_LMDB_DBI_GRAMS, key->data, key->used,
			      &data, &size, error_r);
	if (ret <= 0)
		return ret;
	if (size != 1 || *(const unsigned char *)data != 1) {
		return fts_lmdb_grams_damaged(db, "damaged trigram head",
					      error_r);
	}
	return 1;
}

int fts_lmdb_grams_exist(struct fts_lmdb_db *db, uint32_t box_id,
			 const char **error_r)
{
	return fts_lmdb_grams_head(db, box_id, t_buffer_create(16), error_r);
}

struct fts_lmdb_grams_writer {
	struct fts_lmdb_db *db;
	uint32_t box_id;
	struct fts_lmdb_grams_page_builder builder;
	buffer_t *key, *old, *list, *value;
	ARRAY_TYPE(fts_lmdb_prefix) scratch, merged;
};

static int fts_lmdb_grams_writer_put(struct fts_lmdb_grams_writer *w,
				     uint32_t next, bool last,
				     const char **error_r)
{
	uint32_t first = w->builder.low;
	const unsigned char low[3] = { first >> 16, (first >> 8) & 0xff,
				       first & 0xff };

	fts_lmdb_grams_page_builder_finish(&w->builder, next, last, w->value);
	fts_lmdb_token_key(w->key, w->box_id, low, sizeof(low));
	return fts_lmdb_db_put(w->db, FTS_LMDB_DBI_GRAMS, w->key->data,
			       w->key->used, w->value->data, w->value->used,
			       error_r);
}

/* Adds the trigram with its list (w->list) to the page being written,
   starting a page at the trigram when this one is full. */
static int fts_lmdb_grams_writer_add(struct fts_lmdb_grams_writer *w,
				     uint32_t gram, const char **error_r)
{
	if (!fts_lmdb_grams_page_builder_fits(&w->builder, gram,
					      w->list->used)) {
		if (fts_lmdb_grams_writer_put(w, gram, FALSE, error_r) < 0)
			return -1;
		fts_lmdb_grams_page_builder_start(&w->builder, gram);
	}
	fts_lmdb_grams_page_builder_add(&w->builder, gram, w->list->data,
					w->list->used);
	return 0;
}

/* Merges the pairs up to the page's end into the page, rewriting it (and
   splitting it if it outgrows its size); *idx moves past them. */
static int fts_lmdb_grams_page_merge(struct fts_lmdb_grams_writer *w,
				     const struct fts_lmdb_grams_page *page,
				     const uint64_t *pairs, unsigned int count,
				     unsigned int *idx, const char **error_r)
{
	struct fts_lmdb_grams_page_iter iter;
	const unsigned char *list = NULL;
	size_t list_size = 0;
	unsigned int i = *idx, j;
	uint32_t old_gram = 0, new_gram;
	bool have_old, have_new;
	int ret;

	fts_lmdb_grams_page_builder_start(&w->builder, page->low);
	fts_lmdb_grams_page_iter_init(&iter, page);
	if ((ret = fts_lmdb_grams_page_next(&iter, &old_gram, &list,
					    &list_size)) < 0)
		goto damaged;
	have_old = ret > 0;
	for (;;) {
		new_gram = i < count ? pairs[i] >> 24 : 0;
		have_new = i < count && (page->last || new_gram < page->next);
		if (!have_old && !have_new)
			break;
		/* the pairs of one trigram */
		for (j = i; have_new && j < count &&
			    (pairs[j] >> 24) == new_gram; j++) ;
		buffer_set_used_size(w->list, 0);
		if (have_old && (!have_new || old_gram < new_gram)) {
			buffer_append(w->list, list, list_size);
			if (fts_lmdb_grams_writer_add(w, old_gram, error_r) < 0)
				return -1;
		} else {
			bool same = have_old && old_gram == new_gram;

			if (fts_lmdb_grams_list_merge(same ? list : NULL,
						      list_size, pairs + i,
						      j - i, &w->scratch,
						      &w->merged,
						      w->list) < 0)
				goto damaged;
			if (fts_lmdb_grams_writer_add(w, new_gram,
						      error_r) < 0)
				return -1;
			i = j;
			if (!same)
				continue;
		}
		if ((ret = fts_lmdb_grams_page_next(&iter, &old_gram, &list,
						    &list_size)) < 0)
			goto damaged;
		have_old = ret > 0;
	}
	*idx = i;
	return fts_lmdb_grams_writer_put(w, page->next, page->last, error_r);
damaged:
	return fts_lmdb_grams_damaged(w->db, "damaged trigram page",
				      error_r);
}

/* Deletes the mailbox's pages: left by a filter whose head was lost, they
   would be merged into as if they were complete. */
static int fts_lmdb_grams_clear(struct fts_lmdb_db *db, uint32_t box_id,
				buffer_t *key, const char **error_r)
{
	fts_lmdb_token_key(key, box_id, "", 0);
	return fts_lmdb_db_del_prefix(db, FTS_LMDB_DBI_GRAMS, key->data,
				      key->used, error_r);
}

int fts_lmdb_grams_write(struct fts_lmdb_grams *grams,
			 struct fts_lmdb_db *db, uint32_t box_id,
			 const char **error_r)
{
	struct fts_lmdb_grams_writer w;
	struct fts_lmdb_grams_page page;
	const uint64_t *pairs;
	const void *data;
	unsigned int i, count;
	const unsigned char head = 1;
	int ret;

	if (array_count(&grams->group) > 0)
		fts_lmdb_grams_flush_group(grams);

	i_zero(&w);
	w.db = db;
	w.box_id = box_id;
	w.key = t_buffer_create(16);
	w.old = t_buffer_create(FTS_LMDB_GRAMS_PAGE_MAX + 16);
	fts_lmdb_grams_page_builder_init(&w.builder);
	w.list = t_buffer_create(256);
	w.value = t_buffer_create(FTS_LMDB_GRAMS_PAGE_MAX + 16);
	t_array_init(&w.scratch, 64);
	t_array_init(&w.merged, 64);

	fts_lmdb_grams_unique(&grams->pairs);
	pairs = array_get(&grams->pairs, &count);

	ret = fts_lmdb_grams_head(db, box_id, w.key, error_r);
	if (ret < 0)
		return -1;
	if (ret == 0) {
		if (fts_lmdb_grams_clear(db, box_id, w.key, error_r) < 0)
			return -1;
		fts_lmdb_token_key(w.key, box_id, "", 0);
		if (fts_lmdb_db_put(db, FTS_LMDB_DBI_GRAMS, w.key->data,
				    w.key->used, &head, 1, error_r) < 0)
			return -1;
		/* one page, the first, to merge into */
		i_zero(&page);
		page.last = TRUE;
		i = 0;
		ret = fts_lmdb_grams_page_merge(&w, &page, pairs, count, &i,
						error_r);
		array_clear(&grams->pairs);
		return ret;
	}
	for (i = 0; i < count; ) {
		if (fts_lmdb_grams_page_floor(db, box_id, pairs[i] >> 24,
					      w.key, &page, error_r) < 0)
			return -1;
		/* the writes move what the map holds */
		buffer_set_used_size(w.old, 0);
		buffer_append(w.old, page.p, page.end - page.p);
		data = w.old->data;
		page.p = data;
		page.end = page.p + w.old->used;
		if (fts_lmdb_grams_page_merge(&w, &page, pairs, count, &i,
					      error_r) < 0)
			return -1;
	}
	array_clear(&grams->pairs);
	return 0;
}

static void fts_lmdb_prefixes_intersect(ARRAY_TYPE(fts_lmdb_prefix) *dest,
					const ARRAY_TYPE(fts_lmdb_prefix) *with)
{
	uint32_t *a;
	const uint32_t *b;
	unsigned int i = 0, j = 0, n = 0, a_count, b_count;

	a = array_get_modifiable(dest, &a_count);
	b = array_get(with, &b_count);
	while (i < a_count && j < b_count) {
		if (a[i] < b[j])
			i++;
		else if (a[i] > b[j])
			j++;
		else {
			a[n++] = a[i];
			i++;
			j++;
		}
	}
	array_delete(dest, n, a_count - n);
}

int fts_lmdb_grams_find(struct fts_lmdb_db *db, uint32_t box_id,
			const unsigned char *q, size_t q_size,
			ARRAY_TYPE(fts_lmdb_prefix) *prefixes_r,
			const char **error_r)
{
	ARRAY_TYPE(fts_lmdb_prefix) list;
	struct fts_lmdb_grams_page page;
	struct fts_lmdb_grams_page_iter iter;
	buffer_t *key;
	const unsigned char *list_data;
	size_t i, k, list_size;
	uint32_t gram, found;
	bool first = TRUE;
	int ret;

	if (q_size < 3)
		return 0;
	array_clear(prefixes_r);
	key = t_buffer_create(16);
	/* without a head the mailbox has no filter (too small, or it was
	   lost): every block is scanned */
	if ((ret = fts_lmdb_grams_head(db, box_id, key, error_r)) <= 0)
		return ret;
	t_array_init(&list, 64);
	for (i = 0; i + 3 <= q_size; i++) {
		gram = fts_lmdb_gram_at(q + i);
		for (k = 0; k < i; k++) {
			if (fts_lmdb_gram_at(q + k) == gram)
				break;
		}
		if (k < i)
			continue;
		if (fts_lmdb_grams_page_floor(db, box_id, gram, key, &page,
					      error_r) < 0)
			return -1;
		fts_lmdb_grams_page_iter_init(&iter, &page);
		while ((ret = fts_lmdb_grams_page_next(&iter, &found,
						       &list_data,
						       &list_size)) > 0 &&
		       found < gram) ;
		if (ret < 0) {
			return fts_lmdb_grams_damaged(db,
				"damaged trigram page", error_r);
		}
		if (ret == 0 || found != gram) {
			/* no token holds the trigram */
			array_clear(prefixes_r);
			return 1;
		}
		if (fts_lmdb_grams_list_decode(list_data, list_size,
					       first ? prefixes_r : &list) < 0) {
			return fts_lmdb_grams_damaged(db,
				"damaged trigram list", error_r);
		}
		if (!first)
			fts_lmdb_prefixes_intersect(prefixes_r, &list);
		first = FALSE;
		if (array_count(prefixes_r) == 0)
			return 1;
	}
	return 1;
}
