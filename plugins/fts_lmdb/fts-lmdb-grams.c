/* The trigram filter's keys, per mailbox (the box id numpacked, as in
   every key):

     box id               the directory: which buckets exist, a bit per
                          bucket (8 KB)
     box id + 2 bytes     the bucket of the trigrams that begin with them

   A bucket, by trigram ascending:
     the trigram's third byte
     numpack(size of its list)
     the list: the prefixes of the tokens that hold the trigram,
     ascending, numpacked, each after the first as its distance from the
     one before

   Two-byte buckets keep a lookup to a page or two: a mailbox has a few
   thousand of them, and a trigram's list is found by a key. Every read
   checks what it relies on; damage is reported, never answered from. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "numpack.h"
#include "sort.h"
#include "fts-lmdb-db.h"
#include "fts-lmdb-backend.h"
#include "fts-lmdb-grams.h"

#define FTS_LMDB_GRAMS_BUCKETS 65536
#define FTS_LMDB_GRAMS_DIRECTORY_SIZE (FTS_LMDB_GRAMS_BUCKETS / 8)
#define FTS_LMDB_PREFIX_MAX 0xffffff

struct fts_lmdb_grams {
	/* trigram << 24 | prefix */
	ARRAY_TYPE(uint64_t) pairs;
	/* the trigrams of the tokens of group_prefix */
	ARRAY(uint32_t) group;
	uint32_t group_prefix;
};

static uint32_t fts_lmdb_gram_at(const unsigned char *p)
{
	return ((uint32_t)p[0] << 16) | ((uint32_t)p[1] << 8) | p[2];
}

static int fts_lmdb_grams_damaged(struct fts_lmdb_db *db, const char *what,
				  const char **error_r)
{
	fts_lmdb_db_set_corrupted(db);
	*error_r = what;
	return -1;
}

