/* A page of the trigram filter:

     1 if another page follows, then its key's 3 bytes; else 0
     per trigram, ascending:
       numpack(its distance from the trigram before, or from the page's
       key for the first)
       numpack(size of its list)
       the list: the prefixes of the tokens that hold the trigram,
       ascending, numpacked, each after the first as its distance from
       the one before */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "numpack.h"
#include "fts-lmdb-postings.h"
#include "fts-lmdb-grams-page.h"

int fts_lmdb_grams_page_parse(const unsigned char *low,
			      const void *data, size_t size,
			      struct fts_lmdb_grams_page *page_r)
{
	const unsigned char *p = data, *end = p + size;

	i_zero(page_r);
	page_r->low = fts_lmdb_gram_at(low);
	if (size < 1)
		return -1;
	if (*p == 0) {
		page_r->last = TRUE;
		p++;
	} else if (*p == 1 && size >= 4) {
		page_r->next = fts_lmdb_gram_at(p + 1);
		p += 4;
		/* a page's range is not empty */
		if (page_r->next <= page_r->low)
			return -1;
	} else {
		return -1;
	}
	page_r->p = p;
	page_r->end = end;
	return 0;
}

void fts_lmdb_grams_page_iter_init(struct fts_lmdb_grams_page_iter *iter,
				   const struct fts_lmdb_grams_page *page)
{
	i_zero(iter);
	iter->page = page;
	iter->p = page->p;
	iter->prev = page->low;
}

int fts_lmdb_grams_page_next(struct fts_lmdb_grams_page_iter *iter,
			     uint32_t *gram_r, const unsigned char **list_r,
			     size_t *list_size_r)
{
	const struct fts_lmdb_grams_page *page = iter->page;
	uint64_t delta, size, gram;

	if (iter->p == page->end)
		return 0;
	if (numpack_decode(&iter->p, page->end, &delta) < 0 ||
	    (delta == 0 && iter->started) ||
	    numpack_decode(&iter->p, page->end, &size) < 0 || size == 0 ||
	    size > (uint64_t)(page->end - iter->p))
		return -1;
	gram = iter->prev + delta;
	if (gram > FTS_LMDB_GRAM_MAX || (!page->last && gram >= page->next))
		return -1;
	iter->started = TRUE;
	iter->prev = gram;
	*gram_r = gram;
	*list_r = iter->p;
	*list_size_r = size;
	iter->p += size;
	return 1;
}

int fts_lmdb_grams_list_decode(const unsigned char *p, size_t size,
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

int fts_lmdb_grams_list_merge(const unsigned char *old, size_t old_size,
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

void fts_lmdb_grams_page_builder_init(struct fts_lmdb_grams_page_builder *b)
{
	i_zero(b);
	b->entries = t_buffer_create(FTS_LMDB_GRAMS_PAGE_MAX + 16);
}

void fts_lmdb_grams_page_builder_start(struct fts_lmdb_grams_page_builder *b,
				       uint32_t low)
{
	b->low = b->prev = low;
	b->count = 0;
	buffer_set_used_size(b->entries, 0);
}

bool fts_lmdb_grams_page_builder_fits(struct fts_lmdb_grams_page_builder *b,
				      uint32_t gram, size_t list_size)
{
	size_t size = fts_lmdb_numpack_size(gram - b->prev) +
		fts_lmdb_numpack_size(list_size) + list_size;

	return b->count == 0 ||
		b->entries->used + size <= FTS_LMDB_GRAMS_PAGE_MAX;
}

void fts_lmdb_grams_page_builder_add(struct fts_lmdb_grams_page_builder *b,
				     uint32_t gram, const void *list,
				     size_t list_size)
{
	numpack_encode(b->entries, gram - b->prev);
	numpack_encode(b->entries, list_size);
	buffer_append(b->entries, list, list_size);
	b->prev = gram;
	b->count++;
}

void fts_lmdb_grams_page_builder_finish(struct fts_lmdb_grams_page_builder *b,
					uint32_t next, bool last,
					buffer_t *value)
{
	buffer_set_used_size(value, 0);
	if (last)
		buffer_append_c(value, 0);
	else {
		buffer_append_c(value, 1);
		buffer_append_c(value, next >> 16);
		buffer_append_c(value, (next >> 8) & 0xff);
		buffer_append_c(value, next & 0xff);
	}
	buffer_append_buf(value, b->entries, 0, SIZE_MAX);
}