static bool fts_lmdb_grams_dir_has(const unsigned char *dir, unsigned int b)
{
	return (dir[b / 8] & (1U << (b % 8))) != 0;
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

static int fts_lmdb_grams_list_decode(const unsigned char *p, size_t size,
				      ARRAY_TYPE(fts_lmdb_prefix) *dest)
{
	const unsigned char *end = p + size;
	uint64_t v, prev = 0;
	uint32_t prefix;

	array_clear(dest);
	if (size == 0)
		return -1;
	while (p < end) {
		if (numpack_decode(&p, end, &v) < 0)
			return -1;
		if (array_count(dest) > 0) {
			if (v == 0)
				return -1;
			v += prev;
		}
		if (v > FTS_LMDB_PREFIX_MAX)
			return -1;
		prefix = v;
		array_push_back(dest, &prefix);
		prev = v;
	}
	return 0;
}

static void fts_lmdb_grams_list_encode(buffer_t *dest, const uint32_t *prefixes,
				       unsigned int count)
{
	unsigned int i;

	for (i = 0; i < count; i++) {
		numpack_encode(dest, i == 0 ? prefixes[0] :
			       prefixes[i] - prefixes[i - 1]);
	}
}

/* The next entry of a bucket: 1 if found, 0 at the end, -1 if the bucket
   doesn't add up. */
static int fts_lmdb_grams_bucket_next(const unsigned char **p,
				      const unsigned char *end, int *last,
				      unsigned int *byte_r,
				      const unsigned char **list_r,
				      size_t *list_size_r)
{
	uint64_t size;

	if (*p == end)
		return 0;
	*byte_r = **p;
	(*p)++;
	if ((int)*byte_r <= *last ||
	    numpack_decode(p, end, &size) < 0 || size == 0 ||
	    size > (uint64_t)(end - *p))
		return -1;
	*last = *byte_r;
	*list_r = *p;
	*list_size_r = size;
	*p += size;
	return 1;
}

/* Merges new (the prefixes of pairs, which all have one trigram) into the
   list at old, into dest. */
static int fts_lmdb_grams_list_merge(const unsigned char *old, size_t old_size,
				     const uint64_t *pairs, unsigned int count,
				     ARRAY_TYPE(fts_lmdb_prefix) *scratch,
				     ARRAY_TYPE(fts_lmdb_prefix) *merged,
				     buffer_t *dest)
{
	const uint32_t *a = NULL;
	unsigned int i = 0, j = 0, a_count;
	uint32_t next;

	array_clear(merged);
	if (old == NULL)
		a_count = 0;
	else {
		if (fts_lmdb_grams_list_decode(old, old_size, scratch) < 0)
			return -1;
		a = array_get(scratch, &a_count);
	}
	while (i < a_count || j < count) {
		if (j == count ||
		    (i < a_count && a[i] < (pairs[j] & FTS_LMDB_PREFIX_MAX)))
			next = a[i++];
		else {
			next = pairs[j++] & FTS_LMDB_PREFIX_MAX;
			if (i < a_count && a[i] == next)
				i++;
		}
		array_push_back(merged, &next);
	}
	a = array_get(merged, &a_count);
	fts_lmdb_grams_list_encode(dest, a, a_count);
	return 0;
}

struct fts_lmdb_grams_writer {
	struct fts_lmdb_db *db;
	buffer_t *key, *old, *bucket, *list;
	ARRAY_TYPE(fts_lmdb_prefix) scratch, merged;
};

static int
fts_lmdb_grams_write_entry(struct fts_lmdb_grams_writer *w, unsigned int byte,
			   const unsigned char *old, size_t old_size,
			   const uint64_t *pairs, unsigned int count)
{
	buffer_set_used_size(w->list, 0);
	if (count == 0)
		buffer_append(w->list, old, old_size);
	else if (fts_lmdb_grams_list_merge(old, old_size, pairs, count,
					   &w->scratch, &w->merged,
					   w->list) < 0)
		return -1;
	buffer_append_c(w->bucket, byte);
	numpack_encode(w->bucket, w->list->used);
	buffer_append_buf(w->bucket, w->list, 0, SIZE_MAX);
	return 0;
}

/* The bucket of the two bytes, which the directory names: a missing
   one is damage. */
static int fts_lmdb_grams_bucket_get(struct fts_lmdb_db *db, uint32_t box_id,
				     const unsigned char *bytes, buffer_t *key,
				     const void **data_r, size_t *size_r,
				     const char **error_r)
{
	int ret;

	fts_lmdb_token_key(key, box_id, bytes, 2);
	ret = fts_lmdb_db_get(db, FTS_LMDB_DBI_GRAMS, key->data, key->used,
			      data_r, size_r, error_r);
	if (ret < 0)
		return -1;
	if (ret == 0) {
		return fts_lmdb_grams_damaged(db,
			"a trigram bucket is missing", error_r);
	}
	return 0;
}

/* Rewrites the bucket with the pairs (all of that bucket, ascending). */
static int fts_lmdb_grams_write_bucket(struct fts_lmdb_grams_writer *w,
				       uint32_t box_id, unsigned int b,
				       bool existed, const uint64_t *pairs,
				       unsigned int count, const char **error_r)
{
	const unsigned char *p, *end, *list = NULL;
	const void *data;
	unsigned char bytes[2] = { b >> 8, b & 0xff };
	unsigned int i = 0, j, byte = 0, new_byte;
	size_t size, list_size = 0;
	int ret, last = -1;
	bool have_old;

	fts_lmdb_token_key(w->key, box_id, bytes, sizeof(bytes));
	buffer_set_used_size(w->old, 0);
	if (existed) {
		if (fts_lmdb_grams_bucket_get(w->db, box_id, bytes, w->key,
					      &data, &size, error_r) < 0)
			return -1;
		/* the writes move what the map holds */
		buffer_append(w->old, data, size);
	}
	p = w->old->data;
	end = p + w->old->used;
	buffer_set_used_size(w->bucket, 0);
	if ((ret = fts_lmdb_grams_bucket_next(&p, end, &last, &byte, &list,
					      &list_size)) < 0)
		goto damaged;
	have_old = ret > 0;
	while (have_old || i < count) {
		new_byte = i < count ? (pairs[i] >> 24) & 0xff : 256;
		for (j = i; j < count && ((pairs[j] >> 24) & 0xff) == new_byte; j++) ;
		if (have_old && byte < new_byte) {
			if (fts_lmdb_grams_write_entry(w, byte, list, list_size,
						       NULL, 0) < 0)
				goto damaged;
		} else if (!have_old || new_byte < byte) {
			if (fts_lmdb_grams_write_entry(w, new_byte, NULL, 0,
						       pairs + i, j - i) < 0)
				goto damaged;
			i = j;
			continue;
		} else {
			if (fts_lmdb_grams_write_entry(w, byte, list, list_size,
						       pairs + i, j - i) < 0)
				goto damaged;
			i = j;
		}
		if ((ret = fts_lmdb_grams_bucket_next(&p, end, &last, &byte,
						      &list, &list_size)) < 0)
			goto damaged;
		have_old = ret > 0;
	}
	return fts_lmdb_db_put(w->db, FTS_LMDB_DBI_GRAMS, w->key->data,
			       w->key->used, w->bucket->data, w->bucket->used,
			       error_r);
damaged:
	return fts_lmdb_grams_damaged(w->db, "damaged trigram bucket",
				      error_r);
}

/* 1 with the directory, 0 if the mailbox has none, -1 on error or
   damage */
static int fts_lmdb_grams_directory(struct fts_lmdb_db *db, uint32_t box_id,
				    buffer_t *key, const void **dir_r,
				    const char **error_r)
{
	size_t size;
	int ret;

	fts_lmdb_token_key(key, box_id, "", 0);
	ret = fts_lmdb_db_get(db, FTS_LMDB_DBI_GRAMS, key->data, key->used,
			      dir_r, &size, error_r);
	if (ret <= 0)
		return ret;
	if (size != FTS_LMDB_GRAMS_DIRECTORY_SIZE) {
		return fts_lmdb_grams_damaged(db,
			"damaged trigram directory", error_r);
	}
	return 1;
}

int fts_lmdb_grams_exist(struct fts_lmdb_db *db, uint32_t box_id,
			 const char **error_r)
{
	const void *dir;

	return fts_lmdb_grams_directory(db, box_id, t_buffer_create(16), &dir,
					error_r);
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

int fts_lmdb_grams_write(struct fts_lmdb_grams *grams,
			 struct fts_lmdb_db *db, uint32_t box_id,
			 const char **error_r)
{
	struct fts_lmdb_grams_writer w;
	unsigned char *dir;
	const uint64_t *pairs;
	const void *data;
	unsigned int i, j, count, b;
	bool dir_changed = FALSE;
	int ret;

	if (array_count(&grams->group) > 0)
		fts_lmdb_grams_flush_group(grams);

	i_zero(&w);
	w.db = db;
	w.key = t_buffer_create(16);
	w.old = t_buffer_create(1024);
	w.bucket = t_buffer_create(1024);
	w.list = t_buffer_create(256);
	t_array_init(&w.scratch, 64);
	t_array_init(&w.merged, 64);

	dir = t_malloc0(FTS_LMDB_GRAMS_DIRECTORY_SIZE);
	ret = fts_lmdb_grams_directory(db, box_id, w.key, &data, error_r);
	if (ret < 0)
		return -1;
	if (ret == 0)
		dir_changed = TRUE;
	else
		memcpy(dir, data, FTS_LMDB_GRAMS_DIRECTORY_SIZE);

	fts_lmdb_grams_unique(&grams->pairs);
	pairs = array_get(&grams->pairs, &count);
	for (i = 0; i < count; i = j) {
		/* the pairs of one bucket */
		b = pairs[i] >> 32;
		for (j = i; j < count && (pairs[j] >> 32) == b; j++) ;
		if (fts_lmdb_grams_write_bucket(&w, box_id, b,
						fts_lmdb_grams_dir_has(dir, b),
						pairs + i, j - i, error_r) < 0)
			return -1;
		if (!fts_lmdb_grams_dir_has(dir, b)) {
			dir[b / 8] |= 1U << (b % 8);
			dir_changed = TRUE;
		}
	}
	array_clear(&grams->pairs);
	if (!dir_changed)
		return 0;
	fts_lmdb_token_key(w.key, box_id, "", 0);
	return fts_lmdb_db_put(db, FTS_LMDB_DBI_GRAMS, w.key->data,
			       w.key->used, dir, FTS_LMDB_GRAMS_DIRECTORY_SIZE,
			       error_r);
}

/* The list of the trigram in the bucket: 1 if found, 0 if not there, -1
   if the bucket doesn't add up. */
static int fts_lmdb_grams_bucket_find(const unsigned char *p, size_t size,
				      unsigned int want,
				      const unsigned char **list_r,
				      size_t *list_size_r)
{
	const unsigned char *end = p + size;
	unsigned int byte;
	int ret, last = -1;

	if (size == 0)
		return -1;
	while ((ret = fts_lmdb_grams_bucket_next(&p, end, &last, &byte,
						 list_r, list_size_r)) > 0) {
		if (byte == want)
			return 1;
		if (byte > want)
			return 0;
	}
	return ret;
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
	buffer_t *key;
	const unsigned char *dir, *list_data;
	const void *data;
	size_t i, k, size, list_size;
	uint32_t gram;
	bool first = TRUE;
	int ret;

	if (q_size < 3)
		return 0;
	array_clear(prefixes_r);
	key = t_buffer_create(16);
	/* without a directory the mailbox has no filter (too small, or it
	   was lost): every block is scanned */
	if ((ret = fts_lmdb_grams_directory(db, box_id, key, &data,
					    error_r)) <= 0)
		return ret;
	dir = data;
	t_array_init(&list, 64);
	for (i = 0; i + 3 <= q_size; i++) {
		gram = fts_lmdb_gram_at(q + i);
		for (k = 0; k < i; k++) {
			if (fts_lmdb_gram_at(q + k) == gram)
				break;
		}
		if (k < i)
			continue;
		if (!fts_lmdb_grams_dir_has(dir, gram >> 8)) {
			array_clear(prefixes_r);
			return 1;
		}
		if (fts_lmdb_grams_bucket_get(db, box_id, q + i, key, &data,
					      &size, error_r) < 0)
			return -1;
		ret = fts_lmdb_grams_bucket_find(data, size, gram & 0xff,
						 &list_data, &list_size);
		if (ret < 0) {
			return fts_lmdb_grams_damaged(db,
				"damaged trigram bucket", error_r);
		}
		if (ret == 0) {
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
